"""The `vitgan` command line."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from vitgan import presets
from vitgan.cli import main
from vitgan.networks import Generator, build_discriminator, count_parameters


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "vitgan", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("presets", "sample"):
        assert command in out


def test_sample_writes_a_grid(tmp_path):
    out = tmp_path / "grid.png"
    assert main(["sample", "--seeds", "0-3", "--out", str(out), "--g-depth", "1"]) == 0
    image = np.asarray(Image.open(out))
    assert image.shape == (2 + 2 * 34, 2 + 2 * 34)  # 2x2 grid of 32x32 grayscale images, 2-pixel padding
    assert image.std() > 0


def test_bad_override_is_a_one_line_error(capsys):
    assert main(["sample", "--g-heads", "5", "--out", "unused.png"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "vitgan: error: g_heads: 5 must divide g_dim=128"
    assert not Path("unused.png").exists()


def test_readme_states_measured_parameter_counts():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for name in presets.names():
        cfg = presets.get(name)
        g, d = count_parameters(Generator(cfg)), count_parameters(build_discriminator(cfg))
        row = re.search(rf"^\| `{name}` \|.*$", readme, re.MULTILINE)
        assert row, f"README has no row for preset {name}"
        assert f"{g:,}" in row.group(0) and f"{d:,}" in row.group(0), f"README counts for {name} are stale"
