"""The `vitgan` command line."""

import re
import subprocess
import sys
from pathlib import Path

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


def test_readme_states_measured_parameter_counts():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for name in presets.names():
        cfg = presets.get(name)
        g, d = count_parameters(Generator(cfg)), count_parameters(build_discriminator(cfg))
        row = re.search(rf"^\| `{name}` \|.*$", readme, re.MULTILINE)
        assert row, f"README has no row for preset {name}"
        assert f"{g:,}" in row.group(0) and f"{d:,}" in row.group(0), f"README counts for {name} are stale"
