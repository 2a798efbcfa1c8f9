"""`vitgan eval` and metrics during training, with Inception weights made by the test (no network)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_training import TINY, _train
from torch import nn

from vitgan import presets
from vitgan.cli import main
from vitgan.data import load
from vitgan.metrics.evaluate import Evaluator, parse_metrics
from vitgan.networks import Generator
from vitgan.training.checkpoint import save_snapshot

SMALL = dict(g_dim=32, g_depth=1, g_heads=2, g_mlp_dim=64, z_dim=16, w_dim=16, mapping_layers=1, g_fourier_dim=8,
             g_inr_hidden=8, d_dim=32, d_depth=1, d_heads=2, d_mlp_dim=64)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    """A network snapshot of a small random 1x32x32 generator, in a folder without training_options.json."""
    cfg = presets.get("mnist", **SMALL)
    path = tmp_path_factory.mktemp("run") / "network-snapshot-000001000.safetensors"
    torch.manual_seed(0)
    g = Generator(cfg)
    save_snapshot(path, cfg, {"G_ema": g}, {"cur_nimg": 1000, "tick": 1})
    return path


def _eval(capsys, *args):
    code = main(["eval", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_writes_every_metric_and_reuses_the_reference_features(snapshot, digits, inception_weights, tmp_path,
                                                                    capsys):
    args = ["--ckpt", str(snapshot), "--data", str(digits), "--metrics", "fid20,kid20,is20,pr20",
            "--inception", str(inception_weights), "--cache", str(tmp_path), "--batch", "10"]
    code, out, err = _eval(capsys, *args)
    assert code == 0, err
    record = json.loads(out)
    assert set(record["results"]) == {"fid20", "kid20", "kid20_std", "is20_mean", "is20_std", "pr20_precision",
                                      "pr20_recall"}
    assert all(np.isfinite(v) for v in record["results"].values())
    assert record["results"]["fid20"] > 0 and record["results"]["is20_mean"] >= 1
    assert record["kimg"] == 1.0 and record["num_real"] == 12
    assert "computed, cached" in err
    code, out2, err = _eval(capsys, *args)
    assert code == 0 and "(cached)" in err
    assert json.loads(out2)["results"] == pytest.approx(record["results"], rel=1e-5)  # same seeds, same numbers
    lines = (snapshot.parent / "metrics.jsonl").read_text().splitlines()
    assert len(lines) >= 2 and json.loads(lines[-1])["results"]["fid20"] == pytest.approx(record["results"]["fid20"])


def test_eval_errors_are_one_line(snapshot, digits, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VITGAN_INCEPTION", str(tmp_path / "missing.pth"))
    code, _, err = _eval(capsys, "--ckpt", str(snapshot), "--data", str(digits), "--metrics", "fid10")
    assert code == 2 and "missing.pth: Inception weights file not found" in err and "--inception" in err
    assert err.count("\n") == 1
    code, _, err = _eval(capsys, "--ckpt", str(snapshot), "--metrics", "fid10")
    assert code == 2 and "data:" in err and "--data" in err  # no training_options.json to take the data from
    code, _, err = _eval(capsys, "--ckpt", str(snapshot), "--data", str(digits), "--metrics", "lpips10k")
    assert code == 2 and err.startswith("vitgan: error: --metrics:")
    code, _, err = _eval(capsys, "--ckpt", str(tmp_path / "none.safetensors"), "--metrics", "fid10")
    assert code == 2 and "none.safetensors" in err
    code, _, err = _eval(capsys, "--ckpt", str(snapshot), "--data", str(digits), "--resolution", "64")
    assert code == 2 and err.startswith("vitgan: error: --resolution: --resolution and --channels are for --gen")


def test_digit_fid_of_a_snapshot_on_the_bundled_digits(snapshot, capsys):
    code, out, err = _eval(capsys, "--ckpt", str(snapshot), "--data", "mnist", "--metrics", "dfid200")
    assert code == 0, err
    assert json.loads(out)["results"]["dfid200"] > 0


class _Replay(nn.Module):
    """A 'generator' that returns the dataset's own images in order: a perfect generator of that data."""

    def __init__(self, images: torch.Tensor) -> None:
        super().__init__()
        self.images, self.z_dim, self.next = images.float() / 127.5 - 1, 4, 0
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, z: torch.Tensor, psi: float = 1.0) -> torch.Tensor:
        out = self.images[self.next:self.next + len(z)]
        self.next += len(z)
        return out


def test_a_generator_that_replays_the_data_scores_perfectly(digits, inception_weights, tmp_path):
    data = load(str(digits), resolution=32, channels=1)
    evaluator = Evaluator(parse_metrics("fid12,pr12"), data, inception_path=str(inception_weights), cache=tmp_path,
                          batch=5, log=lambda line: None)
    results = evaluator(_Replay(data.images))
    assert abs(results["fid12"]) < 1e-3 and results["pr12_precision"] == 1 and results["pr12_recall"] == 1
    worse = evaluator(_Replay(data.images.flip(-1)))  # mirrored digits
    assert worse["fid12"] > 100 * abs(results["fid12"])


def test_metrics_during_training(tmp_path, digits, inception_weights):
    run = _train(tmp_path, digits, "--kimg", "0.016", "--tick", "0.008", "--snap", "2", "--metrics", "fid10,is10",
                 "--metric-every", "2", "--inception", str(inception_weights))
    rows = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [("fid10" in r, "is10_mean" in r) for r in rows] == [(False, False), (True, True)]  # every 2nd tick
    assert (run / "metrics.png").is_file()
    assert "fid10" in (run / "log.txt").read_text()


def test_train_refuses_bad_metric_options(tmp_path, digits, capsys):
    assert main(["train", "--data", str(digits), "--outdir", str(tmp_path), *TINY, "--metrics", "fid"]) == 2
    assert main(["train", "--data", str(digits), "--outdir", str(tmp_path), *TINY, "--metric-every", "0"]) == 2
    err = capsys.readouterr().err
    assert "vitgan: error: --metrics:" in err and "vitgan: error: --metric-every:" in err


def test_eval_gen_scores_written_images_as_the_generator_that_wrote_them(snapshot, digits, inception_weights,
                                                                          tmp_path, capsys):
    common = ["--data", str(digits), "--metrics", "fid20,kid20,is20,pr20_full,dfid20", "--inception",
              str(inception_weights), "--cache", str(tmp_path / "cache"), "--batch", "10"]
    code, out, err = _eval(capsys, "--ckpt", str(snapshot), *common)
    assert code == 0, err
    expected = json.loads(out)["results"]
    gen = tmp_path / "gen"
    assert main(["generate", "--ckpt", str(snapshot), "--seeds", "0-24", "--outdir", str(gen), "--interpolate",
                 "--steps", "2"]) == 0
    assert sorted(p.name for p in gen.glob("[!s]*")) == ["grid.png", "interpolation.png"]  # beside seed0000.png...
    capsys.readouterr()
    # the sheets are no samples: eval --gen takes the first 20 seeds (sorted by name), at their resolution
    code, out, err = _eval(capsys, "--gen", str(gen), *common)
    assert code == 0, err
    record = json.loads(out)
    # the same pixels through the same networks; equal up to the float round-off of the CPU's kernels (bit-equal on
    # Intel CPUs with AMX, 3e-7 apart on an AMD EPYC)
    assert record["results"] == pytest.approx(expected, rel=1e-5) and record["gen"] == str(gen)
    assert record["reals"] == {"fid20": 12, "kid20": 12, "is20": 0, "pr20_full": 12, "dfid20": 12}
    assert json.loads((gen / "metrics.jsonl").read_text())["results"] == record["results"]  # beside the samples
    assert not (tmp_path / "metrics.jsonl").exists()  # not in the folder's parent
    code, out, err = _eval(capsys, "--gen", str(gen), *common, "--out", str(tmp_path / "scores.jsonl"))
    assert code == 0, err
    assert json.loads((tmp_path / "scores.jsonl").read_text())["results"] == pytest.approx(expected, rel=1e-5)  # --out
    assert len((gen / "metrics.jsonl").read_text().splitlines()) == 1
    code, _, err = _eval(capsys, "--gen", str(gen), *common[:3], "fid30")
    assert code == 2 and err.strip() == f"vitgan: error: --gen: {gen} holds 25 images, fid30 needs 30"


def test_eval_gen_of_the_real_images_in_a_zip_scores_perfectly(digits, inception_weights, tmp_path, capsys):
    from vitgan.data.prepare import prepare

    zipped = tmp_path / "same.zip"
    prepare(digits, zipped, channels=1, progress=False, log=lambda line: None)
    code, out, err = _eval(capsys, "--gen", str(zipped), "--data", str(digits), "--metrics", "fid12,pr12",
                           "--inception", str(inception_weights), "--batch", "6")
    assert code == 0, err
    results = json.loads(out)["results"]
    assert abs(results["fid12"]) < 1e-3 and results["pr12_precision"] == results["pr12_recall"] == 1
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["results"] == results  # beside the zip
    code, _, err = _eval(capsys, "--gen", str(zipped), "--metrics", "fid12")
    assert code == 2 and err.startswith("vitgan: error: --data: --gen needs --data")
    code, _, err = _eval(capsys, "--metrics", "fid12", "--data", str(digits))
    assert code == 2 and err.startswith("vitgan: error: --ckpt: give either --ckpt")


# --- StackedMNIST's modes ---

@pytest.fixture(scope="module")
def stacked_snapshot(tmp_path_factory):
    """A network snapshot of a small random 3x32x32 generator (the stacked-mnist preset, narrowed)."""
    cfg = presets.get("stacked-mnist", **SMALL)
    path = tmp_path_factory.mktemp("stacked-run") / "network-snapshot-000001000.safetensors"
    torch.manual_seed(0)
    save_snapshot(path, cfg, {"G_ema": Generator(cfg)}, {"cur_nimg": 1000, "tick": 1})
    return path


MODE_KEYS = {"modes200", "modes200_kl", "modes200_confidence", "modes200_real", "modes200_real_kl",
             "modes200_real_confidence"}


def test_eval_modes_of_a_snapshot_with_the_ceiling_of_the_real_data(stacked_snapshot, capsys):
    code, out, err = _eval(capsys, "--ckpt", str(stacked_snapshot), "--data", "stacked-mnist", "--metrics", "modes200",
                           "--batch", "50")
    assert code == 0, err
    record = json.loads(out)
    results = record["results"]
    assert set(results) == MODE_KEYS and record["reals"] == {"modes200": 0}
    assert isinstance(results["modes200"], int) and 1 <= results["modes200"] <= 200 and results["modes200_kl"] >= 0
    # the ceiling: the first 200 reals of the seed-0 permutation, whose labels give ~their modes (the classifier
    # misses a few digits)
    from vitgan.data import load_stacked_mnist
    from vitgan.metrics.evaluate import real_subset

    labels = load_stacked_mnist().labels[real_subset(60_000, 200)].tolist()
    assert abs(results["modes200_real"] - len(set(labels))) <= 10
    assert results["modes200_real_kl"] < results["modes200_kl"]  # a random G covers fewer modes than the data
    shown = [line for line in err.splitlines() if "of the real data" in line]
    assert shown == [f"modes200 of the real data (the ceiling): {results['modes200_real']} modes, KL "
                     f"{results['modes200_real_kl']:.4f}, confidence {results['modes200_real_confidence']:.3f}"]
    assert json.loads((stacked_snapshot.parent / "metrics.jsonl").read_text().splitlines()[-1]) == record


def test_eval_modes_of_a_folder_of_the_real_stacks_is_the_ceiling(tmp_path, capsys):
    """--gen of RGB PNGs of StackedMNIST's own images (those the ceiling scores): the same measures as the ceiling,
    and the modes their labels say."""
    from vitgan.data import load_stacked_mnist
    from vitgan.metrics.evaluate import real_subset

    data = load_stacked_mnist()
    index = torch.from_numpy(real_subset(len(data), 200))
    gen = tmp_path / "gen"
    gen.mkdir()
    for i, image in enumerate(data.images[index].permute(0, 2, 3, 1).numpy()):
        Image.fromarray(image).save(gen / f"seed{i:04d}.png")
    code, out, err = _eval(capsys, "--gen", str(gen), "--data", "stacked-mnist", "--metrics", "modes200")
    assert code == 0, err
    results = json.loads(out)["results"]
    assert set(results) == MODE_KEYS
    for key in ("modes200", "modes200_kl", "modes200_confidence"):
        assert results[key] == results[key.replace("200", "200_real")]
    expected = np.bincount(data.labels[index].numpy(), minlength=1000)
    assert abs(results["modes200"] - (expected > 0).sum()) <= 10


def test_eval_modes_refuses_grayscale_images_in_one_line(snapshot, digits, capsys):
    expected = "vitgan: error: --metrics: modes needs 3-channel 32x32 (or 28x28) images, got 1x32x32"
    code, _, err = _eval(capsys, "--ckpt", str(snapshot), "--data", "mnist", "--metrics", "modes10")
    assert code == 2 and err.strip().splitlines()[-1] == expected  # after the progress bar's line
    code, _, err = _eval(capsys, "--gen", str(digits), "--data", str(digits), "--metrics", "modes10")
    assert code == 2 and err.strip().splitlines()[-1] == expected
