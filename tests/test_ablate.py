"""`vitgan ablate`: variants, verdicts, and a tiny end-to-end run with its report."""

import argparse
import json
from pathlib import Path

import pytest

from vitgan.ablate import GROUPS, HAND_WRITTEN, PAPER, RECIPES, Variant, select
from vitgan.ablate.report import _verdict
from vitgan.ablate.runner import command
from vitgan.ablate.variants import RUN_SWITCHES
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
        presets.get("mnist", **{k: Config.parse_value(k, v) for k, v in recipe.overrides.items()
                                if k not in RUN_SWITCHES})
    cond = next(v for v in RECIPES if v.name == "cond")  # a switch of `vitgan train`: --cond, without a value
    line = command(cond, 0, argparse.Namespace(preset="mnist", data="mnist", kimg=1.0, tick=1.0, compile=False,
                                               minutes=None, override=[]), Path("runs"))
    assert line[-1] == "--cond" and "true" not in line
    assert RECIPES[0].overrides == {} and [v.name for v in select("authors", "recipe")] == ["preset", "authors"]
    with pytest.raises(ConfigError, match="^group: 'nope'"):
        select(None, "nope")


def test_variant_names_are_unique_in_every_group(monkeypatch):
    """A variant's name names its run folders and records: a name defined twice in a group (the recipe group's
    r1-0.1 once was) trains twice into one folder, so every group's names are unique and a duplicate is refused."""
    from vitgan.ablate import variants

    assert set(GROUPS) == {"paper", "recipe", "stacked"}
    for group, members in GROUPS.items():
        names = [v.name for v in members]
        assert len(names) == len(set(names)), group
        assert [v.name for v in select(",".join(names), group)] == names  # each name selects its one variant
    r1 = [v.why for v in RECIPES if v.name == "r1-0.1"]
    assert r1 == ["R1 at a tenth of the preset's weight (the authors' gamma)"]  # the one benchmarks/recipe.md records
    twice = [Variant("a", {}, "reference"), Variant("b"), Variant("b", {"g_lr": "1e-3"})]
    with pytest.raises(ValueError, match="recipe group defines b more than once"):
        variants.unique("recipe", twice)  # as the catalogue defines each group
    monkeypatch.setitem(GROUPS, "paper", twice)
    with pytest.raises(ValueError, match="paper group defines b more than once"):
        select(None, "paper")


def test_verdicts_need_a_difference_beyond_the_spread():
    worse = next(v for v in PAPER if v.name == "no-l2")
    better = next(v for v in PAPER if v.name == "cnn-d")
    def runs(*fids):  # None: a seed that diverged
        return [{"digit_fid": f, "diverged": "loss_d became nan" if f is None else None} for f in fids]

    assert _verdict(worse, runs(50.0, 54.0), runs(20.0, 22.0)).startswith("yes")
    assert _verdict(worse, runs(10.0, 12.0), runs(20.0, 22.0)).startswith("no")
    assert _verdict(worse, runs(21.0, 30.0), runs(20.0, 22.0)).startswith("inconclusive")
    assert _verdict(better, runs(10.0, 11.0), runs(20.0, 22.0)).startswith("yes")
    assert _verdict(worse, runs(30.0), runs(20.0)).startswith("yes")  # one seed: 10% of the reference is the bar
    # more seeds diverged than the reference's: less stable whatever the FID of the seeds that held
    assert _verdict(worse, runs(None, 10.0), runs(20.0, 22.0)) == "yes: 1 of 2 seeds diverged, the reference's 0 of 2"
    assert _verdict(better, runs(None, 10.0), runs(20.0, 22.0)).startswith("no: 1 of 2")
    assert _verdict(worse, runs(None, 50.0), runs(None, 20.0)).startswith("yes: FID 50.0")  # as often: the FIDs
    assert _verdict(worse, runs(None), runs(None)).startswith("inconclusive")
    # a report whose reference has no run (its group's reference changed after it was recorded) judges nothing
    assert _verdict(better, runs(10.0, 11.0), []) == "none (the reference has no run in this report)"
    # a run a --minutes cap stopped at 130 kimg is not judged against a reference trained to 240
    short, full = [{"digit_fid": 10.0, "kimg": 130.0}], [{"digit_fid": 20.0, "kimg": 240.0}]
    assert _verdict(better, short, full) == ("not comparable (trained 130 kimg, the reference 240: a --minutes cap "
                                             "ended it early)")
    assert _verdict(better, [{"digit_fid": 10.0, "kimg": 240.0}], full).startswith("yes")


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
    # a folder that trained another configuration (here: another --set) or length is refused, not taken as this run
    for changed in (["--set", "d_mlp_dim=32"], ["--kimg", "0.024"]):
        assert main([*args, *changed]) == 2
        assert "trained another configuration than vitgan asks" in capsys.readouterr().err
    import shutil

    shutil.move(tmp_path / "runs", tmp_path / "elsewhere")  # another machine: the runs are gone, the records are not
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "started" not in out and out.count("kept as recorded") == 2
    assert [json.loads(line) for line in (report.parent / "ablation" / "results.jsonl").read_text().splitlines()] \
        == records
    shutil.move(tmp_path / "elsewhere", tmp_path / "runs")
    (report.parent / "ablation" / "samples.png").unlink()
    assert main(["ablate", "--report-only", "--variants", "vanilla", "--report", str(report)]) == 0
    assert report.read_text().endswith(HAND_WRITTEN + "\nA reading.\n")
    assert (report.parent / "ablation" / "samples.png").stat().st_size > 0  # drawn again from the snapshots
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


def test_a_diverged_run_is_reported_as_such(tmp_path, monkeypatch, capsys):
    """A run stopped by a NaN is a result (the kimg where it stopped, no FID; less stable than the reference), not a
    reason to lose the report; the report is written even when the reference itself diverged."""
    from vitgan import ablate

    boom = ablate.Variant("boom", {"g_lr": "1e30", "d_lr": "1e30"}, "worse", "steps of 1e30 overflow at once")
    monkeypatch.setitem(ablate.GROUPS, "paper", [PAPER[0], boom])
    report = tmp_path / "report.md"

    def run(variants, outdir):
        return main(["ablate", "--variants", variants, "--seeds", "1", "--kimg", "0.016", "--tick", "0.008",
                     "--samples", "100", "--outdir", str(tmp_path / outdir), "--report", str(report), *SMALL])

    assert run("boom", "runs") == 0
    lines = (tmp_path / "report" / "results.jsonl").read_text().splitlines()
    records = {r["variant"]: r for r in map(json.loads, lines)}
    stopped = records["boom"]
    assert "became" in stopped["diverged"] and stopped["digit_fid"] is None and stopped["snapshot"] is None
    assert 0 <= stopped["kimg"] < 0.016 and records["vitgan"]["digit_fid"] > 0
    text = report.read_text()
    assert f"diverged at {stopped['kimg']:g} kimg" in text and "yes: 1 of 1 seeds diverged" in text
    assert (tmp_path / "report" / "samples.png").stat().st_size > 0  # the reference's row alone
    capsys.readouterr()
    assert run("boom", "runs") == 0 and "started" not in capsys.readouterr().out  # a diverged run is not redone
    assert json.loads((tmp_path / "report" / "results.jsonl").read_text().splitlines()[-1]) == stopped
    monkeypatch.setitem(ablate.GROUPS, "paper", [ablate.Variant("vitgan", boom.overrides, "reference")])
    assert run("vitgan", "again") == 0
    assert "| vitgan |" in report.read_text() and "diverged at" in report.read_text()


def test_a_sample_sheet_is_kept_when_a_snapshot_is_gone(tmp_path):
    """A report regenerated where the runs are not (a clean clone) keeps its committed sample sheet."""
    from vitgan.ablate.report import _sample_sheet

    sheet = tmp_path / "samples.png"
    sheet.write_bytes(b"committed")
    _sample_sheet([{"variant": "vitgan", "snapshot": str(tmp_path / "gone.safetensors")}], sheet)
    _sample_sheet([{"variant": "boom", "snapshot": None, "diverged": "loss_d became nan"}], sheet)
    assert sheet.read_bytes() == b"committed"


def test_a_wall_clock_cap_reaches_every_run():
    """--minutes M caps each run's wall-clock: every `vitgan train` command gets --minutes M (none without it)."""
    from types import SimpleNamespace

    from vitgan.ablate.runner import command as _command

    args = SimpleNamespace(preset="mnist", data="mnist", kimg=50.0, tick=5.0, compile=False, override=[], minutes=6.5)
    command = _command(PAPER[1], 2, args, "out")
    assert command[command.index("--minutes") + 1] == "6.5" and command[command.index("--seed") + 1] == "2"
    assert "--minutes" not in _command(PAPER[1], 2, SimpleNamespace(**{**vars(args), "minutes": None}), "out")


def test_a_stacked_mnist_report_tables_modes_and_kl_and_judges_on_the_kl(tmp_path):
    """StackedMNIST records (with modes) get the modes table: modes and KL with their spread, each seed listed, the
    channels' digit FID, the fewest modes at a tick, and a verdict on the KL (lower is better) beyond the spread."""
    from vitgan.ablate import STACKED
    from vitgan.ablate.report import write_report

    def record(variant, seed, modes, kl, fewest):
        return {"variant": variant, "seed": seed, "overrides": {}, "samples": 26000, "kimg": 100.0, "minutes": 30.0,
                "sigma": 1.5, "grad": 2.0, "min_classes_later": 10, "min_modes_later": fewest, "modes": modes,
                "kl": kl, "confidence": 0.9, "digit_fid": 20.0, "classes": 10, "snapshot": None}

    records = [record("vitgan", 0, 900, 0.50, 700), record("vitgan", 1, 920, 0.40, 720),
               record("rpgan", 0, 999, 0.05, 950), record("rpgan", 1, 1000, 0.04, 960)]
    stats = tmp_path / "stacked" / "stats"
    stats.mkdir(parents=True)
    for r in records:
        rows = [{"kimg": k, "modes": r["modes"] - 10 * (10 - k), "modes_kl": r["kl"] + 0.01 * (10 - k),
                 "digit_fid": 30.0, "d_sigma_max": 1.5, "grad_d": 2.0} for k in range(1, 11)]
        (stats / f"{r['variant']}-seed{r['seed']}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    text = write_report(records, STACKED, "# header", tmp_path / "stacked.md")
    assert "| modes of 1,000 (mean +- sd) | KL (mean +- sd) |" in text
    assert "| 910.0 +- 14.1 | 0.450 +- 0.071 | 900 / 0.500, 920 / 0.400 |" in text  # mean, sd, and each seed
    assert "| 999.5 +- 0.7 | 0.045 +- 0.007 | 999 / 0.050, 1000 / 0.040 |" in text
    assert "| 700 |" in text and "KL 0.045 vs the reference's 0.450 (better)" in text
    for figure in ("modes.png", "kl.png", "fid.png"):
        assert (tmp_path / "stacked" / figure).stat().st_size > 0


def test_two_ablate_commands_writing_one_report_keep_each_others_records(tmp_path, monkeypatch):
    """A sweep in chunks run side by side: a record that another command wrote while this one measured (minutes after
    this one read the file) is kept when this one writes its own."""
    from vitgan.ablate import report
    from vitgan.fileio import read_jsonl

    raw = tmp_path / "stacked"
    raw.mkdir()
    earlier = {"variant": "vitgan", "seed": 0, "pixels": "uint8", "modes": 26}
    (raw / "results.jsonl").write_text(json.dumps(earlier) + "\n")
    theirs = {"variant": "no-saturation", "seed": 0, "pixels": "uint8", "modes": 30}
    mine = {"variant": "rpgan", "seed": 0, "pixels": "uint8", "modes": 611}

    def measured_while_the_other_command_finished(*args):
        with (raw / "results.jsonl").open("a") as f:
            f.write(json.dumps(theirs) + "\n")
        return mine

    monkeypatch.setattr(report, "_record", measured_while_the_other_command_finished)
    run = tmp_path / "runs" / "rpgan-seed0"
    run.mkdir(parents=True)
    out = report.measure([{"variant": Variant("rpgan", {}, "compare"), "seed": 0, "run": run}], 100, raw, "cmd")
    assert out == [earlier, theirs, mine] and read_jsonl(raw / "results.jsonl") == [earlier, theirs, mine]
