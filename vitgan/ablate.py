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
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vitgan import presets
from vitgan.config import ConfigError
from vitgan.errors import EXIT_DIVERGED
from vitgan.fileio import atomic_write


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict[str, str] = field(default_factory=dict)  # Config fields, as command-line values
    claim: str = "worse"  # against the reference: "worse" or "better" (the paper's claim), or "compare" (none)
    why: str = ""


PAPER = [
    Variant("vitgan", {}, "reference", "L2 attention, ISN, overlapping patches; SLN design C, INR head"),
    Variant("vanilla", {"d_attention": "dot", "d_norm": "none", "d_overlap": "false"}, "worse",
            "a vanilla ViT discriminator trains unstably or collapses"),
    Variant("no-l2", {"d_attention": "dot"}, "worse", "dot-product attention is not Lipschitz; D is less stable"),
    Variant("no-isn", {"d_norm": "none"}, "worse", "without (improved) spectral normalisation D is less stable"),
    Variant("no-overlap", {"d_overlap": "false"}, "worse", "non-overlapping patches give a worse FID"),
    Variant("g-design-a", {"g_design": "A"}, "worse", "G design A (w added to every token) trails SLN"),
    Variant("g-design-b", {"g_design": "B"}, "worse", "G design B (w as a prepended token) trails SLN"),
    Variant("linear-head", {"g_head": "linear"}, "worse", "a linear patch head instead of the INR is worse"),
    Variant("cnn-d", {"d_arch": "cnn"}, "better", "ViTGAN G with a CNN (StyleGAN2) D reaches a better FID"),
]

# The authors' PyTorch code's objective (SPEC.md), the paper presets' own: on the mnist preset a variant.
AUTHORS = {key: str(value) for key, value in presets.AUTHORS_OBJECTIVE.items()}

# The paper's training recipe (SPEC.md) on any preset's networks: what the presets' own recipes replaced.
PAPER_RECIPE = {"bcr_real": "10", "bcr_fake": "10", "bcr_mode": "shift", "r1_gamma": "0", "lr_warmup_kimg": "0",
                "augment": "color,translation,cutout,scale", "g_output": "tanh", "g_sln_equalized": "false",
                "d_head": "linear", "d_mbstd": "false", "g_lr": "2e-3", "d_lr": "2e-3"}

RECIPES = [
    Variant("preset", {}, "reference", "the preset's own recipe"),
    Variant("before", {"g_sln_equalized": "false", "d_head": "linear"}, "compare",
            "the mnist preset before 2026-11-26: plain SLN layers and a linear D head"),
    Variant("paper-bcr10", {"bcr_real": "10", "bcr_fake": "10", "r1_gamma": "0"}, "compare",
            "the paper's bCR 10 (T a shift of up to 1/8), no R1"),
    Variant("paper", PAPER_RECIPE, "compare",
            "the paper's recipe whole: bCR 10, no R1, tanh output, plain SLN, linear D head, no minibatch std, "
            "lr 0.002"),
    Variant("authors", AUTHORS, "compare", "the authors' code: bCR 1 diffaug, R1 0.1 every step, warm-up, cutout 0.3"),
    Variant("r1-0.1", {"r1_gamma": "0.1"}, "compare", "a tenth of the preset's R1 weight"),
    Variant("sigma-reparam", {"d_norm": "sigma_reparam"}, "compare", "ISN with a learned gain per layer"),
    Variant("g-lr-half", {"g_lr": "2.5e-4"}, "compare", "G learns at half D's rate (two time-scale update rule)"),
    Variant("g-lr-2x", {"g_lr": "1e-3"}, "compare", "G learns at twice D's rate (1e-3 against 5e-4)"),
    Variant("d-steps-2", {"d_steps_per_g": "2"}, "compare", "two D steps, each on its own reals, per G step"),
    Variant("grad-clip-1", {"grad_clip": "1"}, "compare", "both networks' gradients clipped to norm 1 (D's is 2-5)"),
    Variant("lr-2x", {"g_lr": "1e-3", "d_lr": "1e-3"}, "compare",
            "both learning rates doubled (the authors' code: 1e-3 at batch 64, 2e-3 at batch 32)"),
    Variant("paper-lr", {"g_lr": "2e-3", "d_lr": "2e-3"}, "compare", "the paper's learning rate 0.002 (at batch 128)"),
    Variant("qk-norm", {"d_qk_norm": "true"}, "compare", "a LayerNorm on D's per-head queries and keys (QK-norm)"),
    Variant("no-augment", {"augment": ""}, "compare", "no DiffAugment: D sees every image as it is"),
    Variant("augment-shift", {"augment": "translation", "augment_fill": "edge"}, "compare",
            "DiffAugment's translation alone, filled from the edge (on digits: black, as the background)"),
    Variant("mbstd-16", {"d_mbstd_group": "16"}, "compare",
            "the minibatch std over all 16 samples of a batch instead of groups of 4 (a wider diversity signal)"),
    Variant("pack-2", {"d_pack": "2"}, "compare",
            "PacGAN: D judges pairs of images stacked along channels, one logit per pair (against dropped modes)"),
    Variant("d-wide", {"d_dim": "256", "d_mlp_dim": "512"}, "compare",
            "a wider ViT D (tokens 256 wide, MLP 512: about 4x the weights), as the CNN D that does better is larger"),
    Variant("g-wide", {"g_dim": "256", "g_mlp_dim": "512"}, "compare",
            "a wider G (tokens 256 wide, MLP 512): do more weights make legible digits from fewer images?"),
    Variant("r1-0.1", {"r1_gamma": "0.1"}, "compare", "R1 at a tenth of the preset's weight (the authors' gamma)"),
    Variant("preset-rerun", {}, "compare",
            "the preset itself again, on the code of 2026-11-27 (fused Adam, compiled R1, one D forward per step, "
            "consecutive minibatch-std groups): how far the same recipe moves"),
    Variant("ema-long", {"ema_kimg": "10", "ema_rampup": "0.2"}, "compare",
            "a longer EMA (half-life 10 kimg, at most a fifth of the images seen): G itself trains as the preset's"),
    Variant("batch-8", {"batch": "8"}, "compare",
            "batch 8 at the same learning rate: twice the optimiser steps per image (batch 32 did worse at 20 kimg)"),
    Variant("batch-4", {"batch": "4"}, "compare",
            "batch 4 (one minibatch-std group) at the same learning rate: four times the optimiser steps per image"),
    Variant("ada", {"ada_target": "0.6", "augment_p": "0"}, "compare",
            "adaptive augmentation (ADA): p starts at 0 and rises only while D's sign on reals exceeds 0.6"),
]

GROUPS = {"paper": PAPER, "recipe": RECIPES}


def select(names: str | None, group: str = "paper") -> list[Variant]:
    if group not in GROUPS:
        raise ConfigError(f"group: {group!r} is not one of {', '.join(GROUPS)}")
    variants = GROUPS[group]
    if not names:
        return variants
    by_name = {v.name: v for v in variants}
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in by_name]
    if unknown or not chosen:
        raise ConfigError(f"variants: {', '.join(unknown or [names])} not among {', '.join(by_name)}")
    reference = variants[0].name
    if reference not in chosen:
        chosen.insert(0, reference)  # the reference every other variant is compared with
    return [by_name[n] for n in chosen]


def _command(variant: Variant, seed: int, args: Any, outdir: Path) -> list[str]:
    command = [sys.executable, "-m", "vitgan", "train", "--preset", args.preset, "--data", args.data, "--seed",
               str(seed), "--kimg", str(args.kimg), "--tick", str(args.tick), "--outdir", str(outdir),
               "--snap", "1000000", *(["--compile"] if args.compile else []),
               *(["--minutes", str(args.minutes)] if args.minutes else [])]
    for key, value in {**variant.overrides, **dict(args.override)}.items():
        command += [f"--{key.replace('_', '-')}", value]
    return command


def _run_folder(outdir: Path) -> Path:
    return sorted(p for p in outdir.iterdir() if p.is_dir())[-1]


DIVERGED = "diverged.txt"  # in a run's folder: the message of the NaN or inf that stopped it


def run_all(variants: list[Variant], seeds: list[int], args: Any, root: Path) -> list[dict[str, Any]]:
    """Train every (variant, seed) not already finished under root/runs/, `args.jobs` at a time. A run stopped by a
    NaN or inf (`vitgan train`'s exit status EXIT_DIVERGED) is a result with its "diverged" message, kept in its
    folder's DIVERGED file so that a later sweep reuses it; a run that failed otherwise is left out, said on the
    console."""
    queue = [(v, s) for v in variants for s in seeds]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    running: list[tuple[subprocess.Popen, Variant, int, Path]] = []
    done: list[dict[str, Any]] = []
    started = time.time()
    while queue or running:
        while queue and len(running) < args.jobs:
            variant, seed = queue.pop(0)
            outdir = root / "runs" / f"{variant.name}-seed{seed}"
            if list(outdir.glob("*/network-snapshot-*.safetensors")):  # finished earlier: reuse it
                done.append({"variant": variant, "seed": seed, "run": _run_folder(outdir)})
                continue
            if (outdir / DIVERGED).exists():  # diverged earlier: the same seed diverges again
                done.append({"variant": variant, "seed": seed, "run": _run_folder(outdir),
                             "diverged": (outdir / DIVERGED).read_text().strip()})
                continue
            outdir.mkdir(parents=True, exist_ok=True)
            log = open(outdir / "console.txt", "w")  # noqa: SIM115 - closed when the run ends
            proc = subprocess.Popen(_command(variant, seed, args, outdir), stdout=log, stderr=subprocess.STDOUT,
                                    env=env)
            running.append((proc, variant, seed, outdir))
            print(f"ablate: started {variant.name} seed {seed} ({len(done) + len(running)} of "
                  f"{len(variants) * len(seeds)}; {time.time() - started:.0f} s)", flush=True)
        time.sleep(1)
        for item in list(running):
            proc, variant, seed, outdir = item
            if proc.poll() is None:
                continue
            running.remove(item)
            tail = " ".join((outdir / "console.txt").read_text().strip().splitlines()[-1:])
            if proc.returncode == EXIT_DIVERGED:  # a NaN or inf: a result of the variant, reported as such
                message = tail.removeprefix("vitgan: error: ")
                atomic_write(outdir / DIVERGED, lambda tmp, text=message: Path(tmp).write_text(text + "\n"))
                done.append({"variant": variant, "seed": seed, "run": _run_folder(outdir), "diverged": message})
                print(f"ablate: {variant.name} seed {seed} diverged: {tail}", flush=True)
            elif proc.returncode != 0:
                print(f"ablate: {variant.name} seed {seed} failed: {tail}", flush=True)
            else:
                done.append({"variant": variant, "seed": seed, "run": _run_folder(outdir)})
                print(f"ablate: finished {variant.name} seed {seed}", flush=True)
    return done


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _snapshot(run: Path) -> Path:
    return sorted(run.glob("network-snapshot-*.safetensors"))[-1]


@functools.cache
def _digit_fid() -> Any:
    """The digit measure against all 5,000 bundled digits (their statistics computed once for every run)."""
    from vitgan.data import load_mnist5k
    from vitgan.metrics.digits import DigitFID

    return DigitFID.of(load_mnist5k())


def final_digit_fid(snapshot: Path, samples: int) -> dict[str, float]:
    """Digit FID and class coverage of a snapshot's EMA generator on `samples` fixed seeds (scored as uint8 pixels,
    as saved images: `vitgan.metrics.digits.classify`)."""
    from vitgan.pretrained import load
    from vitgan.sampling import generate, latents

    generator = load(snapshot).to("cuda" if torch.cuda.is_available() else "cpu")
    return _digit_fid()(generate(generator, latents(range(100_000, 100_000 + samples), generator.z_dim), batch=250))


def rescore(raw: Path) -> list[dict[str, Any]]:
    """The records of raw/results.jsonl, those that scored G's float outputs (written before 2026-11-27, without
    "pixels") scored again from their snapshots as uint8 pixels, everything else kept; the file is rewritten."""
    records = _rows(raw / "results.jsonl")
    stale = [r for r in records if r.get("pixels") != "uint8" and not r.get("diverged")]
    for r in stale:
        if not Path(r["snapshot"]).is_file():
            raise ConfigError(f"report: {r['snapshot']} (the run of {r['variant']} seed {r['seed']}) is gone; its "
                              "record scored G's float outputs and cannot be scored again")
        r.update(final_digit_fid(Path(r["snapshot"]), r["samples"]), pixels="uint8")
    if stale:
        text = "".join(json.dumps(r) + "\n" for r in records)
        atomic_write(raw / "results.jsonl", lambda tmp: Path(tmp).write_text(text))
    return records


COLLAPSE_AFTER_KIMG = 20.0  # the fewest classes at any tick after this many kimg tells whether a run collapsed later


def measure(results: list[dict[str, Any]], samples: int, raw: Path, command: str) -> list[dict[str, Any]]:
    """One record per finished run (final digit FID on `samples` seeds, classes, kimg, wall-clock, D's norms, the
    fewest classes at any tick after COLLAPSE_AFTER_KIMG; for a diverged run its message and the kimg where it
    stopped, without a digit FID); each run's stats.jsonl copied to raw/stats/. Records of
    runs already measured (the same run folder and snapshot) are reused from raw/results.jsonl, and the records of
    other runs there are kept (returned too), so a sweep grows by commands. `command` (the
    ablate command line, its jobs and threads) is kept in each new record for the report's header."""
    (raw / "stats").mkdir(parents=True, exist_ok=True)
    known = {(r["variant"], r["seed"]): r for r in rescore(raw)}  # every earlier record on today's measure
    records = []
    for r in results:
        variant, seed, run = r["variant"], r["seed"], r["run"]
        stats = raw / "stats" / f"{variant.name}-seed{seed}.jsonl"
        if (run / "stats.jsonl").exists():
            shutil.copyfile(run / "stats.jsonl", stats)
        else:  # diverged before its first tick
            stats.write_text("")
        diverged = r.get("diverged")
        old = known.get((variant.name, seed))
        if (not diverged and old and old.get("snapshot") == str(_snapshot(run))
                and old.get("samples") == samples):
            records.append(old)
            continue
        rows = [row for row in _rows(stats) if "kimg" in row]
        later = [row["classes"] for row in rows if row["kimg"] > COLLAPSE_AFTER_KIMG and "classes" in row]
        last = rows[-1] if rows else {}
        record = {
            "variant": variant.name, "seed": seed, "overrides": variant.overrides, "samples": samples,
            "pixels": "uint8", "kimg": last.get("kimg", 0.0), "minutes": last.get("time", 0.0) / 60,
            "sigma": last.get("d_sigma_max", float("nan")), "grad": last.get("grad_d", float("nan")),
            "min_classes_later": min(later) if later else None, "command": command,
        }
        if diverged:  # no final generator to measure: where and how it stopped
            at = re.search(r"\(kimg ([0-9.]+)\)", diverged)
            record.update(diverged=diverged, kimg=float(at.group(1)) if at else record["kimg"], snapshot=None,
                          digit_fid=None, classes=None)
        else:
            record.update(snapshot=str(_snapshot(run)), **final_digit_fid(_snapshot(run), samples))
        records.append(record)
    measured = {(r["variant"], r["seed"]) for r in records}
    records = [r for key, r in known.items() if key not in measured] + records  # earlier runs' records stay
    text = "".join(json.dumps(r) + "\n" for r in records)
    atomic_write(raw / "results.jsonl", lambda tmp: Path(tmp).write_text(text))
    return records


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
        rows = [row for row in _rows(raw / "stats" / f"{r['variant']}-seed{r['seed']}.jsonl") if key in row]
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


def _spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.1f}" + (f" +- {statistics.stdev(values):.1f}" if len(values) > 1 else "")


HAND_WRITTEN = "<!-- written by hand below: kept when the report is regenerated -->"


def write_report(records: list[dict[str, Any]], variants: list[Variant], header: str, report: Path) -> str:
    """The report (and its figures in a folder of the report's name beside it) from the raw records alone."""
    raw = report.parent / report.stem
    _plot(records, raw, "digit_fid", "digit FID (1,000 samples, EMA G)", raw / "fid.png")
    _plot(records, raw, "d_sigma_max", "D: largest singular value of any layer", raw / "d_sigma.png")
    _plot(records, raw, "grad_d", "D: gradient norm (mean per tick)", raw / "d_grad.png")
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_variant.setdefault(r["variant"], []).append(r)
    known = {v.name: v for v in variants}
    reference = by_variant.get(variants[0].name, [])
    folder = raw.name
    lines = [
        header,
        "",
        f"Final digit FID: the last EMA generator on {records[0]['samples']:,} fixed seeds against all 5,000 bundled "
        "digits (the shipped classifier's features); 'classes' counts the digits holding at least 2% of the "
        f"samples (per seed); 'fewest later' is the fewest classes at any tick after {COLLAPSE_AFTER_KIMG:g} kimg "
        "(1,000 samples per tick): below 8 means the run collapsed after the start. Raw records: "
        f"`{folder}/results.jsonl` (one line per run) and `{folder}/stats/` (every run's per-tick stats.jsonl).",
        "",
        "| variant | what changes | kimg | minutes | final digit FID (mean +- sd) | median | per seed | classes per "
        "seed | fewest later | D's largest singular value | claim | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for name, runs in by_variant.items():
        variant = known.get(name, Variant(name, runs[0]["overrides"], "compare"))
        fids = [r["digit_fid"] for r in runs if not r.get("diverged")]
        changes = (", ".join(f"{k}={v}" for k, v in variant.overrides.items())
                   or ("(none: the reference)" if variant.claim == "reference" else "(none)"))
        verdict = _verdict(variant, runs, reference)
        verdicts.append((variant, verdict))
        fewest = [r["min_classes_later"] for r in runs if r["min_classes_later"] is not None]
        per_seed = ", ".join(f"diverged at {r['kimg']:g} kimg" if r.get("diverged") else f"{r['digit_fid']:.1f}"
                             for r in runs)
        lines.append(
            f"| {name} | {changes} | {_spread([r['kimg'] for r in runs])} | {_spread([r['minutes'] for r in runs])} | "
            f"{_spread(fids) if fids else '-'} | {f'{statistics.median(fids):.1f}' if fids else '-'} | {per_seed} | "
            f"{', '.join('-' if r.get('diverged') else str(r['classes']) for r in runs)} | "
            f"{min(fewest) if fewest else '-'} | {_spread([r['sigma'] for r in runs])} | {variant.claim}: "
            f"{variant.why} | {verdict} |")
    lines += [
        "",
        f"![digit FID against kimg]({folder}/fid.png)",
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
    for variant, verdict in verdicts[1:]:
        lines.append(f"- **{variant.name}** ({variant.why or 'no claim'}): {verdict}.")
    lines += ["", "A verdict needs the two means to differ by more than the larger spread over seeds (or, with one "
              "seed, by more than 10%); otherwise it is 'inconclusive'. A variant with more seeds stopped by a NaN or "
              "inf ('diverged', its FID over the seeds that held) than the reference is less stable, whatever its "
              "FID. Every variant sees the same number of images; the wall-clock differs with each variant's cost "
              "per image."]
    text = "\n".join(lines) + "\n"
    if report.exists() and HAND_WRITTEN in report.read_text():  # a reading written by hand is kept
        text += "\n" + HAND_WRITTEN + report.read_text().split(HAND_WRITTEN, 1)[1]
    atomic_write(report, lambda tmp: Path(tmp).write_text(text))
    return text


def _verdict(variant: Variant, runs: list[dict[str, Any]], reference: list[dict[str, Any]]) -> str:
    """The variant against the reference: more diverged seeds first (less stable), else the mean final digit FIDs
    over the seeds that held, told apart only beyond the larger spread over seeds (10% of the reference's with one
    seed)."""
    if variant.claim == "reference" or not reference:
        return "reference"
    diverged, ref_diverged = (sum(bool(r.get("diverged")) for r in x) for x in (runs, reference))
    if diverged / len(runs) > ref_diverged / len(reference):
        return _judged(variant, f"{diverged} of {len(runs)} seeds diverged, the reference's {ref_diverged} of "
                                f"{len(reference)}", worse=True)
    fids = [r["digit_fid"] for r in runs if not r.get("diverged")]
    ref_fids = [r["digit_fid"] for r in reference if not r.get("diverged")]
    if not fids or not ref_fids:
        return f"inconclusive ({diverged} of {len(runs)} seeds diverged, the reference's {ref_diverged})"
    mine, ref = statistics.fmean(fids), statistics.fmean(ref_fids)
    noise = max([statistics.stdev(x) for x in (fids, ref_fids) if len(x) > 1], default=0.1 * ref)
    if abs(mine - ref) <= noise:
        return f"inconclusive (FID {mine:.1f} vs {ref:.1f}, within the spread)"
    worse = mine > ref
    return _judged(variant, f"FID {mine:.1f} vs the reference's {ref:.1f} ({'worse' if worse else 'better'})", worse)


def _judged(variant: Variant, direction: str, worse: bool) -> str:
    """`direction` as it is for a variant without a claim, else prefixed with whether it bears the paper's claim out."""
    if variant.claim == "compare":
        return direction
    return f"{'yes' if worse == (variant.claim == 'worse') else 'no'}: {direction}"


def _machine() -> str:
    from vitgan.training.device import device_name

    cpu = device_name(torch.device("cpu")).split(" (")[0]
    return f"{device_name(torch.device('cuda'))} (training on CUDA), {cpu}" if torch.cuda.is_available() else cpu


def ablate(args: Any) -> Path:
    if not args.kimg > 0:
        raise ConfigError(f"kimg: must be a positive number of thousands of images, got {args.kimg}")
    if args.jobs < 1:
        raise ConfigError(f"jobs: must be positive, got {args.jobs}")
    if args.threads < 1:
        raise ConfigError(f"threads: must be positive, got {args.threads}")
    if args.minutes is not None and not args.minutes > 0:
        raise ConfigError(f"minutes: must be a positive number, got {args.minutes}")
    if args.data != "mnist":
        raise ConfigError("data: the ablation's digit FID needs the bundled digits ('mnist')")
    variants = select(args.variants, args.group)
    report = Path(args.report)
    raw = report.parent / report.stem
    order = [v.name for v in variants]
    if args.report_only:
        records = [r for r in rescore(raw) if r["variant"] in order]
        if not records:
            raise ConfigError(f"report: no recorded runs of these variants in {raw / 'results.jsonl'}")
    else:
        results = run_all(variants, args.seed_list, args, Path(args.outdir))
        if not any(r["variant"] is variants[0] for r in results):  # diverged runs are results; a crash is not
            raise ConfigError(f"variants: the {variants[0].name} reference run failed; see its console.txt")
        results.sort(key=lambda r: (order.index(r["variant"].name), r["seed"]))
        command = (f"vitgan ablate {' '.join(args.argv)}` ({args.jobs} runs at a time with {args.threads} CPU "
                   f"thread(s) each, {torch.__version__}, {_machine()}, {time.strftime('%Y-%m-%d')}")
        records = [r for r in measure(results, args.samples, raw, command) if r["variant"] in order]
    records.sort(key=lambda r: (order.index(r["variant"]), r["seed"]))
    _sample_sheet(records, raw / "samples.png")
    commands = list(dict.fromkeys(r["command"] for r in records))
    header = "\n".join([
        f"# {'Recipe sweep' if args.group == 'recipe' else 'Ablation'} at small scale: every variant at "
        f"{max(r['kimg'] for r in records):g} kimg",
        "",
        f"Every variant trained the `{args.preset}` preset on `{args.data}` for the same number of images, seeds "
        f"{', '.join(str(s) for s in dict.fromkeys(r['seed'] for r in records))}; the runs come from "
        + "; ".join(f"`{c}" for c in commands) + ".",
    ])
    text = write_report(records, variants, header, report)
    print(text)
    return report
