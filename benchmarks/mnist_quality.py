"""Quality against a CPU time budget on the bundled MNIST digits: ViTGAN against the vanilla ViT GAN.

    python benchmarks/mnist_quality.py [--minutes 10] [--variants vitgan,vanilla] [--outdir benchmarks/results]

Trains each variant of the `mnist` preset for the same wall-clock budget (one after the other, nothing else should
run), then evaluates the final EMA generator on 5,000 samples: digit FID against the 5,000 real digits, the number
of classes covered (classes holding at least 2% of the confidently classified samples), images per second.
Writes each variant's final sample grid and digit-FID curve (from the snapshots taken along the way) beside the
results table `mnist_quality.md`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import vitgan
from vitgan import presets
from vitgan.data import load_mnist5k
from vitgan.fileio import read_jsonl
from vitgan.images import save_grid
from vitgan.metrics.digits import DigitFID
from vitgan.sampling import generate, latents
from vitgan.training.checkpoint import newest_snapshot, snapshots
from vitgan.training.loop import train
from vitgan.training.options import RunOptions

VARIANTS = {
    "vitgan": {},
    "vanilla": {"d_attention": "dot", "d_norm": "none", "d_overlap": False},
}


def evaluate(snapshot: Path, fid: DigitFID, count: int = 5000) -> dict[str, float]:
    generator = vitgan.load(snapshot)
    images = generate(generator, latents(range(100_000, 100_000 + count), generator.z_dim), batch=250)
    return fid(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--variants", default="vitgan,vanilla")
    parser.add_argument("--outdir", default="benchmarks/results")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    reals = load_mnist5k()
    fid = DigitFID(reals.batch(torch.arange(len(reals))))
    rows = []
    for name in args.variants.split(","):
        cfg = presets.get("mnist", kimg=100_000.0, **VARIANTS[name])  # the budget, not kimg, ends the run
        opts = RunOptions(preset="mnist", outdir=str(outdir / "runs"), seed=args.seed, minutes=args.minutes,
                          tick_kimg=4.0, snap=2)
        start = time.time()
        run = train(cfg, opts)
        wall = time.time() - start
        curve = []
        for snapshot in snapshots(run):
            kimg = int(snapshot.stem.rsplit("-", 1)[1]) / 1000
            curve.append({"kimg": kimg, **evaluate(snapshot, fid, count=2000)})
        final = newest_snapshot(run)
        result = evaluate(final, fid)
        stats = read_jsonl(run / "stats.jsonl")
        generator = vitgan.load(final)
        save_grid(generate(generator, latents(range(100), generator.z_dim)), outdir / f"mnist-{name}-final.png",
                  nrow=10)
        row = {"variant": name, "minutes": args.minutes, "wall_s": round(wall), "kimg": stats[-1]["kimg"],
               "img_per_sec": round(stats[-1]["img_per_sec"], 1), **result, "curve": curve, "run": str(run)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    (outdir / "mnist_quality.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| variant | budget (min) | kimg | img/s | digit FID (5k) | classes covered | confident |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['minutes']:g} | {r['kimg']:.1f} | {r['img_per_sec']} | "
                     f"{r['digit_fid']:.1f} | {r['classes']} / 10 | {r['confident']:.2f} |")
    (outdir / "mnist_quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
