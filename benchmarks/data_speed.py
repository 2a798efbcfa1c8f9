"""Data loading against training speed: can the loader ever hold training back?

    python benchmarks/data_speed.py [--steps 3] [--celeba 2000] [--out benchmarks/results/data_speed.json]

Writes full-size CIFAR-10 training batches (50,000 synthetic 32x32 images in the published pickle layout) and a
sample of CelebA-sized JPEGs (178x218), then times, in images per second:
- `load` of the CIFAR batches folder (unpickle, into memory: once per run);
- `vitgan prepare` of it to a zip, and `load` of that zip (PNG decoding: once per run);
- `load` of the JPEGs with CelebA's 108x108 crop and a resize to 64 (once per run);
- `ImageData.batch` of 128 random images with --mirror: the only data work done per training step;
- `Trainer.step` (synchronised) of the `cifar10` preset at batch 128 (one D and one G step), after one warm-up step.
"""

from __future__ import annotations

import argparse
import json
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vitgan import presets
from vitgan.data import load
from vitgan.data.prepare import prepare
from vitgan.training.device import resolve_precision
from vitgan.training.trainer import Trainer


def synthetic(rng: np.random.Generator, count: int, height: int, width: int) -> np.ndarray:
    """Smooth colour gradients with noise: PNGs of these compress and decode like photos, not like pure noise."""
    y, x = np.mgrid[:height, :width]
    base = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (height + width)], -1)
    noise = rng.integers(-24, 24, (count, height, width, 3))
    return np.clip(base + noise + rng.integers(-60, 60, (count, 1, 1, 3)), 0, 255).astype(np.uint8)


def timed(fn) -> tuple[object, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed training steps")
    parser.add_argument("--celeba", type=int, default=2000, help="CelebA-sized JPEGs to decode")
    parser.add_argument("--out", default="benchmarks/results/data_speed.json")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cifar-10-batches-py"
        root.mkdir()
        for b in range(1, 6):
            rows = synthetic(rng, 10_000, 32, 32).transpose(0, 3, 1, 2).reshape(10_000, 3072)
            batch = {b"data": rows, b"labels": rng.integers(0, 10, 10_000).tolist()}
            (root / f"data_batch_{b}").write_bytes(pickle.dumps(batch, protocol=2))
        (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": []}, protocol=2))
        data, seconds = timed(lambda: load(str(root), resolution=32, channels=3, progress=False))
        rates["load_cifar_batches"] = len(data) / seconds
        zipped = Path(tmp) / "cifar10.zip"
        _, seconds = timed(lambda: prepare(root, zipped, progress=False, log=lambda line: None))
        rates["prepare_cifar_to_zip"] = len(data) / seconds
        data, seconds = timed(lambda: load(str(zipped), resolution=32, channels=3, progress=False))
        rates["load_prepared_zip_32"] = len(data) / seconds
        celeba = Path(tmp) / "img_align_celeba"
        celeba.mkdir()
        for i, image in enumerate(synthetic(rng, args.celeba, 218, 178)):
            Image.fromarray(image).save(celeba / f"{i + 1:06d}.jpg", quality=95)
        faces, seconds = timed(lambda: load(str(celeba), resolution=64, channels=3, progress=False))
        rates["load_celeba_jpeg_to_64"] = len(faces) / seconds

    indices = torch.randint(len(data), (100, 128))
    _, seconds = timed(lambda: [data.batch(i, mirror=True) for i in indices])
    rates["batch_128_with_mirror"] = 100 * 128 / seconds

    cfg = presets.get("cifar10")
    device = torch.device("cpu")
    trainer = Trainer(cfg, data, device, resolve_precision("auto", device), preset="cifar10")
    trainer.step()  # warm-up
    _, seconds = timed(lambda: [trainer.step() for _ in range(args.steps)])
    rates["train_step_cifar10_batch128"] = args.steps * cfg.batch / seconds

    result = {"images_per_second": {k: round(v, 1) for k, v in rates.items()}, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "precision": str(trainer.amp)}
    print(json.dumps(result, indent=2))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
