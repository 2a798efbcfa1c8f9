"""End-to-end: `vitgan train` on tiny data, exact resume, `vitgan generate`, and pickle-free snapshots."""

import copy
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vitgan
from vitgan.cli import main
from vitgan.training.checkpoint import load_training_state
from vitgan.training.loss import TERMS

TINY = ["--g-dim", "32", "--g-depth", "1", "--g-heads", "2", "--g-mlp-dim", "64", "--z-dim", "16", "--w-dim", "16",
        "--mapping-layers", "1", "--g-fourier-dim", "8", "--g-inr-hidden", "8",
        "--d-dim", "32", "--d-depth", "1", "--d-heads", "2", "--d-mlp-dim", "64", "--batch", "4", "--r1-gamma", "0.1",
        "--r1-interval", "2", "--bcr-real", "2", "--bcr-fake", "2", "--precision", "fp32"]


def _train(tmp_path: Path, digits: Path, *extra: str) -> Path:
    outdir = tmp_path / "runs"
    before = set(outdir.iterdir()) if outdir.exists() else set()
    assert main(["train", "--data", str(digits), "--outdir", str(outdir), *TINY, *extra]) == 0
    (run,) = set(outdir.iterdir()) - before
    return run


def test_train_leaves_a_complete_run_folder(tmp_path, digits):
    run = _train(tmp_path, digits, "--kimg", "0.024", "--tick", "0.008", "--snap", "2")
    assert run.name == f"00000-mnist-{digits.name}"
    for name in ("training_options.json", "log.txt", "stats.jsonl", "losses.png", "reals.png"):
        assert (run / name).is_file(), name
    options = json.loads((run / "training_options.json").read_text())
    assert options["config"]["batch"] == 4 and options["run"]["data"] == str(digits)
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [r["tick"] for r in rows] == [1, 2, 3] and rows[-1]["kimg"] == pytest.approx(0.024)
    for key in (*TERMS, "sec_per_kimg", "img_per_sec", "g_z_std"):
        assert all(np.isfinite(r[key]) for r in rows), key
    assert all(r["bcr_real"] > 0 and r["bcr_fake"] > 0 for r in rows)  # the consistency terms are active here
    # the per-tick work (grids, plots, ...) of the previous tick's end: real, and inside the time between rows
    times = [0.0] + [r["time"] for r in rows]  # (the start's grid comes before the first row)
    assert all(0 < r["maintenance_s"] <= t1 - t0 for r, t0, t1 in zip(rows, times[:-1], times[1:], strict=True))
    assert len(list(run.glob("fakes-*.png"))) == 4  # the start and one per tick
    snapshots = sorted(run.glob("network-snapshot-*.safetensors"))
    assert [s.name for s in snapshots] == ["network-snapshot-000000016.safetensors",
                                           "network-snapshot-000000024.safetensors"]
    log = (run / "log.txt").read_text()
    assert "sec/kimg" in log and "ETA" in log
    generator = vitgan.load(snapshots[-1])
    assert generator(torch.randn(2, generator.z_dim)).shape == (2, 1, 32, 32)


def test_the_status_line_rate_is_the_ticks(tmp_path, digits, monkeypatch):
    """The status line's img/s is its tick's, 1000 / sec_per_kimg, as the sec/kimg beside it: a slow first step (a
    compiling one) slows the first tick only. stats.jsonl's img_per_sec stays the run's mean since it started."""
    from vitgan.training.trainer import Trainer

    step, calls = Trainer.run_step, []

    def slow_first(self):
        if not calls:
            time.sleep(1.0)
        calls.append(1)
        return step(self)

    monkeypatch.setattr(Trainer, "run_step", slow_first)
    run = _train(tmp_path, digits, "--kimg", "0.024", "--tick", "0.008")
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    shown = {int(m[1]): m[2] for m in re.finditer(r"^tick (\d+) .*? img/s (\S+)", (run / "log.txt").read_text(),
                                                  re.MULTILINE)}
    assert sorted(shown) == [r["tick"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert shown[row["tick"]] == f"{1000 / row['sec_per_kimg']:.1f}"
    last = rows[-1]
    assert last["img_per_sec"] == pytest.approx(24 / last["time"], rel=1e-3)  # the run's mean, the slow step in it
    assert f"{last['img_per_sec']:.1f}" != shown[3]  # (the line showed this mean before)

@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_resume_is_exact(tmp_path, digits, precision):
    """4 steps, and 2 + 2 steps resumed from a training state, end bit-identical; with fp16, the gradient scalers
    too (their scale and growth count are in the training state)."""
    straight = _train(tmp_path, digits, "--kimg", "0.016", "--tick", "1", "--precision", precision)  # 4 steps
    half = _train(tmp_path, digits, "--kimg", "0.008", "--tick", "1", "--precision", precision)  # 2 steps
    resumed = _train(tmp_path, digits, "--kimg", "0.016", "--tick", "1", "--resume", str(half),
                     "--precision", precision)  # + 2 steps
    assert resumed.name.split("-")[1] == "mnist"  # the resumed run keeps the checkpoint's preset name
    a = load_training_state(next(straight.glob("training-state-*.pt")))
    b = load_training_state(next(resumed.glob("training-state-*.pt")))
    assert a["cur_nimg"] == b["cur_nimg"] == 16 and b["preset"] == "mnist"
    for key in ("G", "D", "G_ema"):
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), f"{key}.{name}"
    for key in ("opt_g", "opt_d"):
        for index, state in a[key]["state"].items():
            for name, value in state.items():
                assert torch.equal(value, b[key]["state"][index][name]), f"{key}[{index}].{name}"
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert a["scaler_g"] == b["scaler_g"] and a["scaler_d"] == b["scaler_d"]
    if precision == "fp16":
        assert json.loads((straight / "training_options.json").read_text())["precision"] == "fp16"
        assert a["scaler_d"]["scale"] > 0 and a["scaler_g"]["_growth_tracker"] > 0  # G's scaler grew for 4 steps
        for row in (json.loads(line) for line in (straight / "stats.jsonl").read_text().splitlines()):
            assert all(np.isfinite(row[key]) for key in TERMS)
    else:
        assert a["scaler_g"] == a["scaler_d"] == {}  # no scaler without fp16


def test_resume_refuses_an_architecture_change(tmp_path, digits, capsys):
    run = _train(tmp_path, digits, "--kimg", "0.004", "--tick", "1")
    code = main(["train", "--data", str(digits), "--outdir", str(tmp_path / "runs"), "--resume", str(run),
                 "--g-depth", "2"])
    assert code == 2
    said, error = capsys.readouterr().err.strip().splitlines()  # which state was chosen, then the one-line error
    assert said.startswith("vitgan: resuming from ") and said.endswith("(sha256 verified)")
    assert error.startswith("vitgan: error: --g-depth: cannot change when resuming")


def test_generate_same_image_for_a_seed_whatever_the_batch(tmp_path, digits):
    run = _train(tmp_path, digits, "--kimg", "0.008", "--tick", "1")
    snapshot = str(next(run.glob("network-snapshot-*.safetensors")))
    assert main(["generate", "--ckpt", snapshot, "--seeds", "0-5", "--batch", "4", "--outdir", str(tmp_path / "a"),
                 "--interpolate", "--steps", "3"]) == 0
    assert main(["generate", "--ckpt", snapshot, "--seeds", "3,5", "--batch", "1",
                 "--outdir", str(tmp_path / "b")]) == 0
    for seed in (3, 5):
        a = np.asarray(Image.open(tmp_path / "a" / f"seed{seed:04d}.png"), dtype=np.int16)
        b = np.asarray(Image.open(tmp_path / "b" / f"seed{seed:04d}.png"), dtype=np.int16)
        assert np.abs(a - b).max() <= 1  # the same image; at most one level of rounding in 255
    assert (tmp_path / "a" / "grid.png").is_file()
    assert np.asarray(Image.open(tmp_path / "a" / "interpolation.png")).shape == (2 + 5 * 34, 2 + 3 * 34)
    assert main(["generate", "--ckpt", snapshot, "--seeds", "0", "--trunc", "0.5", "--outdir",
                 str(tmp_path / "c")]) == 0


@pytest.mark.parametrize("trunc", ["nan", "inf", "-inf"])
def test_generate_refuses_a_non_finite_truncation(tmp_path, capsys, trunc):
    """NaN or inf as psi turns every image to NaN, which PNGs hold as black: refused, in one line, nothing written."""
    from vitgan import presets
    from vitgan.config import ConfigError
    from vitgan.networks import Generator
    from vitgan.sampling import write_images
    from vitgan.training.checkpoint import save_snapshot

    cfg = presets.get("mnist", g_dim=32, g_depth=1, g_heads=2, g_mlp_dim=64, z_dim=16, w_dim=16, mapping_layers=1)
    snapshot = tmp_path / "network-snapshot-000000004.safetensors"
    save_snapshot(snapshot, cfg, {"G_ema": Generator(cfg)}, {"cur_nimg": 4, "tick": 1})
    out = tmp_path / "out"
    assert main(["generate", "--ckpt", str(snapshot), "--seeds", "0-1", f"--trunc={trunc}", "--outdir",
                 str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"vitgan: error: --trunc: must be a finite number (1 = no truncation), got {float(trunc)}\n"
    assert not out.exists()
    with pytest.raises(ConfigError, match=r"^psi: the truncation must be a finite number"):  # the Python API
        write_images(vitgan.load(snapshot), [0, 1], out, psi=float(trunc))
    assert not out.exists()


def test_resume_of_a_finished_run_says_it_is_complete_and_starts_nothing(tmp_path, digits, capsys):
    outdir = tmp_path / "runs"
    run = _train(tmp_path, digits, "--kimg", "0.008", "--tick", "1")  # 2 steps, to the end
    (state,) = run.glob("training-state-*.pt")
    capsys.readouterr()
    for spec in (str(run), str(state), "auto"):
        assert main(["train", "--data", str(digits), "--outdir", str(outdir), *TINY, "--resume", spec]) == 0
        said = capsys.readouterr().err.strip().splitlines()[-1]
        assert said == (f"vitgan: the run is complete: {state} is at 0.008 kimg, its --kimg is 0.008; nothing to train "
                        "(to train it further, resume with a larger --kimg, e.g. --kimg 0.016)"), said
        assert list(outdir.iterdir()) == [run]  # no new run folder
    fewer = tmp_path / "fewer"  # a larger --kimg resumes as before: here onto other data, refused naming --resume
    fewer.mkdir()
    for image in sorted(digits.iterdir())[:8]:
        (fewer / image.name).write_bytes(image.read_bytes())
    assert main(["train", "--data", str(fewer), "--outdir", str(outdir), *TINY, "--resume", str(run),
                 "--kimg", "0.016"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "vitgan: error: --resume: the checkpoint's data had 12 images, this data has 8")
    resumed = _train(tmp_path, digits, "--resume", str(run), "--kimg", "0.016", "--tick", "1")
    assert load_training_state(next(resumed.glob("training-state-*.pt")))["cur_nimg"] == 16


def test_load_reads_a_snapshot_without_pickle(tmp_path, digits, monkeypatch):
    run = _train(tmp_path, digits, "--kimg", "0.004", "--tick", "1")
    snapshot = next(run.glob("network-snapshot-*.safetensors"))
    header_length = int.from_bytes(snapshot.read_bytes()[:8], "little")  # safetensors: u64 length + JSON header
    header = json.loads(snapshot.read_bytes()[8:8 + header_length])
    assert header["__metadata__"]["format"] == "vitgan-snapshot-v1"
    assert json.loads(header["__metadata__"]["config"])["g_dim"] == 32

    def no_pickle(*args, **kwargs):
        raise AssertionError("vitgan.load must not unpickle")

    monkeypatch.setattr(torch, "load", no_pickle)
    generator = vitgan.load(snapshot)
    discriminator = vitgan.load(snapshot, network="D")
    assert discriminator(generator(torch.randn(3, 16))).shape == (3,)


def test_bad_snapshot_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a snapshot")
    assert main(["generate", "--ckpt", str(bad), "--outdir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"vitgan: error: {bad}:") and "\n" not in err


def test_dry_run_prints_options(capsys):
    assert main(["train", "--dry-run", "--kimg", "3", "--d-attention", "dot"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["config"]["kimg"] == 3.0 and printed["config"]["d_attention"] == "dot"
    assert printed["run"]["preset"] == "mnist" and printed["run"]["data"] == "mnist"


def test_default_data_reports_digit_fid_per_tick(tmp_path):
    assert main(["train", "--outdir", str(tmp_path), *TINY, "--kimg", "0.008", "--tick", "1"]) == 0
    (run,) = tmp_path.iterdir()
    row = json.loads((run / "stats.jsonl").read_text().splitlines()[-1])
    assert row["digit_fid"] > 0 and 0 <= row["classes"] <= 10 and 0 <= row["confident"] <= 1
    assert "digit_fid" in (run / "log.txt").read_text()


def test_stacked_mnist_reports_modes_and_the_channels_digit_fid_per_tick(tmp_path, monkeypatch, capsys):
    from vitgan.training import loop

    monkeypatch.setattr(loop, "MODE_SEEDS", range(2_000_000, 2_000_100))  # 100 samples, not 5,000: a quick tick
    # --preset stacked-mnist trains on stacked-mnist unless --data says otherwise
    assert main(["train", "--preset", "stacked-mnist", "--outdir", str(tmp_path), *TINY, "--kimg", "0.008",
                 "--tick", "1"]) == 0
    (run,) = tmp_path.iterdir()
    assert run.name == "00000-stacked-mnist-stacked_mnist"
    row = json.loads((run / "stats.jsonl").read_text().splitlines()[-1])
    assert 1 <= row["modes"] <= 100 and row["modes_kl"] >= 0 and 0 < row["confidence"] <= 1
    assert row["digit_fid"] > 0 and 0 <= row["classes"] <= 10  # every channel of the samples as a digit
    status = [line for line in (run / "log.txt").read_text().splitlines() if line.startswith("tick")][-1]
    assert f"classes {row['classes']}  modes {row['modes']}  modes_kl {row['modes_kl']:.3f}" in status
    capsys.readouterr()
    # the mnist preset's 1-channel networks on 3-channel stacks: the data's one-line error
    assert main(["train", "--data", "stacked-mnist", "--outdir", str(tmp_path), *TINY, "--kimg", "0.008"]) == 2
    assert capsys.readouterr().err == ("vitgan: error: stacked-mnist: images are 3x32x32 (CxHxW) but the config "
                                       "expects 1x32x32\n")


def test_train_on_a_prepared_zip_with_mirror(tmp_path, digits):
    from vitgan.data.prepare import prepare

    archive = prepare(digits, tmp_path / "digits.zip", channels=1, progress=False).path
    run = _train(tmp_path, archive, "--kimg", "0.004", "--tick", "1", "--mirror")
    options = json.loads((run / "training_options.json").read_text())
    assert run.name == "00000-mnist-digits" and options["num_images"] == 12 and options["run"]["mirror"] is True
    assert options["run"]["data"] == str(archive)


def _tiny_trainer(compile: bool = False, amp: torch.dtype | None = None, compile_mode: str = "default", **overrides):
    from vitgan.data.dataset import ImageData
    from vitgan.training.trainer import Trainer

    cfg = vitgan.presets.get("mnist", g_dim=32, g_depth=1, g_heads=2, g_mlp_dim=64, z_dim=16, w_dim=16,
                             mapping_layers=1, g_fourier_dim=8, g_inr_hidden=8, d_dim=32, d_depth=1, d_heads=2,
                             d_mlp_dim=64, batch=4, **overrides)
    images = torch.randint(0, 256, (8, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    data = ImageData(images, torch.full((8,), -1), "tiny")
    return Trainer(cfg, data, torch.device("cpu"), amp, compile=compile, compile_mode=compile_mode)


def test_bcr_diffaug_mode_is_an_independent_augmentation_of_the_plain_images():
    """bcr_mode=diffaug: T(x) is a second DiffAugment draw of the un-augmented x (it ignores D's augmented input);
    bcr_mode=shift: T translates D's augmented input by at most bcr_shift of the image."""
    from vitgan.training.augment import diff_augment

    trainer = _tiny_trainer(bcr_mode="diffaug", augment="translation,cutout:0.5", augment_p=1.0)
    plain, augmented = torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32)
    state = trainer.rng.get_state()
    t = trainer.loss.bcr_transform(plain, augmented)
    trainer.rng.set_state(state)
    torch.testing.assert_close(t, diff_augment(plain, "translation,cutout:0.5", 1.0, trainer._draws()))
    assert not torch.equal(t, trainer.loss.bcr_transform(plain, augmented))  # a fresh draw each time

    trainer = _tiny_trainer(bcr_mode="shift", bcr_shift=0.125)
    ones = torch.ones(4, 1, 32, 32)
    t = trainer.loss.bcr_transform(torch.zeros_like(ones), ones)
    moved = (t == 0).float()  # the zero-filled band: at most 4 rows/columns on each side, from the augmented input
    assert moved.sum() > 0 and (t == 1).any()
    assert moved[..., 4:28, 4:28].sum() == 0


def test_learning_rate_warms_up_linearly_in_images():
    """lr(step) = lr x min(1, images after the step / (lr_warmup_kimg x 1000)); Adam is given that rate."""
    from vitgan.training.trainer import lr_warmup

    cfg = vitgan.presets.get("mnist", batch=16, lr_warmup_kimg=0.064)  # 4 steps of 16 images
    assert [lr_warmup(cfg, n) for n in (0, 16, 32, 48, 64, 1000)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_warmup(cfg.replace(lr_warmup_kimg=0.0), 0) == 1.0
    trainer = _tiny_trainer(lr_warmup_kimg=0.016, g_lr=1e-3, d_lr=2e-3)  # 4 steps of 4 images
    seen = []
    for _ in range(5):
        trainer.step()
        seen.append((trainer.opt_g.param_groups[0]["lr"], trainer.opt_d.param_groups[0]["lr"]))
    torch.testing.assert_close(seen, [(2.5e-4, 5e-4), (5e-4, 1e-3), (7.5e-4, 1.5e-3), (1e-3, 2e-3), (1e-3, 2e-3)])


def test_a_compiled_trainer_is_built():
    """--compile wraps G and D in torch.compile'd modules (compiled lazily, on the first call); the Trainer and its
    loss must accept them (a compiled module has no truth value)."""
    trainer = _tiny_trainer(compile=True)
    assert trainer.loss.G_run is trainer.G_run and trainer.loss.D_run is trainer.D_run
    assert trainer.loss.R1_run is trainer.R1_run
    assert trainer.G_run is not trainer.G


def test_compile_mode_reaches_torch_compile_and_cuda_graphs_need_cuda(monkeypatch):
    """--compile-mode M compiles G and D with torch.compile(mode=M) (default: torch's own default, no mode given);
    R1's penalty keeps the default mode. reduce-overhead (CUDA graphs) on a CPU is refused in one line."""
    from vitgan.config import ConfigError

    modes = []
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None: modes.append(mode) or fn)
    _tiny_trainer(compile=True)
    assert modes == [None, None, None]
    modes.clear()
    trainer = _tiny_trainer(compile=True, compile_mode="max-autotune-no-cudagraphs")
    assert modes == ["max-autotune-no-cudagraphs", "max-autotune-no-cudagraphs", None] and not trainer.cudagraphs
    with pytest.raises(ConfigError, match="^compile_mode: reduce-overhead replays CUDA graphs and needs a CUDA "
                                          "device, not cpu$"):
        _tiny_trainer(compile=True, compile_mode="reduce-overhead")


def test_several_d_steps_per_g_step_each_see_their_own_reals():
    """d_steps_per_g=2: one training step is two D optimiser steps on two fresh batches and one G step; kimg counts
    the reals D saw (2 x batch per step), and the EMA half-life is in those images (beta = 0.5^(2 batch / h))."""
    from vitgan.training.trainer import ema_beta

    trainer = _tiny_trainer(d_steps_per_g=2, ema_rampup=0.0, ema_kimg=0.1)
    trainer.step()
    d_state = trainer.opt_d.state[next(iter(trainer.D.parameters()))]
    g_state = trainer.opt_g.state[next(iter(trainer.G.parameters()))]
    assert (float(d_state["step"]), float(g_state["step"])) == (2.0, 1.0)
    assert (trainer.cur_nimg, trainer.d_steps, trainer.position) == (8, 2, 8)  # two batches of 4 reals drawn
    assert ema_beta(trainer.cfg, trainer.cur_nimg) == 0.5 ** (8 / 100)


def test_gradient_clipping_bounds_the_step_and_logs_the_norm_before_it():
    """grad_clip=c: the gradient Adam receives is g x min(1, c / (||g|| + 1e-6)) over all of a network's parameters
    (torch's clip_grad_norm_); grad_d/grad_g report ||g|| before clipping."""
    trainer = _tiny_trainer(grad_clip=1e-3)
    seen = {}

    def capture(opt, name):
        step = opt.step

        def wrapped(*args, **kwargs):
            seen[name] = [p.grad.clone() for p in opt.param_groups[0]["params"] if p.grad is not None]
            return step(*args, **kwargs)
        opt.step = wrapped

    capture(trainer.opt_d, "d")
    capture(trainer.opt_g, "g")
    stats = trainer.step()
    for name in ("d", "g"):
        clipped = torch.linalg.vector_norm(torch.cat([g.flatten() for g in seen[name]]))
        assert stats[f"grad_{name}"] > 1e-2  # well above the bound, so clipping acted
        torch.testing.assert_close(float(clipped), 1e-3 * stats[f"grad_{name}"] / (stats[f"grad_{name}"] + 1e-6),
                                   rtol=1e-4, atol=0)


def test_ada_moves_the_probability_by_its_rule():
    """ADA: p <- clip(p + sign(r - target) x images / (ada_kimg x 1000), 0, 1), r = E[sign(D(augmented real))]."""
    from vitgan.training.trainer import ada_adjust

    cfg = vitgan.presets.get("mnist", ada_target=0.6, ada_kimg=1.0)
    moves = [ada_adjust(cfg, 0.5, r, 64) for r in (0.9, 0.1, 0.6, 0.61)]
    assert moves == pytest.approx([0.564, 0.436, 0.5, 0.564])
    assert ada_adjust(cfg, 0.01, -1.0, 64) == 0.0 and ada_adjust(cfg, 0.99, 1.0, 64) == 1.0


def test_ada_adjusts_every_four_d_steps_and_resumes_where_it_was():
    """With ada_target > 0 the Trainer moves the augmentation probability after every 4 D steps, by the rule, from
    the mean r of those steps; the training state keeps p and the r's collected since, and a resumed run goes on
    from them. Without ADA, p is the run's augment_p whatever the state holds."""
    trainer = _tiny_trainer(ada_target=0.6, ada_kimg=0.16, augment="translation", augment_p=0.5)  # a move is 0.1
    signs, ps = [], []
    for _ in range(6):
        stats = trainer.step()
        signs.append(stats["real_sign"])
        ps.append(stats["augment_p"])
    r = sum(signs[:4]) / 4  # batch 4: r is a multiple of 1/8, never 0.6
    assert ps[:3] == [0.5] * 3 and ps[3] == ps[4] == ps[5] == pytest.approx(0.5 + (0.1 if r > 0.6 else -0.1))
    assert trainer.loss.augment_p == ps[5] and len(trainer.ada_r) == 2
    state = copy.deepcopy(trainer.state())
    resumed = _tiny_trainer(ada_target=0.6, ada_kimg=0.16, augment="translation", augment_p=0.5)
    resumed.load_state(state)
    assert resumed.loss.augment_p == ps[5] and resumed.ada_r == trainer.ada_r
    fixed = _tiny_trainer(augment="translation", augment_p=0.3)
    fixed.load_state(state)
    assert fixed.loss.augment_p == 0.3 and fixed.step()["augment_p"] == 0.3


def test_precision_names():
    """fp16 is float16 autocast; auto is bf16 where the hardware has bf16 matrix units, else fp16 on CUDA only."""
    from vitgan.training.device import auto_precision, precision_name, resolve_precision

    cpu = torch.device("cpu")
    assert [resolve_precision(name, cpu) for name in ("fp32", "bf16", "fp16")] == [None, torch.bfloat16, torch.float16]
    bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert resolve_precision("auto", cpu) == (torch.bfloat16 if bf16 else None)
    assert auto_precision("cuda", True) == auto_precision("cpu", True) == torch.bfloat16
    assert auto_precision("cuda", False) == torch.float16 and auto_precision("cpu", False) is None
    assert [precision_name(amp) for amp in (None, torch.bfloat16, torch.float16)] == ["fp32", "bf16", "fp16"]


def test_fp16_overflow_is_a_skipped_step_not_an_error():
    """An inf/NaN gradient under fp16 (here: a scale so large that the scaled gradient overflows) makes the scaler
    skip the step and halve its scale: no NonFiniteError, no update. A non-finite weight or loss still raises."""
    from vitgan.training.trainer import NonFiniteError, total_norm

    torch.manual_seed(0)
    trainer = _tiny_trainer(amp=torch.float16)
    for _ in range(10):  # until both scalers have found a scale that does not overflow, and stepped
        trainer.step()
        if trainer.opt_g.state and trainer.opt_d.state:
            break
    for scaler in (trainer.scaler_g, trainer.scaler_d):
        scaler.update(2.0**127)  # the largest power of two in fp32: the fp16 gradients overflow
    before = copy.deepcopy(trainer.state())
    stats = trainer.step()
    assert stats["grad_d"] == stats["grad_g"] == 0  # a skipped step's gradient counts as 0
    assert trainer.scaler_g.get_scale() == trainer.scaler_d.get_scale() == 2.0**126
    for key, net in (("G", trainer.G), ("D", trainer.D)):
        for name, value in net.named_parameters():  # (buffers such as w_avg move with every forward)
            assert torch.equal(value, before[key][name]), f"{key}.{name}"
    for opt, key in ((trainer.opt_g, "opt_g"), (trainer.opt_d, "opt_d")):
        steps = [state["step"] for state in opt.state_dict()["state"].values()]
        assert steps and steps == [state["step"] for state in before[key]["state"].values()], key  # not stepped
    for scaler in (trainer.scaler_g, trainer.scaler_d):
        scaler.update(1024.0)  # a scale that does not overflow
    stats = trainer.step()  # the norm is the true (unscaled) gradient's, left in .grad by the step
    assert stats["grad_g"] == pytest.approx(float(total_norm([p.grad for p in trainer.G.parameters()])))
    param, optimizer_step = next(trainer.G.parameters()), trainer.opt_g.step
    trainer.opt_g.step = lambda: (optimizer_step(), param.data.view(-1)[0].fill_(float("inf")))
    with pytest.raises(NonFiniteError, match="weights_g became inf"):
        trainer.step()
    trainer.opt_g.step = optimizer_step
    with pytest.raises(NonFiniteError, match="loss_d became nan"):  # from G's inf weight
        trainer.step()


def test_r1_has_its_double_backward_with_the_fused_attention_kernels(monkeypatch):
    """Off the CPU, D's attention runs on SDPA's fused kernels, which have no double backward (the first GPU run
    failed on it); R1's gradient needs one. With SDPA forced on the CPU and only its fused kernels allowed, R1 and
    its gradient must equal those of the explicit path (R1 asks for the math backend)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from vitgan.nn import attention

    trainer = _tiny_trainer(r1_gamma=1.0, r1_interval=1)
    reals = trainer.next_reals()[0]
    start = copy.deepcopy(trainer.D.state_dict())  # (each training forward moves ISN's power-iteration vectors)

    def r1_and_grads():
        trainer.D.load_state_dict(start)
        trainer.D.zero_grad(set_to_none=True)
        r1 = trainer.loss.penalty(reals, trainer.cfg.r1_gamma)
        r1.backward()
        return r1.detach(), [p.grad.clone() for p in trainer.D.parameters() if p.grad is not None]

    explicit = r1_and_grads()
    monkeypatch.setitem(attention.scaled_attention.__kwdefaults__, "fused", True)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        fused = r1_and_grads()
    torch.testing.assert_close(fused, explicit, rtol=1e-4, atol=1e-6)


def test_compiling_is_automatic_for_long_cpu_runs_and_falls_back(tmp_path, digits, monkeypatch):
    """--compile decides by itself when not given: on a CPU, runs of at least AUTO_COMPILE_KIMG kimg are compiled;
    --no-compile and --compile pin it. A compiled first step that fails (no C++ compiler, ...) is retried
    uncompiled from the same state: the run ends exactly where an uncompiled one does."""
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module, **options: compiled.append(module) or module)
    _train(tmp_path, digits, "--kimg", "0.004", "--tick", "1")
    assert compiled == []
    _train(tmp_path, digits, "--kimg", "20", "--minutes", "0.001", "--tick", "1")
    assert len(compiled) == 3  # G, D and R1's penalty
    _train(tmp_path, digits, "--kimg", "20", "--minutes", "0.001", "--tick", "1", "--no-compile")
    assert len(compiled) == 3

    class Broken(torch.nn.Module):
        def forward(self, *args, **kwargs):
            raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found")

    monkeypatch.setattr(torch, "compile", lambda module, **options: Broken())
    fallback = _train(tmp_path, digits, "--kimg", "0.008", "--tick", "1", "--compile")
    plain = _train(tmp_path, digits, "--kimg", "0.008", "--tick", "1")
    assert "torch.compile failed (RuntimeError: 'InvalidCxxCompiler" in (fallback / "log.txt").read_text()
    assert json.loads((fallback / "training_options.json").read_text())["compiled"] is True
    a = load_training_state(next(fallback.glob("training-state-*.pt")))
    b = load_training_state(next(plain.glob("training-state-*.pt")))
    for key in ("G", "D", "G_ema"):
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), f"{key}.{name}"
