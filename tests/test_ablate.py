"""`vitgan ablate`: variants, verdicts, and a tiny end-to-end run with its report."""

import json

import pytest

from vitgan.ablate import HAND_WRITTEN, PAPER, RECIPES, _verdict, select
from vitgan.cli import main
from vitgan.config import Config, ConfigError

SMALL = ["--set", "g_dim=32", "--set", "g_depth=1", "--set", "g_heads=2", "--set", "g_mlp_dim=64", "--set",
         "d_dim=32", "--set", "d_depth=1", "--set", "d_heads=2", "--set", "d_mlp_dim=64", "--set", "batch=8"]


def test_every_variant_is_a_valid_configuration_of_the_paper():
    from vitgan import presets

    names = [v.name for v in PAPER]
    assert names[0] == "vitgan" and len(set(names)) == len(names) == 9
    for variant in PAPER:
        overrides = {k: Config.parse_value(k, v) for k, v in variant.overrides.items()}
        presets.get("mnist", **overrides)  # raises on a bad field
    vanilla = next(v for v in PAPER if v.name == "vanilla").overrides
    assert vanilla == {"d_attention": "dot", "d_norm": "none", "d_overlap": "false"}
    assert [v.name for v in select("cnn-d")] == ["vitgan", "cnn-d"]  # the reference is always there
    with pytest.raises(ConfigError, match="^variants: nope"):
        select("nope")
    for recipe in RECIPES:  # the recipe sweep's variants are valid too, the preset's own objective first
        presets.get("mnist", **{k: Config.parse_value(k, v) for k, v in recipe.overrides.items()})
    assert RECIPES[0].overrides == {} and [v.name for v in select("authors", "recipe")] == ["preset", "authors"]
    with pytest.raises(ConfigError, match="^group: 'nope'"):
        select(None, "nope")


def test_verdicts_need_a_difference_beyond_the_spread():
    worse = next(v for v in PAPER if v.name == "no-l2")
    better = next(v for v in PAPER if v.name == "cnn-d")
    assert _verdict(worse, [50.0, 54.0], [20.0, 22.0]).startswith("yes")
    assert _verdict(worse, [10.0, 12.0], [20.0, 22.0]).startswith("no")
    assert _verdict(worse, [21.0, 30.0], [20.0, 22.0]).startswith("inconclusive")
    assert _verdict(better, [10.0, 11.0], [20.0, 22.0]).startswith("yes")
    assert _verdict(worse, [30.0], [20.0]).startswith("yes")  # one seed: 10% of the reference is the bar


def test_a_tiny_ablation_writes_its_report_from_its_raw_records(tmp_path, capsys):
    report = tmp_path / "docs" / "ablation.md"
    args = ["ablate", "--variants", "vanilla", "--seeds", "1", "--kimg", "0.016", "--tick", "0.008", "--samples",
            "100", "--outdir", str(tmp_path / "runs"), "--report", str(report), *SMALL]
    assert main(args) == 0
    text = report.read_text()
    assert "| vitgan |" in text and "| vanilla |" in text and "verdict" in text
    for figure in ("fid.png", "d_sigma.png", "d_grad.png", "samples.png"):
        assert (report.parent / "ablation" / figure).stat().st_size > 0
    records = [json.loads(line) for line in (report.parent / "ablation" / "results.jsonl").read_text().splitlines()]
    assert [(r["variant"], r["seed"], r["kimg"]) for r in records] == [("vitgan", 0, 0.016), ("vanilla", 0, 0.016)]
    for r in records:  # every run saw the same images; its stats are kept beside the report
        stats = (report.parent / "ablation" / "stats" / f"{r['variant']}-seed0.jsonl").read_text().splitlines()
        assert json.loads(stats[-1])["kimg"] == 0.016 and r["samples"] == 100 and r["minutes"] > 0
        assert f"| {r['digit_fid']:.1f} |" in text  # the median of one seed is its FID
    report.write_text(report.read_text() + "\n" + HAND_WRITTEN + "\nA reading.\n")
    assert main(args) == 0  # finished runs are reused, not retrained, and not measured again
    assert capsys.readouterr().out.count("started") == 2
    assert main(["ablate", "--report-only", "--variants", "vanilla", "--report", str(report)]) == 0
    assert report.read_text().endswith(HAND_WRITTEN + "\nA reading.\n")
    # a record of the older measure (G's float outputs, no "pixels") is scored again from its snapshot
    raw = report.parent / "ablation" / "results.jsonl"
    old = [{**r, "digit_fid": 999.0} for r in records]
    del old[1]["pixels"]
    raw.write_text("".join(json.dumps(r) + "\n" for r in old))
    assert main(["ablate", "--report-only", "--variants", "vanilla", "--report", str(report)]) == 0
    again = [json.loads(line) for line in raw.read_text().splitlines()]
    assert again[0]["digit_fid"] == 999.0 and again[1] == records[1]  # the current one kept, the stale one rescored
    old[1]["snapshot"] = str(tmp_path / "gone.safetensors")
    raw.write_text("".join(json.dumps(r) + "\n" for r in old))
    assert main(["ablate", "--report-only", "--variants", "vanilla", "--report", str(report)]) == 2
    assert "gone.safetensors" in capsys.readouterr().err
    assert main(["ablate", "--kimg", "0"]) == 2 and main(["ablate", "--data", "some/folder"]) == 2
    assert main(["ablate", "--minutes", "0"]) == 2


def test_a_wall_clock_cap_reaches_every_run():
    """--minutes M caps each run's wall-clock: every `vitgan train` command gets --minutes M (none without it)."""
    from types import SimpleNamespace

    from vitgan.ablate import _command

    args = SimpleNamespace(preset="mnist", data="mnist", kimg=50.0, tick=5.0, compile=False, override=[], minutes=6.5)
    command = _command(PAPER[1], 2, args, "out")
    assert command[command.index("--minutes") + 1] == "6.5" and command[command.index("--seed") + 1] == "2"
    assert "--minutes" not in _command(PAPER[1], 2, SimpleNamespace(**{**vars(args), "minutes": None}), "out")
