"""`vitgan ablate`: variants, verdicts, and a tiny end-to-end run with its report."""

import pytest

from vitgan.ablate import VARIANTS, _verdict, select
from vitgan.cli import main
from vitgan.config import Config, ConfigError

SMALL = ["--set", "g_dim=32", "--set", "g_depth=1", "--set", "g_heads=2", "--set", "g_mlp_dim=64", "--set",
         "d_dim=32", "--set", "d_depth=1", "--set", "d_heads=2", "--set", "d_mlp_dim=64", "--set", "batch=8"]


def test_every_variant_is_a_valid_configuration_of_the_paper():
    from vitgan import presets

    names = [v.name for v in VARIANTS]
    assert names[0] == "vitgan" and len(set(names)) == len(names) == 9
    for variant in VARIANTS:
        overrides = {k: Config.parse_value(k, v) for k, v in variant.overrides.items()}
        presets.get("mnist", **overrides)  # raises on a bad field
    vanilla = next(v for v in VARIANTS if v.name == "vanilla").overrides
    assert vanilla == {"d_attention": "dot", "d_norm": "none", "d_overlap": "false"}
    assert [v.name for v in select("cnn-d")] == ["vitgan", "cnn-d"]  # the reference is always there
    with pytest.raises(ConfigError, match="^variants: nope"):
        select("nope")


def test_verdicts_need_a_difference_beyond_the_spread():
    worse = next(v for v in VARIANTS if v.name == "no-l2")
    better = next(v for v in VARIANTS if v.name == "cnn-d")
    assert _verdict(worse, [50.0, 54.0], [20.0, 22.0]).startswith("yes")
    assert _verdict(worse, [10.0, 12.0], [20.0, 22.0]).startswith("no")
    assert _verdict(worse, [21.0, 30.0], [20.0, 22.0]).startswith("inconclusive")
    assert _verdict(better, [10.0, 11.0], [20.0, 22.0]).startswith("yes")
    assert _verdict(worse, [30.0], [20.0]).startswith("yes")  # one seed: 10% of the reference is the bar


def test_a_tiny_ablation_writes_its_report(tmp_path, capsys):
    report = tmp_path / "docs" / "ablation.md"
    args = ["ablate", "--variants", "vanilla", "--seeds", "1", "--budget", "0.05", "--tick", "0.1", "--samples",
            "100", "--outdir", str(tmp_path / "runs"), "--report", str(report), *SMALL]
    assert main(args) == 0
    text = report.read_text()
    assert "| vitgan |" in text and "| vanilla |" in text and "agrees here?" in text
    for figure in ("fid.png", "d_sigma.png", "d_grad.png", "samples.png"):
        assert (report.parent / "ablation" / figure).stat().st_size > 0
    assert main(args) == 0  # finished runs are reused, not retrained
    assert capsys.readouterr().out.count("started") == 2
    assert main(["ablate", "--budget", "0"]) == 2 and main(["ablate", "--data", "some/folder"]) == 2
