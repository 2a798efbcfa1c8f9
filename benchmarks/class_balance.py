"""Which digits does a snapshot's generator make, and does its discriminator know which ones are missing?

For each snapshot of an `mnist` run: the share of each digit among 2,000 samples (latent seeds 100000-101999, the
shipped classifier, counted where it is at least 50% sure, the images quantised as saved) of the EMA generator and of
the raw generator G (the one D trains against); the share of samples no digit is sure for; D's mean logit on the real
digits of each class (all 5,000 bundled digits in their shuffled order, batches of 16, no augmentation)
and on the EMA samples of each predicted class.

    python benchmarks/class_balance.py RUN/network-snapshot-000050000.safetensors ... \\
        --out benchmarks/results/class_balance.jsonl

One JSON line per snapshot goes to --out; a summary line per snapshot is printed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from vitgan import Generator, build_discriminator
from vitgan.data import load_mnist5k
from vitgan.metrics.digits import CONFIDENT, classify, load_classifier
from vitgan.sampling import generate, latents
from vitgan.training.checkpoint import read_snapshot

SEEDS = range(100_000, 102_000)


def _shares(probs: np.ndarray) -> tuple[list[float], float]:
    """(share of all samples per digit among the sure ones, share of samples no digit is sure for)."""
    sure = probs.max(axis=1) >= CONFIDENT
    counts = np.bincount(probs.argmax(axis=1)[sure], minlength=10)
    return [round(float(c) / len(probs), 4) for c in counts], round(float(1 - sure.mean()), 4)


@torch.no_grad()
def _logits(D: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return torch.cat([D(images[i:i + 16]) for i in range(0, len(images) - len(images) % 16, 16)])


@torch.no_grad()
def measure(path: Path, net: torch.nn.Module, reals: torch.Tensor, labels: torch.Tensor) -> dict:
    cfg, states, meta = read_snapshot(path)
    z = latents(SEEDS, cfg.z_dim)
    record: dict = {"snapshot": str(path), "kimg": meta.get("cur_nimg", 0) / 1000}
    samples = {}
    for key in ("G_ema", "G"):
        G = Generator(cfg).eval()
        G.load_state_dict(states[key])
        samples[key] = generate(G, z, batch=250)
        record[f"{key}_share"], record[f"{key}_unsure"] = _shares(classify(net, samples[key])[1])
    D = build_discriminator(cfg).eval()
    D.load_state_dict(states["D"])
    real_logits = _logits(D, reals)
    kept = labels[:len(real_logits)]
    record["D_real_by_digit"] = [round(float(real_logits[kept == c].mean()), 3) for c in range(10)]
    fake = samples["G_ema"][:len(samples["G_ema"]) - len(samples["G_ema"]) % 16]
    fake_logits, predicted = _logits(D, fake), torch.from_numpy(classify(net, fake)[1].argmax(axis=1))
    record["D_fake_by_predicted_digit"] = [round(float(fake_logits[predicted == c].mean()), 3)
                                           if (predicted == c).any() else None for c in range(10)]
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("snapshots", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="append one JSON line per snapshot here")
    args = parser.parse_args()
    data, net = load_mnist5k(), load_classifier()
    reals, labels = data.batch(torch.arange(len(data))), data.labels
    for path in args.snapshots:
        record = measure(path, net, reals, labels)
        print(f"{path}: {record['kimg']:g} kimg; EMA G % per digit {[round(100 * s, 1) for s in record['G_ema_share']]}"
              f" (unsure {100 * record['G_ema_unsure']:.1f}%); G {[round(100 * s, 1) for s in record['G_share']]}"
              f" (unsure {100 * record['G_unsure']:.1f}%); D on real digits {record['D_real_by_digit']}")
        if args.out is not None:
            with args.out.open("a") as f:
                f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
