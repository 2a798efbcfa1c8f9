"""Measuring and reporting `vitgan ablate`'s runs: each finished run's final digit FID and class coverage, and on
StackedMNIST its modes and their KL divergence from uniform (its raw record kept in
`<report folder>/<report name>/results.jsonl`, its per-tick stats in `stats/`), and the report written from those
records alone: the figures (the measure and D's norms against kimg, a sheet of samples per variant), the table of
final measures with their spread over seeds, and the verdict on each variant's claim. A record with `modes` is a
StackedMNIST run's: its verdict is on the KL, else on the digit FID."""

from __future__ import annotations

import functools
import json
import re
import shutil
import statistics
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from vitgan.ablate.variants import Variant
from vitgan.config import ConfigError
from vitgan.fileio import atomic_write, read_jsonl
from vitgan.training.checkpoint import newest_snapshot

COLLAPSE_AFTER_KIMG = 20.0  # the fewest classes at any tick after this many kimg tells whether a run collapsed later
HAND_WRITTEN = "<!-- written by hand below: kept when the report is regenerated -->"


# --- measurement ---
@functools.cache
def _digit_fid() -> Any:
    """The digit measure against all 5,000 bundled digits (their statistics computed once for every run)."""
    from vitgan.data import load_mnist5k
    from vitgan.metrics.digits import DigitFID

    return DigitFID.of(load_mnist5k())


def final_digit_fid(snapshot: Path, samples: int) -> dict[str, float]:
    """Digit FID and class coverage of a snapshot's EMA generator on `samples` fixed seeds (scored as uint8 pixels,
    as saved images: `vitgan.metrics.digits.classify`); for a 3-channel (StackedMNIST) generator also its modes, KL
    and confidence (`vitgan.metrics.modes`), the digit measures then over every channel as a digit. A conditional
    generator draws its samples with labels as the bundled data's (`label_draws`) and adds its class agreement
    (`agreement`, `agreement_worst`: the digit, or the mode, the classifier gives each sample against its label)."""
    from vitgan.data import load_builtin
    from vitgan.metrics.digits import class_agreement, classify
    from vitgan.metrics.modes import channel_digits, mode_of, stacked_scores
    from vitgan.pretrained import load
    from vitgan.sampling import generate, label_draws, latents

    generator = load(snapshot, device="cuda" if torch.cuda.is_available() else "cpu")
    stacked = generator.cfg.channels == 3
    labels = (label_draws(load_builtin("stacked-mnist" if stacked else "mnist").labels, samples)
              if generator.cfg.cond else None)
    images = generate(generator, latents(range(100_000, 100_000 + samples), generator.z_dim), labels, batch=250)
    feats, probs = classify(_digit_fid().net, channel_digits(images) if stacked else images)
    if stacked:
        scores, predicted = stacked_scores(_digit_fid(), feats, probs), mode_of(probs.reshape(-1, 3, probs.shape[1]))
    else:
        scores, predicted = _digit_fid().score(feats, probs), probs.argmax(axis=1)
    if labels is not None:
        scores.update(class_agreement(predicted, labels.numpy()))
    return scores


def _merge_records(raw: Path, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """raw/results.jsonl with `records` in it: each replaces the one of its (variant, seed) in place, the others are
    appended. The file is read again and written under a lock, so that two `vitgan ablate` commands writing one report
    (a sweep in chunks, side by side) both keep theirs: a command's first read is minutes old. Returns every record."""
    with FileLock(raw / "results.jsonl.lock"):
        merged = {(r["variant"], r["seed"]): r for r in read_jsonl(raw / "results.jsonl")}
        merged.update(((r["variant"], r["seed"]), r) for r in records)
        text = "".join(json.dumps(r) + "\n" for r in merged.values())
        atomic_write(raw / "results.jsonl", lambda tmp: Path(tmp).write_text(text))
    return list(merged.values())


def rescore(raw: Path) -> list[dict[str, Any]]:
    """The records of raw/results.jsonl, those that scored G's float outputs (written before 2026-11-27, without
    "pixels") scored again from their snapshots as uint8 pixels, everything else kept; the file is rewritten."""
    records = read_jsonl(raw / "results.jsonl")
    stale = [r for r in records if r.get("pixels") != "uint8" and not r.get("diverged")]
    for r in stale:
        if not Path(r["snapshot"]).is_file():
            raise ConfigError(f"report: {r['snapshot']} (the run of {r['variant']} seed {r['seed']}) is gone; its "
                              "record scored G's float outputs and cannot be scored again")
        r.update(final_digit_fid(Path(r["snapshot"]), r["samples"]), pixels="uint8")
    return _merge_records(raw, stale) if stale else records


def _record(variant: Variant, seed: int, run: Path, stats: Path, diverged: str | None, samples: int,
            command: str) -> dict[str, Any]:
    """The record of one run measured now, from its per-tick stats and (unless it diverged) its final snapshot."""
    rows = [row for row in read_jsonl(stats) if "kimg" in row]
    later = [row["classes"] for row in rows if row["kimg"] > COLLAPSE_AFTER_KIMG and "classes" in row]
    modes_later = [row["modes"] for row in rows if row["kimg"] > COLLAPSE_AFTER_KIMG and "modes" in row]
    last = rows[-1] if rows else {}
    record = {
        "variant": variant.name, "seed": seed, "overrides": variant.overrides, "samples": samples,
        "pixels": "uint8", "kimg": last.get("kimg", 0.0), "minutes": last.get("time", 0.0) / 60,
        "sigma": last.get("d_sigma_max", float("nan")), "grad": last.get("grad_d", float("nan")),
        "min_classes_later": min(later) if later else None, "command": command,
    }
    if modes_later:  # a StackedMNIST run: the fewest modes at a tick (5,000 samples) after the start
        record["min_modes_later"] = min(modes_later)
    if diverged:  # no final generator to measure: where and how it stopped
        at = re.search(r"\(kimg ([0-9.]+)\)", diverged)
        record.update(diverged=diverged, kimg=float(at.group(1)) if at else record["kimg"], snapshot=None,
                      digit_fid=None, classes=None, **({"modes": None, "kl": None} if modes_later else {}))
    else:
        snapshot = newest_snapshot(run)
        record.update(snapshot=str(snapshot), **final_digit_fid(snapshot, samples))
    return record


def measure(results: list[dict[str, Any]], samples: int, raw: Path, command: str) -> list[dict[str, Any]]:
    """One record per finished run (final digit FID on `samples` seeds, classes, kimg, wall-clock, D's norms, the
    fewest classes at any tick after COLLAPSE_AFTER_KIMG; for a diverged run its message and the kimg where it
    stopped, without a digit FID); each run's stats.jsonl copied to raw/stats/. Records of
    runs already measured (the same run folder and snapshot) are reused from raw/results.jsonl, and the records of
    other runs there are kept (returned too), so a sweep grows by commands; a result with a "record" (its run
    folder gone) is that record. `command` (the
    ablate command line, its jobs and threads) is kept in each new record for the report's header."""
    (raw / "stats").mkdir(parents=True, exist_ok=True)
    known = {(r["variant"], r["seed"]): r for r in rescore(raw)}  # every earlier record on today's measure
    records = []
    for r in results:
        variant, seed, run = r["variant"], r["seed"], r["run"]
        if "record" in r:  # recorded earlier, its run folder gone: kept as it is, with its stats in raw/stats
            records.append(r["record"])
            continue
        stats = raw / "stats" / f"{variant.name}-seed{seed}.jsonl"
        if (run / "stats.jsonl").exists():
            shutil.copyfile(run / "stats.jsonl", stats)
        else:  # diverged before its first tick
            stats.write_text("")
        diverged = r.get("diverged")
        old = known.get((variant.name, seed))
        if (not diverged and old and old.get("snapshot") == str(newest_snapshot(run))
                and old.get("samples") == samples):
            records.append(old)
            continue
        records.append(_record(variant, seed, run, stats, diverged, samples, command))
    return _merge_records(raw, records)  # earlier runs' records stay


# --- figures ---
def _plot(records: list[dict[str, Any]], raw: Path, key: str, ylabel: str, out: Path, *, log: bool = True) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    names = list(dict.fromkeys(r["variant"] for r in records))
    colours = {name: plt.cm.tab10(i % 10) for i, name in enumerate(names)}
    first_seed = records[0]["seed"]
    labelled = set()
    for r in records:
        rows = [row for row in read_jsonl(raw / "stats" / f"{r['variant']}-seed{r['seed']}.jsonl") if key in row]
        if not rows:
            continue
        name = r["variant"]
        ax.plot([row["kimg"] for row in rows], [row[key] for row in rows], color=colours[name],
                label=None if name in labelled else name, linewidth=2.2 if name == names[0] else 1.2,
                linestyle="-" if r["seed"] == first_seed else "--")
        labelled.add(name)
    ax.set_xlabel("kimg (solid: first seed, dashed: others)")
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if labelled:
        ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)


def _sample_sheet(records: list[dict[str, Any]], out: Path) -> None:
    """One row of 16 samples (fixed seeds) per variant, from each variant's first seed with a snapshot (one that did
    not diverge), labelled. Left as it is unless every variant with such a seed still has its snapshot on disk (a
    report regenerated elsewhere keeps its committed sheet)."""
    from PIL import Image, ImageDraw

    from vitgan.images import grid_array
    from vitgan.pretrained import load
    from vitgan.sampling import generate, latents

    first: dict[str, str] = {}
    for r in records:
        if r.get("snapshot"):
            first.setdefault(r["variant"], r["snapshot"])
    if not first or not all(Path(snapshot).is_file() for snapshot in first.values()):
        return
    rows, names = [], []
    for name, snapshot in first.items():
        generator = load(Path(snapshot))
        rows.append(grid_array(generate(generator, latents(range(16), generator.z_dim)), nrow=16))
        names.append(name)
    label_width = 110
    height = rows[0].shape[0]
    sheet = Image.new("RGB", (label_width + rows[0].shape[1], height * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (row, name) in enumerate(zip(rows, names, strict=True)):
        tile = Image.fromarray(row[..., 0] if row.shape[-1] == 1 else row).convert("RGB")
        sheet.paste(tile, (label_width, i * height))
        draw.text((6, i * height + height // 2 - 6), name, fill="black")
    atomic_write(out, lambda tmp: sheet.save(tmp, format="png"))



# --- the report ---
def _spread(values: list[float], digits: int = 1) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.{digits}f}" + (f" +- {statistics.stdev(values):.{digits}f}" if len(values) > 1 else "")


def stacked(records: list[dict[str, Any]]) -> bool:
    """Whether the records are StackedMNIST runs (scored by modes and KL)."""
    return any("modes" in r for r in records)


def _changes(variant: Variant) -> str:
    return (", ".join(f"{k}={v}" for k, v in variant.overrides.items())
            or ("(none: the reference)" if variant.claim == "reference" else "(none)"))


def _stacked_row(name: str, variant: Variant, runs: list[dict[str, Any]], verdict: str) -> str:
    """The line of one variant in a StackedMNIST table: modes and KL (each seed listed), the channels' digit FID."""
    held = [r for r in runs if not r.get("diverged")]
    fewest = [r["min_modes_later"] for r in runs if r.get("min_modes_later") is not None]
    per_seed = ", ".join(f"diverged at {r['kimg']:g} kimg" if r.get("diverged") else f"{r['modes']} / {r['kl']:.3f}"
                         for r in runs)
    measures = ([_spread([r["modes"] for r in held]), _spread([r["kl"] for r in held], 3),
                 _spread([r["digit_fid"] for r in held]), _spread([r["confidence"] for r in held], 3)]
                if held else ["-"] * 4)
    return (f"| {name} | {_changes(variant)} | {_spread([r['kimg'] for r in runs])} | "
            f"{_spread([r['minutes'] for r in runs])} | {' | '.join(measures[:2])} | {per_seed} | "
            f"{' | '.join(measures[2:])} | {min(fewest) if fewest else '-'} | {_spread([r['sigma'] for r in runs])} | "
            f"{variant.claim}: {variant.why} | {verdict} |")


def _each(values: list[float]) -> str:
    """Each seed's value after a mean over several: ' (0.949, 0.974, 0.931)'; nothing for one seed."""
    return f" ({', '.join(f'{v:.3f}' for v in values)})" if len(values) > 1 else ""


def _row(name: str, variant: Variant, runs: list[dict[str, Any]], verdict: str) -> str:
    """The table's line of one variant."""
    fids = [r["digit_fid"] for r in runs if not r.get("diverged")]
    changes = _changes(variant)
    fewest = [r["min_classes_later"] for r in runs if r["min_classes_later"] is not None]
    per_seed = ", ".join(f"diverged at {r['kimg']:g} kimg" if r.get("diverged") else f"{r['digit_fid']:.1f}"
                         for r in runs)
    agreement = [r["agreement"] for r in runs if r.get("agreement") is not None]
    return (f"| {name} | {changes} | {_spread([r['kimg'] for r in runs])} | {_spread([r['minutes'] for r in runs])} | "
            f"{_spread(fids) if fids else '-'} | {f'{statistics.median(fids):.1f}' if fids else '-'} | {per_seed} | "
            f"{', '.join('-' if r.get('diverged') else str(r['classes']) for r in runs)} | "
            f"{_spread(agreement, 3) + _each(agreement) if agreement else '-'} | "
            f"{min(fewest) if fewest else '-'} | {_spread([r['sigma'] for r in runs])} | {variant.claim}: "
            f"{variant.why} | {verdict} |")


def _table(records: list[dict[str, Any]], variants: list[Variant]) -> tuple[list[str], list[tuple[Variant, str]]]:
    """The table's lines (one per variant with records, in the records' order) and each variant's verdict."""
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_variant.setdefault(r["variant"], []).append(r)
    known = {v.name: v for v in variants}
    reference = by_variant.get(variants[0].name, [])
    lines, verdicts = [], []
    for name, runs in by_variant.items():
        variant = known.get(name, Variant(name, runs[0]["overrides"], "compare"))
        verdict = _verdict(variant, runs, reference)
        verdicts.append((variant, verdict))
        lines.append((_stacked_row if stacked(runs) else _row)(name, variant, runs, verdict))
    return lines, verdicts


def _stacked_opening(header: str, samples: int, folder: str) -> list[str]:
    return [
        header,
        "",
        f"Modes and KL: the last EMA generator on {samples:,} fixed seeds, each channel classified by the shipped "
        "digit classifier (argmax), a mode covered when at least one sample has it; KL is KL(generated || uniform) "
        "over the 1,000 modes (docs/metrics.md, 'Modes'). Channel digit FID: every channel of those samples as a "
        "digit against the 5,000 bundled digits; confidence: the classifier's mean top probability per channel. "
        f"'fewest later': the fewest modes at any tick after {COLLAPSE_AFTER_KIMG:g} kimg (5,000 samples per tick). "
        f"Raw records: `{folder}/results.jsonl` (one line per run) and `{folder}/stats/` (every run's per-tick "
        "stats.jsonl).",
        "",
        "| variant | what changes | kimg | minutes | modes of 1,000 (mean +- sd) | KL (mean +- sd) | per seed (modes / "
        "KL) | channel digit FID | confidence | fewest later | D's largest singular value | claim | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]


def _opening(header: str, samples: int, folder: str) -> list[str]:
    return [
        header,
        "",
        f"Final digit FID: the last EMA generator on {samples:,} fixed seeds against all 5,000 bundled "
        "digits (the shipped classifier's features); 'classes' counts the digits holding at least 2% of the "
        f"samples (per seed); 'fewest later' is the fewest classes at any tick after {COLLAPSE_AFTER_KIMG:g} kimg "
        "(1,000 samples per tick): below 8 means the run collapsed after the start. 'class agreement' (a "
        "conditional variant's; mean +- sd, then per seed): the share of its samples, drawn with labels as the "
        "data's, that the classifier gives the digit they were drawn for. Raw records: "
        f"`{folder}/results.jsonl` (one line per run) and `{folder}/stats/` (every run's per-tick stats.jsonl).",
        "",
        "| variant | what changes | kimg | minutes | final digit FID (mean +- sd) | median | per seed | classes per "
        "seed | class agreement | fewest later | D's largest singular value | claim | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]


def _figures(folder: str, modes: bool) -> list[str]:
    measure = ([f"![modes against kimg]({folder}/modes.png)", f"![KL against kimg]({folder}/kl.png)",
                f"![channel digit FID against kimg]({folder}/fid.png)"] if modes
               else [f"![digit FID against kimg]({folder}/fid.png)"])
    return [
        "",
        *measure,
        "",
        "D's instability signal: the largest singular value of any of its layers (after SN/ISN; without them it is "
        "free to grow), and the norm of its gradient, per tick:",
        "",
        f"![D's largest singular value]({folder}/d_sigma.png)",
        f"![D's gradient norm]({folder}/d_grad.png)",
        "",
        "Samples of each variant's final EMA generator (its first seed that did not diverge, seeds 0-15 of the "
        "latent):",
        "",
        f"![samples per variant]({folder}/samples.png)",
        "",
        "## Verdicts",
        "",
    ]


def _closing(verdicts: list[tuple[Variant, str]]) -> list[str]:
    lines = [f"- **{variant.name}** ({variant.why or 'no claim'}): {verdict}." for variant, verdict in verdicts[1:]]
    return lines + ["", "A verdict needs the two means to differ by more than the larger spread over seeds (or, with "
                    "one seed, by more than 10%); otherwise it is 'inconclusive'. A variant with more seeds stopped by "
                    "a NaN or inf ('diverged', its measure over the seeds that held) than the reference is less "
                    "stable, whatever its measure. Every variant sees the same number of images; the wall-clock "
                    "differs with each variant's cost per image."]


def write_report(records: list[dict[str, Any]], variants: list[Variant], header: str, report: Path) -> str:
    """The report (and its figures in a folder of the report's name beside it) from the raw records alone; a part
    written by hand below HAND_WRITTEN in the report already there is kept."""
    raw = report.parent / report.stem
    modes = stacked(records)
    if modes:
        _plot(records, raw, "modes", "modes of 1,000 (5,000 samples, EMA G)", raw / "modes.png", log=False)
        _plot(records, raw, "modes_kl", "KL(generated || uniform) (5,000 samples)", raw / "kl.png")
    _plot(records, raw, "digit_fid", f"{'channel ' if modes else ''}digit FID (EMA G)", raw / "fid.png")
    _plot(records, raw, "d_sigma_max", "D: largest singular value of any layer", raw / "d_sigma.png")
    _plot(records, raw, "grad_d", "D: gradient norm (mean per tick)", raw / "d_grad.png")
    rows, verdicts = _table(records, variants)
    opening = _stacked_opening if modes else _opening
    lines = opening(header, records[0]["samples"], raw.name) + rows + _figures(raw.name, modes) + _closing(verdicts)
    text = "\n".join(lines) + "\n"
    if report.exists() and HAND_WRITTEN in report.read_text():  # a reading written by hand is kept
        text += "\n" + HAND_WRITTEN + report.read_text().split(HAND_WRITTEN, 1)[1]
    atomic_write(report, lambda tmp: Path(tmp).write_text(text))
    return text


# --- verdicts ---
def _verdict(variant: Variant, runs: list[dict[str, Any]], reference: list[dict[str, Any]]) -> str:
    """The variant against the reference: more diverged seeds first (less stable), else the mean final digit FIDs
    (StackedMNIST: KLs) over the seeds that held, told apart only beyond the larger spread over seeds (10% of the
    reference's with one seed). Runs that stopped short of the reference's length (a --minutes cap) are not judged."""
    if variant.claim == "reference":
        return "reference"
    if not reference:  # e.g. a report recorded before its group's reference changed
        return "none (the reference has no run in this report)"
    diverged, ref_diverged = (sum(bool(r.get("diverged")) for r in x) for x in (runs, reference))
    if diverged / len(runs) > ref_diverged / len(reference):
        return _judged(variant, f"{diverged} of {len(runs)} seeds diverged, the reference's {ref_diverged} of "
                                f"{len(reference)}", worse=True)
    key, label, digits = ("kl", "KL", 3) if stacked(runs) else ("digit_fid", "FID", 1)
    fids = [r[key] for r in runs if not r.get("diverged")]
    ref_fids = [r[key] for r in reference if not r.get("diverged")]
    if not fids or not ref_fids:
        return f"inconclusive ({diverged} of {len(runs)} seeds diverged, the reference's {ref_diverged})"
    lengths, ref_lengths = ([r["kimg"] for r in x if not r.get("diverged") and "kimg" in r] for x in (runs, reference))
    full = max(ref_lengths, default=0.0)
    if ref_lengths and any(abs(k - full) > 0.01 * full for k in lengths):
        return f"not comparable (trained {min(lengths):g} kimg, the reference {full:g}: a --minutes cap ended it early)"
    mine, ref = statistics.fmean(fids), statistics.fmean(ref_fids)
    noise = max([statistics.stdev(x) for x in (fids, ref_fids) if len(x) > 1], default=0.1 * ref)
    if abs(mine - ref) <= noise:
        return f"inconclusive ({label} {mine:.{digits}f} vs {ref:.{digits}f}, within the spread)"
    worse = mine > ref
    return _judged(variant, f"{label} {mine:.{digits}f} vs the reference's {ref:.{digits}f} "
                            f"({'worse' if worse else 'better'})", worse)


def _judged(variant: Variant, direction: str, worse: bool) -> str:
    """`direction` as it is for a variant without a claim, else prefixed with whether it bears the paper's claim out."""
    if variant.claim == "compare":
        return direction
    return f"{'yes' if worse == (variant.claim == 'worse') else 'no'}: {direction}"
