"""The GPU acceptance check's steps that are Python (benchmarks/gpu_check.sh runs them in order).

    python benchmarks/gpu_check.py digits DIR            # the bundled digits as 32x32 PNGs (trained as RGB)
    python benchmarks/gpu_check.py summary OUT RUN [EXIT] # bench lines, run, samples -> OUT/summary.json

`summary` reads OUT/bench.jsonl (its `vitgan bench` lines), OUT/step.jsonl (gpu_step.py's), the run folder's
stats.jsonl and its last snapshot, and writes OUT/summary.json: images/s and model FLOP utilisation against the
card's published dense peak, whether D's real and fake logits separated, G's spread across z, and the digit FID /
classes of 5,000 samples (RGB averaged to grey, against all 5,000 digits). It prints the same as one JSON line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

# Published dense tensor-core peaks, TFLOP/s, by a substring of the card's name. fp32 has none here: vitgan enables
# TF32 on CUDA, so its fp32 rate is read against the GEMM rate `vitgan bench` measures in the same process.
PEAK_TFLOPS = {
    "H200": {"bf16": 989.0, "fp16": 989.0},
    "H100 PCIe": {"bf16": 756.0, "fp16": 756.0},
    "H100": {"bf16": 989.0, "fp16": 989.0},
    "A100": {"bf16": 312.0, "fp16": 312.0},
    "L40S": {"bf16": 362.0, "fp16": 362.0},
    "A10": {"bf16": 125.0, "fp16": 125.0},
    "L4": {"bf16": 121.0, "fp16": 121.0},
    "V100": {"bf16": 0.0, "fp16": 125.0},
    "T4": {"bf16": 0.0, "fp16": 65.0},
}


def peak(device: str, precision: str) -> float | None:
    for name, peaks in PEAK_TFLOPS.items():
        if name in device:
            return peaks.get(precision) or None
    return None


def write_digits(folder: Path) -> None:
    from vitgan.data import load_mnist5k

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(load_mnist5k().images[:, 0].numpy()):
        Image.fromarray(image).save(folder / f"{i:05d}.png")


def summary(out: Path, run: Path, exit_code: int = 0) -> dict:
    from vitgan.data import load_mnist5k
    from vitgan.fileio import read_jsonl
    from vitgan.metrics.digits import DigitFID
    from vitgan.pretrained import load
    from vitgan.sampling import generate, latents
    from vitgan.training import checkpoint

    result: dict = {"bench": []}
    for row in read_jsonl(out / "bench.jsonl"):
        tflops = peak(row["device"], row["precision"])
        vs_gemm = f"iteration_vs_gemm_{row['precision']}"
        result["bench"].append({**{k: row[k] for k in ("device", "precision", "batch", "images_per_s",
                                                         "iteration_gflops_per_s", "peak_memory_mb") if k in row},
                                "iteration_vs_gemm": row.get(vs_gemm),
                                "peak_tflops": tflops,
                                "mfu": row["iteration_gflops_per_s"] / (tflops * 1000) if tflops else None})
    step = out / "step.jsonl"  # gpu_step.py's side-by-side lines, as they are
    result["step"] = [{k: v for k, v in row.items() if k not in ("device", "torch", "gemm_gflops_per_s")}
                      for row in read_jsonl(step)] if step.exists() else []
    rows = read_jsonl(run / "stats.jsonl")
    last = rows[-1]
    result["training"] = {k: last.get(k) for k in ("kimg", "img_per_sec", "loss_d", "loss_g", "logits_real",
                                                    "logits_fake", "g_z_std", "d_sigma_max")}
    result["training"]["logits_separate"] = bool(last["logits_real"] - last["logits_fake"] > 0.5)
    result["training"]["exit_code"] = exit_code
    snapshots = checkpoint.snapshots(run)
    if not snapshots:  # the run stopped before its first snapshot (e.g. a NaN): no samples to measure
        result["samples"] = result["one_mode"] = None
        (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result))
        return result
    generator = load(snapshots[-1]).to("cuda" if torch.cuda.is_available()
                                                                                 else "cpu")
    images = generate(generator, latents(range(100_000, 105_000), generator.z_dim), batch=500).cpu()
    grey = images.mean(dim=1, keepdim=True)
    result["samples"] = {**DigitFID.of(load_mnist5k())(grey),
                         "pixel_std_across_z": float(images.std(dim=0).mean())}
    result["one_mode"] = result["samples"]["classes"] <= 1
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return result


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "digits":
        write_digits(Path(argv[1]))
    elif len(argv) >= 3 and argv[0] == "summary":
        summary(Path(argv[1]), Path(argv[2]), int(argv[3]) if len(argv) > 3 else 0)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    sys.exit(main(sys.argv[1:]))
