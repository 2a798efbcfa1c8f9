"""The `vitgan` command line."""

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vitgan import Config, presets
from vitgan.cli import main
from vitgan.errors import one_line
from vitgan.networks import Generator, build_discriminator, count_parameters
from vitgan.training.options import RunOptions


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "vitgan", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("presets", "train", "generate"):
        assert command in out


def test_bad_override_is_a_one_line_error(capsys):
    assert main(["train", "--g-heads", "5", "--outdir", "unused-runs"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "vitgan: error: --g-heads: 5 must divide g_dim=128"
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


TINY_BENCH = ["bench", "--preset", "mnist", "--batch", "4", "--d-dim", "32", "--d-depth", "1", "--d-heads", "2",
              "--d-mlp-dim", "64", "--g-dim", "32", "--g-depth", "1", "--g-heads", "2", "--g-mlp-dim", "64",
              "--repeats", "1"]


def test_bench_prints_every_figure(capsys, tmp_path):
    out = tmp_path / "bench.jsonl"
    assert main([*TINY_BENCH, "--precision", "fp32", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("d_fwd_bwd_ms", "vit_fwd_bwd_ms", "g_fwd_bwd_ms", "iteration_ms", "images_per_s", "iteration_gflop",
                "gemm_fp32_gflops_per_s", "peak_memory_mb"):
        assert result[key] > 0, key
    assert result["d_vs_vit"] == pytest.approx(result["d_fwd_bwd_ms"] / result["vit_fwd_bwd_ms"], rel=0.01)
    assert json.loads(out.read_text()) == result
    assert main(["bench", "--repeats", "0"]) == 2


def test_bench_in_fp16_names_it(capsys, monkeypatch):
    monkeypatch.setattr("vitgan.bench.gemm_gflops", lambda device, dtype: 1.0)  # (fp16 GEMMs are slow on a CPU)
    assert main([*TINY_BENCH, "--precision", "fp16"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["precision"] == "fp16" and result["iteration_ms"] > 0
    assert result["gemm_fp16_gflops_per_s"] == 1.0 and "gemm_bf16_gflops_per_s" not in result


@pytest.mark.parametrize("typed", ["\r", "a\nb", "\u2028", "\x85", "\udc80\x1b[2J"])
def test_an_error_is_one_line_whatever_the_user_typed(capsys, typed):
    assert main(["train", "--dry-run", "--resume", typed, "--outdir", "unused-runs"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("vitgan: error: "), err
    assert one_line(typed) in err and one_line(typed).isprintable()
    with pytest.raises(SystemExit):  # argparse's own errors quote what was typed too
        main(["train", "--dry-run", typed])
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("vitgan: error: unrecognized arguments: ") and one_line(typed) in last


@pytest.mark.parametrize(("argv", "said"), [
    (["train", "--dry-run", "--g-lr", "nan"], "--g-lr: expected a finite number, got nan"),
    (["train", "--dry-run", "--kimg", "-1"], "--kimg: must be positive, got -1.0"),
    (["train", "--dry-run", "--batch", "many"], "--batch: cannot read 'many' as int"),
    (["train", "--dry-run", "--batch", "7"],
     "--batch: must be a multiple of 4 (d_mbstd_group 4 x d_pack 1), got 7; e.g. 4 or 8"),
    (["train", "--dry-run", "--tick", "0"], "--tick: must be a positive number, got 0.0"),  # the field tick_kimg
    (["train", "--dry-run", "--batch-gpu", "0"], "--batch-gpu: must be positive, got 0"),
    (["train", "--dry-run", "--device", "cpu", "--ranks", "3"], "--ranks: 3 ranks cannot share batch 16 in whole "
     "multiples of 4 images (D's pack times its minibatch-std group): use 2 or 4 ranks, or a batch that is a "
     "multiple of 12 (e.g. 12 or 24)"),
    (["train", "--dry-run", "--preset", "nope"], "--preset: unknown preset 'nope'; choose one of "),
    (["bench", "--d-lr", "inf"], "--d-lr: expected a finite number, got inf"),
    (["bench", "--repeats", "0"], "--repeats: must be positive, got 0"),
    (["generate", "--ckpt", "unused", "--batch", "0"], "--batch: must be positive, got 0"),
    (["generate", "--ckpt", "unused", "--seeds", "x"], "--seeds: cannot read 'x'; use a list like 0-63 or 1,5,9"),
    (["eval", "--gen", "unused", "--batch", "0"], "--batch: must be positive, got 0"),
    (["eval", "--gen", "unused", "--max-real", "1"], "--max-real: must be at least 2 images, got 1"),
])
def test_an_error_about_an_option_names_the_flag_as_typed(capsys, argv, said):
    """The Config field (`g_lr`) is the Python API's name; on the command line the error names the flag."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(f"vitgan: error: {said}"), err


def test_the_python_api_keeps_the_field_names():
    from vitgan.config import ConfigError

    with pytest.raises(ConfigError, match=r"^g_lr: expected a finite number, got nan$"):
        presets.get("mnist", g_lr=float("nan"))
    with pytest.raises(ConfigError, match=r"^tick_kimg: "):
        RunOptions(tick_kimg=0).check()


def _help(*command: str) -> str:
    """The help of `vitgan COMMAND`, whitespace collapsed (a wide terminal: argparse wraps at hyphens too)."""
    out = subprocess.run([sys.executable, "-m", "vitgan", *command, "--help"], capture_output=True, text=True,
                         check=True, env={**os.environ, "COLUMNS": "10000"}).stdout
    return " ".join(out.split())


def test_help_gives_each_option_its_meaning_and_its_default_once():
    text = _help("train")
    assert "(default: None)" not in text
    defaults = presets.get("mnist")  # train's defaults are its default preset's
    for cls, values in ((Config, defaults), (RunOptions, RunOptions())):
        for field in dataclasses.fields(cls):
            if not field.metadata.get("cli", True):
                continue
            meaning = " ".join(field.metadata["help"].split())
            assert meaning in text, field.name
            after = text.split(meaning, 1)[1]
            value = getattr(values, field.name)
            if value is None or (value is False and cls is RunOptions):  # a switch: no default to show
                assert re.match(" (--|run options)|$", after), (field.name, after[:40])
            else:
                shown = str(value).lower() if isinstance(value, bool) else str(value)
                assert re.match(rf" \(default: {re.escape(shown)}\) (--|run options)", after), (field.name, after[:40])
    bench = _help("bench")
    assert "(default: cifar10)" in bench and f"(default: {presets.get('cifar10').batch})" in bench
    assert "the device: cuda where there is one (auto), cpu, cuda or cuda:N (default: auto)" in _help("generate")


def test_dry_run_opens_the_data(tmp_path, capsys, digits):
    assert main(["train", "--dry-run", "--data", str(digits), "--batch", "4"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["data"] == {"name": digits.name, "num_images": 12, "shape": [1, 32, 32]}
    assert main(["train", "--dry-run", "--data", str(digits)]) == 2  # mnist's batch of 16 > 12 images
    assert capsys.readouterr().err.strip() == f"vitgan: error: --batch: 16 is larger than the 12 images of {digits}"
    assert main(["train", "--dry-run", "--data", str(tmp_path / "missing")]) == 2
    assert str(tmp_path / "missing") in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not Path("runs").exists()


def test_a_training_command_re_runs_itself_with_passive_openmp_waiting(monkeypatch):
    """train/bench/eval from the command line re-run themselves once with OMP_WAIT_POLICY=PASSIVE (and glibc's
    malloc tunables) unless set: spinning OpenMP threads beside another busy process made a 2-thread iteration ~5x
    slower (benchmarks/results/cpu_contention_beside_ablation.jsonl). A value the user set, even empty, is kept."""
    from vitgan import cli, launch

    assert launch.runtime_env({})["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "OMP_WAIT_POLICY" not in launch.runtime_env({"OMP_WAIT_POLICY": ""})
    assert launch.runtime_env({"OMP_WAIT_POLICY": "ACTIVE", "GLIBC_TUNABLES": ""}) == {}

    class Rerun(Exception):
        pass

    def execv(path, args):
        raise Rerun(args, dict(os.environ))

    monkeypatch.setattr(os, "execv", execv)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(sys, "argv", ["vitgan", "bench", "--repeats", "1"])
    with pytest.raises(Rerun) as rerun:
        cli.main()
    args, env = rerun.value.args
    assert args[1:] == ["-m", "vitgan", "bench", "--repeats", "1"] and env["OMP_WAIT_POLICY"] == "PASSIVE"
