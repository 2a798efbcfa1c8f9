"""Crash safety: checksummed checkpoints, --resume auto past damaged states, NaN/inf detection and rollback, a full
disk, a malicious checkpoint, and the kill test's short form."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_training import TINY, _train

from vitgan import presets
from vitgan.cli import main
from vitgan.errors import EXIT_DIVERGED
from vitgan.training import checkpoint, loss
from vitgan.training.checkpoint import checksum_path, load_training_state, verify

ROOT = Path(__file__).parent.parent


def _states(run: Path) -> list[Path]:
    return sorted(run.glob("training-state-*.pt"))


def _error(capsys) -> str:
    """The last stderr line, checked to be a one-line vitgan error (earlier lines say what was resumed)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("vitgan: error: "), err
    assert not any("Traceback" in line for line in err)
    return err[-1]


def test_every_checkpoint_has_a_verifying_sidecar_and_the_last_k_are_kept(tmp_path, digits):
    run = _train(tmp_path, digits, "--kimg", "0.02", "--tick", "0.004", "--snap", "1", "--keep", "3")
    states = _states(run)
    assert [s.name for s in states] == [f"training-state-{n:09d}.pt" for n in (12, 16, 20)]
    sidecars = sorted(run.glob("*.sha256"))
    assert len(sidecars) == 3 + 5  # the kept states and every snapshot; no orphan
    for path in [*states, *run.glob("network-snapshot-*.safetensors")]:
        assert verify(path) is True
        digest, name = checksum_path(path).read_text().split()
        assert name == path.name and len(digest) == 64  # the format of `sha256sum -c`
    assert not list(run.glob(".*"))  # no temporary file left behind


def test_resume_auto_takes_the_newest_verified_state_and_falls_back_past_a_damaged_one(tmp_path, digits, capsys):
    outdir = tmp_path / "runs"
    first = _train(tmp_path, digits, "--kimg", "0.008", "--tick", "0.004", "--snap", "1")
    second = _train(tmp_path, digits, "--kimg", "0.016", "--tick", "0.004", "--snap", "1", "--resume", "auto")
    assert "resuming from" in capsys.readouterr().err
    newest = _states(second)[-1]
    assert newest.name == "training-state-000000016.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the tensors
    newest.write_bytes(bytes(data))
    assert verify(newest) is False
    with pytest.raises(checkpoint.CheckpointError, match="damaged: its sha256 differs"):
        load_training_state(newest)  # named explicitly, a damaged file is an error

    assert main(["train", "--data", str(digits), "--outdir", str(outdir), *TINY, "--kimg", "0.016", "--tick", "0.004",
                 "--resume", "auto", "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert f"warning: skipping a damaged training state: {newest}: damaged" in err
    assert f"resuming from {_states(second)[0]} (sha256 verified)" in err  # the older state of the newest run

    for path in _states(second):  # all of the newest run damaged: back to the first run's newest state
        path.write_bytes(b"garbage")
    assert main(["train", "--data", str(digits), "--outdir", str(outdir), *TINY, "--resume", "auto", "--dry-run"]) == 0
    assert f"resuming from {_states(first)[-1]} (sha256 verified)" in capsys.readouterr().err

    checksum_path(_states(first)[-1]).unlink()  # a state without a checksum is used only when nothing verifies
    for path in _states(first)[:-1]:
        path.write_bytes(b"garbage")
    assert main(["train", "--data", str(digits), "--outdir", str(outdir), *TINY, "--resume", "auto", "--dry-run"]) == 0
    assert f"warning: resuming from {_states(first)[-1]} unverified" in capsys.readouterr().err


def test_resume_auto_in_an_empty_outdir_starts_a_new_run(tmp_path, digits, capsys):
    run = _train(tmp_path, digits, "--kimg", "0.004", "--tick", "1", "--resume", "auto")
    assert run.name.startswith("00000-") and "starting a new run" in capsys.readouterr().err


def test_resume_auto_removes_partial_files_of_killed_writes(tmp_path, digits, capsys):
    run = _train(tmp_path, digits, "--kimg", "0.004", "--tick", "1")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process id that no longer runs
    partial = run / f".training-state-000000008.pt.tmp{dead.pid}.pt"
    partial.write_bytes(b"half a checkpoint")
    ours = run / f".training-state-000000012.pt.tmp{os.getpid()}.pt"  # a live writer's file is left alone
    ours.write_bytes(b"being written")
    assert main(["train", "--data", str(digits), "--outdir", str(tmp_path / "runs"), "--resume", "auto",
                 "--dry-run"]) == 0
    assert f"removing {partial}" in capsys.readouterr().err
    assert not partial.exists() and ours.exists()


def _nan_once(monkeypatch, at_call: int):
    """Make the G loss NaN at its `at_call`-th evaluation (1-based), once."""
    original, calls = loss.g_nonsaturating_loss, {"n": 0}

    def poisoned(logits):
        calls["n"] += 1
        value = original(logits)
        return value * float("nan") if calls["n"] == at_call else value

    monkeypatch.setattr("vitgan.training.loss.g_nonsaturating_loss", poisoned)
    return calls


def test_nan_stops_naming_the_term_and_step_and_keeps_the_last_checkpoint(tmp_path, digits, monkeypatch, capsys):
    _nan_once(monkeypatch, at_call=4)
    outdir = tmp_path / "runs"
    code = main(["train", "--data", str(digits), "--outdir", str(outdir), *TINY, "--kimg", "0.02", "--tick", "0.008",
                 "--snap", "1"])
    assert code == EXIT_DIVERGED == 3  # a diverged run is told apart from bad input (2)
    assert _error(capsys) == "vitgan: error: loss_g became nan in step 4 (kimg 0.012)"
    (run,) = outdir.iterdir()
    (state,) = _states(run)  # the tick at 8 images; nothing written after the NaN
    assert state.name == "training-state-000000008.pt" and verify(state) is True
    assert load_training_state(state)["cur_nimg"] == 8


@pytest.mark.parametrize("term", ["grad_g", "weights_g"])
def test_nan_in_a_gradient_or_a_weight_is_named(tmp_path, digits, monkeypatch, capsys, term):
    from vitgan.training.trainer import Trainer

    step = Trainer.run_step  # the run loop's step, checked once per tick

    def poison(self):
        if self.d_steps != 2:  # poison step 3 only, after G's loss (finite) is computed
            return step(self)
        param = next(self.G.parameters())
        if term == "grad_g":
            handle = param.register_hook(lambda grad: grad * float("inf"))
        else:
            optimizer_step = self.opt_g.step
            self.opt_g.step = lambda: (optimizer_step(), param.data.view(-1)[0].fill_(float("inf")))
        try:
            return step(self)
        finally:
            if term == "grad_g":
                handle.remove()

    monkeypatch.setattr(Trainer, "run_step", poison)
    assert main(["train", "--data", str(digits), "--outdir", str(tmp_path / "runs"), *TINY, "--kimg", "0.02"]) == 3
    assert _error(capsys) in (f"vitgan: error: {term} became inf in step 3 (kimg 0.008)",
                              f"vitgan: error: {term} became nan in step 3 (kimg 0.008)")


def test_nan_rollback_returns_to_the_last_good_state_with_lower_learning_rates(tmp_path, digits, monkeypatch):
    calls = _nan_once(monkeypatch, at_call=4)
    run = _train(tmp_path, digits, "--kimg", "0.02", "--tick", "0.008", "--snap", "1", "--nan-policy", "rollback")
    log = (run / "log.txt").read_text()
    lr = presets.get("mnist").g_lr / 2
    assert ("non-finite: loss_g became nan in step 4 (kimg 0.012); rolled back to training-state-000000008.pt "
            f"(kimg 0.008) with g_lr {lr:g}, d_lr {lr:g} (rollback 1 of 3)") in log
    final = load_training_state(_states(run)[-1])
    assert final["cur_nimg"] == 20 and calls["n"] == 4 + 3  # steps 3..5 again after the rollback
    assert final["config"]["g_lr"] == final["opt_g"]["param_groups"][0]["lr"] == lr  # kept when resumed


def test_nan_rollback_gives_up_after_three(tmp_path, digits, monkeypatch, capsys):
    monkeypatch.setattr("vitgan.training.loss.g_nonsaturating_loss", lambda logits: logits.mean() * float("nan"))
    code = main(["train", "--data", str(digits), "--outdir", str(tmp_path / "runs"), *TINY, "--kimg", "0.02",
                 "--nan-policy", "rollback"])
    assert code == 3
    assert _error(capsys) == "vitgan: error: loss_g became nan in step 1 (kimg 0.000) (gave up after 3 rollbacks)"


def test_a_non_finite_state_is_never_written(tmp_path):
    state = {"G": {"w": torch.tensor([1.0, float("nan")])}, "format": checkpoint.STATE_FORMAT}
    path = tmp_path / "training-state-000000004.pt"
    with pytest.raises(FloatingPointError, match=r"^G\.w holds NaN or inf; not writing"):
        checkpoint.save_training_state(path, state)
    assert not path.exists() and not checksum_path(path).exists()


def test_a_full_disk_is_a_one_line_error_and_keeps_the_previous_checkpoint(tmp_path, digits, monkeypatch, capsys):
    real_save, saves = torch.save, {"n": 0}

    def full_disk(obj, f, *args, **kwargs):
        saves["n"] += 1
        if saves["n"] == 2:  # the second training state: half written, then the disk is full
            Path(f).write_bytes(b"\0" * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    outdir = tmp_path / "runs"
    code = main(["train", "--data", str(digits), "--outdir", str(outdir), *TINY, "--kimg", "0.02", "--tick", "0.008",
                 "--snap", "1"])
    assert code == 2
    (run,) = outdir.iterdir()
    (state,) = _states(run)
    assert _error(capsys) == (f"vitgan: error: {run / 'training-state-000000016.pt'}: cannot write the checkpoint: no "
                              "space left on device (nothing was replaced; the previous checkpoints are intact)")
    assert state.name == "training-state-000000008.pt" and verify(state) is True
    assert load_training_state(state)["cur_nimg"] == 8
    assert not list(run.glob(".*"))  # the temporary file is removed
    assert not checksum_path(run / "training-state-000000016.pt").exists()


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("with_checksum", [False, True])
def test_a_malicious_checkpoint_does_not_run_and_the_error_is_clear(tmp_path, digits, capsys, with_checksum):
    marker = tmp_path / "pwned"
    evil = tmp_path / "training-state-000000004.pt"
    torch.save({"format": checkpoint.STATE_FORMAT, "G": _Evil(marker)}, evil)  # its pickle calls os.system
    if with_checksum:  # a valid checksum does not make it trusted: nothing in it is ever executed
        checksum_path(evil).write_text(f"{checkpoint.sha256_file(evil)}  {evil.name}\n")
    assert main(["train", "--data", str(digits), "--outdir", str(tmp_path / "runs"), "--resume", str(evil)]) == 2
    assert _error(capsys) == (f"vitgan: error: {evil}: refused: its pickle calls posix.system, which a training "
                              "state never contains (not loaded, nothing was run; the file may be malicious)")
    assert not marker.exists()


def test_garbage_snapshot_and_truncated_state_are_one_line_errors(tmp_path, digits, capsys):
    run = _train(tmp_path, digits, "--kimg", "0.004", "--tick", "1")
    snapshot = next(run.glob("network-snapshot-*.safetensors"))
    snapshot.write_bytes(os.urandom(4096))
    checksum_path(snapshot).unlink()
    assert main(["generate", "--ckpt", str(snapshot), "--outdir", str(tmp_path / "o")]) == 2
    assert _error(capsys).startswith(f"vitgan: error: {snapshot}: not a readable safetensors snapshot")
    state = _states(run)[-1]
    state.write_bytes(state.read_bytes()[:5000])
    checksum_path(state).unlink()
    assert main(["train", "--data", str(digits), "--outdir", str(tmp_path / "runs"), "--resume", str(state)]) == 2
    assert _error(capsys) == f"vitgan: error: {state}: not a vitgan training state (not a file written by torch.save)"


def test_kill_test_short_form():
    """5 SIGKILLs at random moments, each resumed with --resume auto: the final state is exactly an uninterrupted
    run's and no kill lost more than one checkpoint interval (benchmarks/kill_test.py; 25-35 s)."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kill_test.py"), "--kills", "5", "--kimg", "0.12"],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["kills"] == 5 and result["identical"], result
    assert result["max_lost_nimg"] <= result["checkpoint_interval_nimg"] and result["damaged_in_place"] == 0
    assert out.returncode == 0


TINY_NETWORKS = dict(g_dim=32, g_depth=1, g_heads=2, g_mlp_dim=64, z_dim=16, w_dim=16, mapping_layers=1,
                     g_fourier_dim=8, g_inr_hidden=8, d_dim=32, d_depth=1, d_heads=2, d_mlp_dim=64, batch=4)


def test_the_finite_watch_keeps_the_first_non_finite_scalar_until_checked():
    """FiniteWatch: the first NaN or inf seen (in the order of the step's scalars), with its step and image count,
    survives later steps' NaNs and finite steps; `check` raises it once (one read) and then starts afresh."""
    from vitgan.training.trainer import FiniteWatch, NonFiniteError

    watch = FiniteWatch(("loss_d", "grad_d", "loss_g"), torch.device("cpu"))
    t = lambda *values: dict(zip(watch.names, map(torch.tensor, values), strict=True))  # noqa: E731
    watch.observe(t(0.5, 1.0, 0.7), step=1, nimg=0)
    watch.check()  # all finite: nothing to raise
    watch.observe(t(0.5, float("inf"), float("nan")), step=2, nimg=4)  # grad_d comes first in step order
    watch.observe(t(float("nan"), 1.0, 0.7), step=3, nimg=8)
    watch.observe(t(0.5, 1.0, 0.7), step=4, nimg=12)
    with pytest.raises(NonFiniteError, match=r"^grad_d became inf in step 2 \(kimg 0\.004\)$") as error:
        watch.check()
    assert (error.value.term, error.value.step, error.value.nimg) == ("grad_d", 2, 4)
    watch.check()  # checked: the next check sees only later steps
    watch.observe(t(0.5, 1.0, float("nan")), step=5, nimg=16)
    watch.reset()  # a rollback undoes the steps, and their NaNs
    watch.check()


def test_a_training_step_reads_nothing_back_from_the_device(monkeypatch):
    """Trainer.run_step (the run loop's) queues its work without a host read of any tensor: no .item(), float(),
    bool(), int() or .tolist() of a tensor, which on CUDA each wait for the device (conditional, with R1 and R2,
    bCR and DiffAugment, under rpgan's pairing too). Trainer.step, which reads its statistics, does."""
    from vitgan.data import ImageData
    from vitgan.training.trainer import Trainer

    def forbidden(name):
        def read(self, *args, **kwargs):
            raise AssertionError(f"a host read of a tensor in the training step: Tensor.{name}")
        return read

    for gan_loss in ("ns", "rpgan"):
        cfg = presets.get("mnist", **TINY_NETWORKS, gan_loss=gan_loss, r1_gamma=1.0, r2_gamma=1.0, r1_interval=2,
                          bcr_real=1.0, bcr_fake=1.0, augment="translation,cutout", augment_p=1.0, cond=2)
        images = torch.randint(0, 256, (8, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        trainer = Trainer(cfg, ImageData(images, torch.arange(8) % 2, "tiny"), torch.device("cpu"), None)
        with monkeypatch.context() as patched:
            for name in ("item", "__float__", "__bool__", "__int__", "tolist"):
                patched.setattr(torch.Tensor, name, forbidden(name))
            for _ in range(3):  # R1 and R2 in steps 1 and 3
                trainer.run_step()
        trainer.check_finite()
        for name in ("tolist", "__float__"):  # the check's one read, and the statistics'
            with monkeypatch.context() as patched:
                patched.setattr(torch.Tensor, name, forbidden(name))
                with pytest.raises(AssertionError, match=f"Tensor.{name}"):
                    trainer.step()
