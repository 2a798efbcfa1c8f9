"""`vitgan ablate`: the paper's stability ablation (and the recipe sweep) at small scale, with one command and a report.

Every variant trains the same preset on the same data for the same number of images (`--kimg`) and seeds (one
`vitgan train` process per run, `--jobs` at a time, one CPU thread each by default), so a cheaper variant does not
see more images. Each finished run is then measured once: its final EMA generator's digit FID and class coverage on
5,000 fixed samples, and its per-tick stats (digit FID on 1,000 samples, classes, D's largest singular value and
gradient norm). These raw records are kept beside the report (`<report folder>/<report name>/results.jsonl` and
`stats/<variant>-seed<N>.jsonl`), and the report is written from them alone, so `--report-only` regenerates it from
the committed files: a plot of digit FID against kimg, D's norms against kimg, a table of final digit FIDs with the
spread over seeds, the wall-clock beside it, a grid of samples per variant, and per variant whether the small-scale
result agrees with the paper's claim.

`variants` holds the catalogue (the groups and `select`), `runner` the training processes, `report` the measurement
and the report; `ablate(args)` here is what `vitgan ablate` calls.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from vitgan.ablate.report import HAND_WRITTEN, _sample_sheet, measure, rescore, write_report
from vitgan.ablate.runner import DIVERGED, run_all
from vitgan.ablate.variants import DEFAULTS, GROUPS, PAPER, RECIPES, STACKED, Variant, select
from vitgan.config import ConfigError
from vitgan.fileio import read_jsonl

__all__ = ["DEFAULTS", "DIVERGED", "GROUPS", "HAND_WRITTEN", "PAPER", "RECIPES", "STACKED", "Variant", "ablate",
           "measure", "rescore", "run_all", "select", "write_report"]


MEASURED_DATA = ("mnist", "stacked-mnist")  # the data whose runs the report can score: digit FID; modes


def _check(args: Any) -> None:
    if not args.kimg > 0:
        raise ConfigError(f"kimg: must be a positive number of thousands of images, got {args.kimg}")
    if args.jobs < 1:
        raise ConfigError(f"jobs: must be positive, got {args.jobs}")
    if args.threads < 1:
        raise ConfigError(f"threads: must be positive, got {args.threads}")
    if args.minutes is not None and not args.minutes > 0:
        raise ConfigError(f"minutes: must be a positive number, got {args.minutes}")
    if args.data not in MEASURED_DATA:
        raise ConfigError(f"data: the ablation's measures need the bundled digits ({' or '.join(MEASURED_DATA)}), "
                          f"got {args.data!r}")


def _machine() -> str:
    from vitgan.training.device import device_name

    cpu = device_name(torch.device("cpu")).split(" (")[0]
    return f"{device_name(torch.device('cuda'))} (training on CUDA), {cpu}" if torch.cuda.is_available() else cpu


def _records(args: Any, variants: list[Variant], raw: Path) -> list[dict[str, Any]]:
    """The records of `variants` in raw/results.jsonl (with --report-only), or of the runs trained (or reused) now
    and measured, in the variants' order, each variant's seeds in order."""
    order = [v.name for v in variants]
    if args.report_only:
        records = [r for r in rescore(raw) if r["variant"] in order]
        if not records:
            raise ConfigError(f"report: no recorded runs of these variants in {raw / 'results.jsonl'}")
    else:
        recorded = {(r["variant"], r["seed"]): r for r in read_jsonl(raw / "results.jsonl")}
        results = run_all(variants, args.seed_list, args, Path(args.outdir), recorded)
        if not any(r["variant"] is variants[0] for r in results):  # diverged runs are results; a crash is not
            raise ConfigError(f"variants: the {variants[0].name} reference run failed; see its console.txt")
        results.sort(key=lambda r: (order.index(r["variant"].name), r["seed"]))
        command = (f"vitgan ablate {' '.join(args.argv)}` ({args.jobs} runs at a time with {args.threads} CPU "
                   f"thread(s) each, {torch.__version__}, {_machine()}, {time.strftime('%Y-%m-%d')}")
        records = [r for r in measure(results, args.samples, raw, command) if r["variant"] in order]
    records.sort(key=lambda r: (order.index(r["variant"]), r["seed"]))
    return records


def _header(args: Any, records: list[dict[str, Any]]) -> str:
    commands = list(dict.fromkeys(r["command"] for r in records))
    return "\n".join([
        f"# {DEFAULTS[args.group].title} at small scale: every variant at "
        f"{max(r['kimg'] for r in records):g} kimg",
        "",
        f"Every variant trained the `{args.preset}` preset on `{args.data}` for the same number of images, seeds "
        f"{', '.join(str(s) for s in dict.fromkeys(r['seed'] for r in records))}; the runs come from "
        + "; ".join(f"`{c}" for c in commands) + ".",
    ])


def ablate(args: Any) -> Path:
    """Train (or reuse) every run of the selected variants, measure them and write the report; with
    `args.report_only` write the report from its recorded runs alone. Returns the report's path."""
    _check(args)
    variants = select(args.variants, args.group)
    report = Path(args.report)
    raw = report.parent / report.stem
    records = _records(args, variants, raw)
    _sample_sheet(records, raw / "samples.png")
    text = write_report(records, variants, _header(args, records), report)
    print(text)
    return report
