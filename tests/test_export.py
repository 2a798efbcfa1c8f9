"""`vitgan export`, loading an exported folder (vitgan.load, generate, eval --ckpt) and the Hugging Face hub,
offline."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from test_eval import SMALL

import vitgan
from vitgan import presets
from vitgan.cli import main
from vitgan.networks import Generator
from vitgan.sampling import latents
from vitgan.training.checkpoint import CheckpointError, save_snapshot


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder with two snapshots (G differs from G_ema), training options, stats and an eval record."""
    folder = tmp_path_factory.mktemp("runs") / "00000-mnist-digits"
    cfg = presets.get("mnist", **SMALL)
    torch.manual_seed(0)
    g_ema, g = Generator(cfg), Generator(cfg)
    g_ema.w_avg.normal_()  # a buffer: exported too
    for nimg in (1000, 2000):
        save_snapshot(folder / f"network-snapshot-{nimg:09d}.safetensors", cfg, {"G_ema": g_ema, "G": g},
                      {"cur_nimg": nimg})
    (folder / "training_options.json").write_text(json.dumps({"run": {"preset": "mnist", "data": "digits/"}}))
    rows = [{"tick": 1, "kimg": 1.0, "loss_g": 0.7, "fid10": 99.0}, {"tick": 2, "kimg": 2.0, "loss_g": 0.6,
                                                                     "fid10": 42.5, "is10_mean": 1.5}]
    (folder / "stats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    record = {"results": {"fid50k_full": 12.25}, "snapshot": str(folder / "network-snapshot-000002000.safetensors")}
    (folder / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    return folder, g_ema


def _same_images(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    z = latents(range(4), a.z_dim)
    with torch.no_grad():
        return torch.equal(a(z), b(z))


def test_export_writes_g_ema_config_card_and_grid(run, tmp_path, capsys):
    folder, g_ema = run
    out = tmp_path / "exported"
    assert main(["export", str(folder), "--out", str(out)]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors", "samples.png"]
    weights = load_file(str(out / "model.safetensors"))
    assert weights.keys() == g_ema.state_dict().keys()  # G_ema only: no G., no D. tensors
    assert all(torch.equal(weights[k], v) for k, v in g_ema.state_dict().items())
    config = json.loads((out / "config.json").read_text())
    assert config["cfg"] == g_ema.cfg.to_dict() and config["kimg"] == 2.0  # the newest snapshot of the run
    assert (config["preset"], config["data"], config["source"]) == ("mnist", "digits/",
                                                                    "network-snapshot-000002000.safetensors")
    assert config["metrics"] == {"fid10": 42.5, "is10_mean": 1.5, "fid50k_full": 12.25}  # stats row + eval record
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: vitgan") and "`mnist`" in card and "2 kimg" in card
    assert "| `fid50k_full` | 12.25 |" in card and "![latent seeds 0-63](samples.png)" in card
    grid = np.asarray(Image.open(out / "samples.png"))
    assert grid.shape == (8 * 34 + 2, 8 * 34 + 2)  # 8x8 grayscale 32x32 images with 2-pixel gaps


def test_an_exported_folder_loads_everywhere_as_the_snapshot(run, tmp_path, capsys, digits):
    folder, g_ema = run
    out = tmp_path / "exported"
    snapshot = folder / "network-snapshot-000001000.safetensors"
    assert main(["export", str(snapshot), "--out", str(out)]) == 0
    for loaded in (vitgan.load(out), vitgan.load(str(out))):
        assert _same_images(loaded, vitgan.load(snapshot)) and loaded.export_info["kimg"] == 1.0
    assert main(["generate", "--ckpt", str(out), "--seeds", "0-3", "--outdir", str(tmp_path / "a")]) == 0
    assert main(["generate", "--ckpt", str(snapshot), "--seeds", "0-3", "--outdir", str(tmp_path / "b")]) == 0
    for name in ("seed0000.png", "grid.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(out), "--data", str(digits), "--metrics", "dfid10"]) == 0
    from_export = json.loads(capsys.readouterr().out)
    assert main(["eval", "--ckpt", str(snapshot), "--data", str(digits), "--metrics", "dfid10"]) == 0
    from_snapshot = json.loads(capsys.readouterr().out)
    assert from_export["results"] == from_snapshot["results"] and from_export["kimg"] == 1.0
    assert json.loads((out / "metrics.jsonl").read_text())["results"] == from_export["results"]


def test_bad_exports_are_one_line_errors(run, tmp_path, capsys):
    folder, _ = run
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "x")]) == 2  # a folder without snapshots
    assert "no network-snapshot-*.safetensors" in capsys.readouterr().err
    out = tmp_path / "exported"
    assert main(["export", str(folder), "--out", str(out)]) == 0
    (out / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors: not a readable safetensors file"):
        vitgan.load(out)
    shutil.rmtree(out)
    out.mkdir()
    (out / "config.json").write_text('{"cfg": {"g_heads": 5}}')
    with pytest.raises(CheckpointError, match=r"config.json: not a vitgan export configuration .*g_heads"):
        vitgan.load(out)
    capsys.readouterr()
    assert main(["generate", "--ckpt", str(tmp_path / "nothing"), "--outdir", str(tmp_path / "o")]) == 2
    assert "nothing" in capsys.readouterr().err


def test_push_to_hub_and_load_a_hub_id_offline(run, tmp_path, monkeypatch):
    hub = pytest.importorskip("huggingface_hub", reason="the hub extra: pip install 'vitgan[hub]'")
    folder, g_ema = run
    generator = vitgan.load(folder / "network-snapshot-000002000.safetensors")
    remote = tmp_path / "remote"
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id))
        return hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        calls.append(("upload_folder", repo_id))
        shutil.copytree(folder_path, remote / repo_id)

    monkeypatch.setattr(hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(hub.HfApi, "upload_folder", upload_folder)
    assert vitgan.push_to_hub(generator, "someone/vitgan-digits") == "https://huggingface.co/someone/vitgan-digits"
    assert calls == [("create_repo", "someone/vitgan-digits"), ("upload_folder", "someone/vitgan-digits")]
    uploaded = remote / "someone" / "vitgan-digits"
    assert {p.name for p in uploaded.iterdir()} >= {"README.md", "config.json", "model.safetensors", "samples.png"}
    assert "library_name: vitgan" in (uploaded / "README.md").read_text()
    assert _same_images(vitgan.load(uploaded), g_ema)
    assert json.loads((uploaded / "config.json").read_text())["kimg"] == 2.0  # the snapshot's info travels
    # a hub id is downloaded with huggingface_hub (here: from the folder the upload went to)
    monkeypatch.setattr(hub, "snapshot_download", lambda repo_id, **kwargs: str(remote / repo_id))
    assert _same_images(vitgan.load("someone/vitgan-digits"), g_ema)

    def offline(repo_id, **kwargs):
        raise OSError("no network\nmore detail")

    monkeypatch.setattr(hub, "snapshot_download", offline)
    with pytest.raises(CheckpointError, match=r"^nobody/none: .*Hugging Face hub \(no network\)$"):
        vitgan.load("nobody/none")


def test_export_never_overwrites_a_folder_that_is_not_an_earlier_export(run, tmp_path, capsys):
    folder, _ = run
    out = tmp_path / "mine"
    out.mkdir()
    (out / "README.md").write_text("my own notes")
    assert main(["export", str(folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not empty and not an earlier vitgan export" in err and "--force" in err
    assert [p.name for p in out.iterdir()] == ["README.md"] and (out / "README.md").read_text() == "my own notes"
    assert main(["export", str(folder), "--out", str(out), "--force"]) == 0  # asked for: other files are kept
    (out / "notes.txt").write_text("kept")
    assert main(["export", str(folder), "--out", str(out)]) == 0  # an earlier export: its files are replaced
    assert (out / "notes.txt").read_text() == "kept"


def test_exports_and_snapshots_are_readable_by_others_as_the_umask_says(run, tmp_path):
    folder, _ = run
    out = tmp_path / "exported"
    assert main(["export", str(folder), "--out", str(out)]) == 0
    for path in [*out.iterdir(), *folder.glob("network-snapshot-*")]:
        assert path.stat().st_mode & 0o777 == 0o644, path  # the tests run with umask 022
    old = os.umask(0o077)
    try:
        assert main(["export", str(folder), "--out", str(tmp_path / "private")]) == 0
    finally:
        os.umask(old)
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in (tmp_path / "private").iterdir())


def test_generate_takes_a_run_folder_as_export_does(run, tmp_path):
    folder, _ = run
    assert main(["generate", "--ckpt", str(folder), "--seeds", "0-1", "--outdir", str(tmp_path / "a")]) == 0
    newest = folder / "network-snapshot-000002000.safetensors"
    assert main(["generate", "--ckpt", str(newest), "--seeds", "0-1", "--outdir", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a" / "seed0001.png").read_bytes() == (tmp_path / "b" / "seed0001.png").read_bytes()
