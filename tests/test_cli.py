"""The `vitgan` command line."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vitgan import presets
from vitgan.cli import main
from vitgan.networks import Generator, build_discriminator, count_parameters


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "vitgan", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("presets", "train", "generate"):
        assert command in out


def test_bad_override_is_a_one_line_error(capsys):
    assert main(["train", "--g-heads", "5", "--outdir", "unused-runs"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "vitgan: error: g_heads: 5 must divide g_dim=128"
    assert not Path("unused-runs").exists()


def test_readme_and_presets_state_the_parameter_counts_of_the_built_networks(capsys):
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert main(["presets"]) == 0  # counted on the meta device
    listed = capsys.readouterr().out
    for name in presets.names():
        cfg = presets.get(name)
        g, d = count_parameters(Generator(cfg)), count_parameters(build_discriminator(cfg))
        row = re.search(rf"^\| `{name}` \|.*$", readme, re.MULTILINE)
        assert row, f"README has no row for preset {name}"
        assert f"{g:,}" in row.group(0) and f"{d:,}" in row.group(0), f"README counts for {name} are stale"
        assert re.search(rf"^{name} .* G {g:,} params  D {d:,} params$", listed, re.MULTILINE), name


def test_version_is_the_package_version(capsys):
    from vitgan import __version__

    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    assert re.search(r'^version = "(.*)"$', pyproject, re.MULTILINE).group(1) == __version__
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"vitgan {__version__}"


def test_bench_help_names_the_preset_it_uses(capsys, monkeypatch):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    named = re.search(r"--preset PRESET .*?\(default: (\w+)\)", " ".join(capsys.readouterr().out.split())).group(1)
    used = []
    monkeypatch.setattr("vitgan.bench.run_benchmark", lambda cfg, preset, **kwargs: used.append(preset) or {})
    assert main(["bench", "--precision", "fp32", "--device", "cpu"]) == 0
    assert used == [named]


def test_bench_prints_every_figure(capsys, tmp_path):
    out = tmp_path / "bench.jsonl"
    args = ["bench", "--preset", "mnist", "--batch", "4", "--d-dim", "32", "--d-depth", "1", "--d-heads", "2",
            "--d-mlp-dim", "64", "--g-dim", "32", "--g-depth", "1", "--g-heads", "2", "--g-mlp-dim", "64",
            "--repeats", "1", "--precision", "fp32", "--out", str(out)]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("d_fwd_bwd_ms", "vit_fwd_bwd_ms", "g_fwd_bwd_ms", "iteration_ms", "images_per_s", "iteration_gflop",
                "gemm_fp32_gflops_per_s", "peak_memory_mb"):
        assert result[key] > 0, key
    assert result["d_vs_vit"] == pytest.approx(result["d_fwd_bwd_ms"] / result["vit_fwd_bwd_ms"], rel=0.01)
    assert json.loads(out.read_text()) == result
    assert main(["bench", "--repeats", "0"]) == 2
