"""Where a training step first turns non-finite on a device, under several precisions and attention paths.

    python benchmarks/gpu_nan_probe.py --out probe.jsonl [--preset cifar10] [--batch 128] [--steps 24]

For each setting (bf16 with the fused SDPA attention, bf16 with the explicit attention, fp16, fp32 with TF32) it
trains the preset on random images (as `vitgan bench` does) for --steps steps, timing each, and stops at the first
NonFiniteError. One JSON line per setting: the step and term that failed, the parameters whose gradient or value
was non-finite (first 8 of each network), whether G's output and D's logits were finite then, and the median step
time and images/s of the finite steps. Written for the first CUDA run, where `vitgan bench --preset cifar10` stopped
with `grad_g became nan in step 8` in bf16.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from vitgan import presets
from vitgan.data import ImageData
from vitgan.nn import attention
from vitgan.training.device import resolve_device
from vitgan.training.trainer import NonFiniteError, Trainer

SETTINGS = {"bf16": (torch.bfloat16, None), "bf16-explicit-attention": (torch.bfloat16, False),
            "fp16": (torch.float16, None), "fp32": (None, None)}


def non_finite(net: torch.nn.Module) -> dict[str, list[str]]:
    grads = [n for n, p in net.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    values = [n for n, p in net.named_parameters() if not torch.isfinite(p).all()]
    return {"grads": grads[:8], "n_grads": len(grads), "values": values[:8]}


def probe(name: str, preset: str, batch: int, steps: int, device: torch.device) -> dict:
    amp, fused = SETTINGS[name]
    attention.scaled_attention.__kwdefaults__["fused"] = fused
    cfg = presets.get(preset, batch=batch)
    torch.manual_seed(0)
    images = torch.randint(0, 256, (max(2 * batch, 256), cfg.channels, cfg.resolution, cfg.resolution),
                           dtype=torch.uint8)
    trainer = Trainer(cfg, ImageData(images, torch.full((len(images),), -1), "random"), device, amp, preset=preset)
    row: dict = {"setting": name, "preset": preset, "batch": batch, "device": torch.cuda.get_device_name(device)
                 if device.type == "cuda" else "cpu", "torch": torch.__version__}
    times = []
    try:
        for _ in range(steps):
            start = time.perf_counter()
            stats = trainer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
            row.setdefault("first_stats", {k: round(v, 4) for k, v in stats.items()})
            row["last_stats"] = {k: round(v, 4) for k, v in stats.items()}
        row["failed"] = None
    except NonFiniteError as error:
        row["failed"] = {"step": error.step, "term": error.term, "message": str(error),
                         "G": non_finite(trainer.G), "D": non_finite(trainer.D)}
        try:
            with torch.no_grad(), trainer.autocast():
                fakes = trainer.G(torch.randn(8, cfg.z_dim, device=device))
                row["failed"]["fakes_finite"] = bool(torch.isfinite(fakes).all())
                row["failed"]["logits_finite"] = bool(torch.isfinite(trainer.D(fakes.float())).all())
        except Exception as inner:  # noqa: BLE001 - a diagnosis must not lose the row
            row["failed"]["after"] = repr(inner)
    steady = times[2:] or times
    if steady:
        row["step_ms_median"] = round(statistics.median(steady) * 1000, 2)
        row["images_per_s"] = round(batch / statistics.median(steady), 1)
    row["steps_done"] = len(times)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="cifar10")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    device = resolve_device(args.device)
    with open(args.out, "a") as out:
        for name in args.settings.split(","):
            row = probe(name, args.preset, args.batch, args.steps, device)
            print(json.dumps(row), flush=True)
            out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
