"""The training step eager against compiled, side by side in one process (issue 29; benchmarks/gpu_check.sh runs it).

    python benchmarks/gpu_step.py --out DIR [--budget-s 270] [--precision bf16] [--device cuda]

For each case (a preset at a batch) and each way of running it (eager; torch.compile's default,
max-autotune-no-cudagraphs and reduce-overhead modes), in order of what the targets need (the cifar10 preset at batch
128 in every mode first, then batch 512, then the mnist preset at 16 and 256; max-autotune's long compiling only where
time is left):
- throughput: `Trainer.run_step` (no host sync) STEPS times back to back after warming up (compiling), one sync at
  the end, so a cycle of lazy-R1 iterations is in it: images/s, and the model FLOP utilisation (the matrix products of
  an ordinary eager iteration, counted by torch.utils.flop_counter) against the card's published dense peak
  (gpu_check.py's table) and against the GEMM rate measured in this process;
- host syncs per step: CUDA's sync debug mode over a few run_steps (0 is the aim: any is a kernel queue drained);
- for each compiled mode of the first case, `vitgan.training.equality.step_difference`: one step from the eager
  Trainer's state, its terms, gradients, weight updates and buffers against eager's, within the precision's stated
  tolerance.
One JSON line per (case, mode) to DIR/step.jsonl (and stdout); a case that fails (a compile error, CUDA graphs that
refuse) is a line with its error; one that the time budget leaves out is a line saying so. On a CPU (`--device cpu`,
for trying the script) reduce-overhead is left out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from gpu_check import peak  # noqa: E402

from vitgan import presets  # noqa: E402
from vitgan.bench import iteration_flops, random_trainer  # noqa: E402
from vitgan.training.device import (  # noqa: E402
    device_name,
    gemm_gflops,
    precision_name,
    resolve_device,
    resolve_precision,
    synchronize,
)
from vitgan.training.equality import step_difference  # noqa: E402
from vitgan.training.trainer import Trainer, images_per_step  # noqa: E402

MODES = ("eager", "default", "reduce-overhead", "max-autotune-no-cudagraphs")
CASES = (("cifar10", 128), ("cifar10", 512), ("mnist", 16), ("mnist", 256))
STEPS = 32  # timed steps per way (a multiple of every preset's r1_interval: whole lazy-R1 cycles)
MAX_AUTOTUNE_S = 150  # left in the budget to start a max-autotune case (its compiling tunes every matrix product)


def trainer_for(preset: str, batch: int, device: torch.device, amp: torch.dtype | None, mode: str) -> Trainer:
    compiled = mode != "eager"
    return random_trainer(presets.get(preset, batch=batch), preset=preset, device=device, amp=amp, compile=compiled,
                          compile_mode=mode if compiled else "default")


def throughput(trainer: Trainer, device: torch.device) -> tuple[float, float]:
    """(seconds to warm up, i.e. compile; images/s over STEPS back-to-back steps)."""
    start = time.perf_counter()
    for _ in range(trainer.cfg.r1_interval + 2):  # every graph (R1's and the plain D step's) compiled
        trainer.run_step()
    trainer.check_finite()
    synchronize(device)
    warm = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(STEPS):
        trainer.run_step()
    trainer.check_finite()
    synchronize(device)
    return warm, STEPS * images_per_step(trainer.cfg) / (time.perf_counter() - start)


def syncs_per_step(trainer: Trainer, device: torch.device, steps: int = 4) -> float | None:
    if device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                trainer.run_step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget-s", type=float, default=270.0, help="stop starting new measurements after this")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--cases", default=",".join(f"{p}:{b}" for p, b in CASES), help="preset:batch,...")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    device = resolve_device(args.device)
    amp = resolve_precision(args.precision, device)
    precision = precision_name(amp)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "step.jsonl"
    gemm = {name: round(gemm_gflops(device, dtype), 1)
            for name, dtype in {"fp32": torch.float32, precision: amp or torch.float32}.items()}
    card_peak = peak(device_name(device), precision)
    cases = [(p, int(b)) for p, b in (c.split(":") for c in args.cases.split(","))]
    modes = [m for m in MODES if device.type == "cuda" or m != "reduce-overhead"]
    # every case's eager and default first, then the other modes in the same order: the targets' figures come first
    order = [(case, mode) for case in cases for mode in ("eager", "default")]
    order += [(case, mode) for mode in modes[2:] for case in cases]
    flops: dict[tuple[str, int], int] = {}
    eager_of: dict[tuple[str, int], Trainer] = {}
    for (preset, batch), mode in order:
        left = args.budget_s - (time.perf_counter() - began)
        row = {"preset": preset, "batch": batch, "mode": mode, "precision": precision, "device": device_name(device),
               "torch": torch.__version__, "gemm_gflops_per_s": gemm, "peak_tflops": card_peak}
        if left <= 0 or (mode.startswith("max-autotune") and left < MAX_AUTOTUNE_S):
            row["skipped"] = f"time budget ({args.budget_s:g} s) spent"
        else:
            try:
                torch._dynamo.reset()  # each way compiles afresh, for its own shapes
                trainer = trainer_for(preset, batch, device, amp, mode)
                warm, rate = throughput(trainer, device)
                if (preset, batch) not in flops:
                    flops[(preset, batch)] = iteration_flops(trainer if mode == "eager" else
                                                             trainer_for(preset, batch, device, amp, "eager"))
                per_image = flops[(preset, batch)] / images_per_step(trainer.cfg)
                achieved = per_image * rate / 1e9  # GFLOP/s
                row.update({"warmup_s": round(warm, 1), "images_per_s": round(rate, 1),
                            "iteration_gflop": round(flops[(preset, batch)] / 1e9, 2),
                            "gflops_per_s": round(achieved, 1),
                            "mfu": round(achieved / (card_peak * 1000), 4) if card_peak else None,
                            "vs_gemm": round(achieved / gemm[precision], 4),
                            "syncs_per_step": syncs_per_step(trainer, device),
                            "r1_compiled": None if mode == "eager" else not trainer.R1_run.use_eager})
                if mode == "eager":
                    eager_of[(preset, batch)] = trainer
                elif (preset, batch) == cases[0] and cases[0] in eager_of:
                    row["equality"] = step_difference(eager_of[cases[0]], trainer, precision)
            except Exception as error:  # a mode that fails is a finding, the others still run
                row["error"] = f"{type(error).__name__}: {str(error).strip()[:400]}"
        row["elapsed_s"] = round(time.perf_counter() - began, 1)
        line = json.dumps(row)
        print(line, flush=True)
        with out.open("a") as f:
            f.write(line + "\n")
        for kept in [k for k in eager_of if k != cases[0]]:
            del eager_of[kept]  # only the first case's eager Trainer is needed later (its equality checks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
