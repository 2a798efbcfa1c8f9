"""`vitgan ablate`: the paper's stability ablation at small scale, with one command and a report.

Every variant trains the same preset on the same data for the same wall-clock budget and seeds (one `vitgan train`
process per run, `--jobs` at a time, one CPU thread each by default). Each run's per-tick stats (digit FID on the
bundled digits, D's largest singular value and gradient norm) and its final EMA generator are then gathered into
`docs/ablation.md` (or `--report`): a plot of digit FID over time, a plot of D's norms over time, a table of final
digit FIDs (5,000 samples) with the spread over seeds, a grid of samples per variant, and, per variant, whether the
small-scale result agrees with the paper's claim.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vitgan.config import ConfigError


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict[str, str] = field(default_factory=dict)  # Config fields, as command-line values
    claim: str = "worse"  # the paper's claim against ViTGAN: "worse" (higher FID) or "better"
    why: str = ""


VARIANTS = [
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


def select(names: str | None) -> list[Variant]:
    if not names:
        return VARIANTS
    by_name = {v.name: v for v in VARIANTS}
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in by_name]
    if unknown or not chosen:
        raise ConfigError(f"variants: {', '.join(unknown or [names])} not among {', '.join(by_name)}")
    if "vitgan" not in chosen:
        chosen.insert(0, "vitgan")  # the reference every other variant is compared with
    return [by_name[n] for n in chosen]


def _command(variant: Variant, seed: int, args: Any, outdir: Path) -> list[str]:
    command = [sys.executable, "-m", "vitgan", "train", "--preset", args.preset, "--data", args.data, "--seed",
               str(seed), "--minutes", str(args.budget), "--tick", str(args.tick), "--outdir", str(outdir),
               "--snap", "1000000"]
    for key, value in {**variant.overrides, **dict(args.override)}.items():
        command += [f"--{key.replace('_', '-')}", value]
    return command


def _run_folder(outdir: Path) -> Path:
    return sorted(p for p in outdir.iterdir() if p.is_dir())[-1]


def run_all(variants: list[Variant], seeds: list[int], args: Any, root: Path) -> list[dict[str, Any]]:
    """Train every (variant, seed) not already finished under root/runs/, `args.jobs` at a time."""
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
            if proc.returncode != 0:
                tail = (outdir / "console.txt").read_text().strip().splitlines()[-1:]
                print(f"ablate: {variant.name} seed {seed} failed: {' '.join(tail)}", flush=True)
                continue
            done.append({"variant": variant, "seed": seed, "run": _run_folder(outdir)})
            print(f"ablate: finished {variant.name} seed {seed}", flush=True)
    return done


def _rows(run: Path) -> list[dict[str, Any]]:
    path = run / "stats.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def final_digit_fid(run: Path, samples: int, digit_fid: Any) -> dict[str, float]:
    """Digit FID and class coverage of the run's last EMA generator on `samples` fixed seeds."""
    from vitgan.sampling import generate, latents
    from vitgan.training.checkpoint import load

    generator = load(sorted(run.glob("network-snapshot-*.safetensors"))[-1])
    return digit_fid(generate(generator, latents(range(100_000, 100_000 + samples), generator.z_dim), batch=250))


def _plot(results: list[dict[str, Any]], key: str, ylabel: str, out: Path, *, log: bool = True) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    colours = {name: plt.cm.tab10(i % 10) for i, name in enumerate(dict.fromkeys(r["variant"].name for r in results))}
    labelled = set()
    for r in results:
        rows = [row for row in _rows(r["run"]) if key in row]
        if not rows:
            continue
        name = r["variant"].name
        ax.plot([row["time"] / 60 for row in rows], [row[key] for row in rows], color=colours[name],
                label=None if name in labelled else name, linewidth=2.2 if name == "vitgan" else 1.2,
                linestyle="-" if r["seed"] == results[0]["seed"] else "--")
        labelled.add(name)
    ax.set_xlabel("minutes (solid: first seed, dashed: others)")
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def _sample_sheet(results: list[dict[str, Any]], out: Path) -> None:
    """One row of 16 samples (fixed seeds) per variant, from each variant's first seed, labelled."""
    from PIL import Image, ImageDraw

    from vitgan.images import grid_array
    from vitgan.sampling import generate, latents
    from vitgan.training.checkpoint import load

    rows, names = [], []
    for r in results:
        if r["seed"] != results[0]["seed"]:
            continue
        generator = load(sorted(r["run"].glob("network-snapshot-*.safetensors"))[-1])
        rows.append(grid_array(generate(generator, latents(range(16), generator.z_dim)), nrow=16))
        names.append(r["variant"].name)
    label_width = 110
    height = rows[0].shape[0]
    sheet = Image.new("RGB", (label_width + rows[0].shape[1], height * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (row, name) in enumerate(zip(rows, names, strict=True)):
        tile = Image.fromarray(row[..., 0] if row.shape[-1] == 1 else row).convert("RGB")
        sheet.paste(tile, (label_width, i * height))
        draw.text((6, i * height + height // 2 - 6), name, fill="black")
    sheet.save(out)


def write_report(results: list[dict[str, Any]], args: Any, report: Path) -> str:
    """docs/ablation.md with its figures in a folder beside it; returns the text."""
    figures = report.parent / "ablation"
    figures.mkdir(parents=True, exist_ok=True)
    _plot(results, "digit_fid", "digit FID (1,000 samples, EMA G)", figures / "fid.png")
    _plot(results, "d_sigma_max", "D: largest singular value of any layer", figures / "d_sigma.png")
    _plot(results, "grad_d", "D: gradient norm (mean per tick)", figures / "d_grad.png")
    _sample_sheet(results, figures / "samples.png")

    from vitgan.data import load_mnist5k
    from vitgan.metrics.digits import DigitFID

    digit_fid = DigitFID.of(load_mnist5k())  # the reference statistics, once for every run
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        r.update(final_digit_fid(r["run"], args.samples, digit_fid))
        last = _rows(r["run"])[-1]
        r.update(kimg=last["kimg"], sigma=last.get("d_sigma_max", float("nan")), grad=last.get("grad_d", float("nan")))
        by_variant.setdefault(r["variant"].name, []).append(r)

    def spread(values: list[float]) -> str:
        mean = statistics.fmean(values)
        return f"{mean:.1f}" + (f" +- {statistics.stdev(values):.1f}" if len(values) > 1 else "")

    reference = [r["digit_fid"] for r in by_variant.get("vitgan", [])]
    lines = [
        "# Ablation at small scale: which parts make a ViT GAN train",
        "",
        f"Produced by `vitgan ablate {' '.join(args.argv)}` on {time.strftime('%Y-%m-%d')}: every variant trained "
        f"the `{args.preset}` preset on `{args.data}` for {args.budget:g} minutes of wall-clock time per run, seeds "
        f"{', '.join(map(str, args.seed_list))}, {args.jobs} runs at a time with {args.threads} CPU thread(s) each "
        f"({torch.__version__}, {_machine()}). Final digit FID: the last EMA generator on {args.samples:,} fixed "
        "seeds against all 5,000 bundled digits (the shipped classifier's features); 'classes' counts the digits "
        "holding at least 2% of the samples.",
        "",
        "| variant | what changes | kimg in the budget | final digit FID (mean +- sd over seeds) | classes | "
        "D's largest singular value at the end | paper's claim | agrees here? |",
        "|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for name, runs in by_variant.items():
        variant = runs[0]["variant"]
        fids = [r["digit_fid"] for r in runs]
        changes = ", ".join(f"{k}={v}" for k, v in variant.overrides.items()) or "(the paper's design)"
        verdict = _verdict(variant, fids, reference)
        verdicts.append((variant, verdict))
        lines.append(f"| {name} | {changes} | {spread([r['kimg'] for r in runs])} | {spread(fids)} | "
                     f"{spread([r['classes'] for r in runs])} | {spread([r['sigma'] for r in runs])} | "
                     f"{variant.claim}: {variant.why} | {verdict} |")
    lines += [
        "",
        "![digit FID over time](ablation/fid.png)",
        "",
        "D's instability signal: the largest singular value of any of its layers (after SN/ISN; without them it is "
        "free to grow), and the norm of its gradient, per tick:",
        "",
        "![D's largest singular value](ablation/d_sigma.png)",
        "![D's gradient norm](ablation/d_grad.png)",
        "",
        "Samples of each variant's final EMA generator (first seed, seeds 0-15 of the latent):",
        "",
        "![samples per variant](ablation/samples.png)",
        "",
        "## Where the small-scale result agrees with the paper, and where it does not",
        "",
    ]
    for variant, verdict in verdicts:
        if variant.name != "vitgan":
            lines.append(f"- **{variant.name}** ({variant.why}): {verdict}.")
    lines += ["", "A verdict needs the two means to differ by more than the larger spread over seeds (or, with one "
              "seed, by more than 10%); otherwise it is 'inconclusive'. The budget is minutes on a CPU, not the "
              "paper's days on TPUs: a variant that is merely slower to start looks worse here even if it would "
              "catch up."]
    text = "\n".join(lines) + "\n"
    report.write_text(text)
    return text


def _verdict(variant: Variant, fids: list[float], reference: list[float]) -> str:
    if variant.claim == "reference" or not reference:
        return "reference"
    mine, ref = statistics.fmean(fids), statistics.fmean(reference)
    noise = max([statistics.stdev(x) for x in (fids, reference) if len(x) > 1], default=0.1 * ref)
    if abs(mine - ref) <= noise:
        return f"inconclusive (FID {mine:.1f} vs {ref:.1f}, within the spread)"
    worse = mine > ref
    agrees = worse == (variant.claim == "worse")
    return (f"{'yes' if agrees else 'no'}: FID {mine:.1f} vs ViTGAN's {ref:.1f} "
            f"({'worse' if worse else 'better'} than ViTGAN)")


def _machine() -> str:
    from vitgan.bench import _device_name

    return _device_name(torch.device("cpu")).split(" (")[0]


def ablate(args: Any) -> Path:
    if args.budget <= 0:
        raise ConfigError(f"budget: must be a positive number of minutes, got {args.budget}")
    if args.jobs < 1:
        raise ConfigError(f"jobs: must be positive, got {args.jobs}")
    if args.threads < 1:
        raise ConfigError(f"threads: must be positive, got {args.threads}")
    if args.data != "mnist":
        raise ConfigError("data: the ablation's digit FID needs the bundled digits ('mnist')")
    variants = select(args.variants)
    root = Path(args.outdir)
    results = run_all(variants, args.seed_list, args, root)
    if not any(r["variant"].name == "vitgan" for r in results):
        raise ConfigError("variants: the vitgan reference run failed; see its console.txt")
    results.sort(key=lambda r: ([v.name for v in VARIANTS].index(r["variant"].name), r["seed"]))
    text = write_report(results, args, Path(args.report))
    print(text)
    return Path(args.report)
