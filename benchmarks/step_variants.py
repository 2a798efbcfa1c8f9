"""The `mnist` demo's training step under other compile modes and precisions, and where its time goes.

    python benchmarks/step_variants.py [--variants default,max-autotune,fp32] [--rounds 6]

Builds one Trainer per variant in this one process, as `vitgan train` does for the `mnist` preset on the bundled
digits: `default` (bf16 autocast, torch.compile's default mode: what the demo runs), `max-autotune` (the same with
torch.compile(mode="max-autotune-no-cudagraphs"): Inductor benchmarks its own C++ matrix-product kernels, AMX
micro-kernels where the CPU has them, against aten's and keeps the faster; several minutes of compiling),
`fp32` (compiled, no autocast), `eager` (bf16, not compiled). Each is warmed up for two lazy-R1 cycles (compiling
every kind of step), then the variants are timed in turns, `--rounds` rounds of two cycles each, so a drift of the
machine's speed reaches every variant alike; the median round gives each one's img/s.

Then, for the default variant, the profiler splits the self time of its ordinary steps (no R1; the flop counter
cannot follow R1's double backward) into matrix products (aten mm/bmm/addmm/baddbmm), the compiled graphs' own
kernels (elementwise work, reductions, softmax, norms), the fused Adam and the rest, and reads the step's model
FLOPs (matrix products, counted on the plain modules) against the time in matrix products: the rate the products
themselves reach, beside the fp32 and bf16 4096^3 GEMM rates of this process. One JSON line is appended to
benchmarks/results/step_variants.jsonl. Like `vitgan train`, it re-runs itself with passive OpenMP waiting and
glibc's malloc keeping freed memory unless those are set. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "step_variants.jsonl"
VARIANTS = {"default": (None, True, "bf16"), "max-autotune": ("max-autotune-no-cudagraphs", True, "bf16"),
            "fp32": (None, True, "fp32"), "eager": (None, False, "bf16")}  # compile mode, compiled, precision
MATRIX_PRODUCTS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="default,max-autotune,fp32",
                        help=f"comma-separated, from {', '.join(VARIANTS)} (default first: it is profiled)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or names[0] != "default":
        parser.error(f"--variants: unknown {unknown}" if unknown else "--variants: start with default")
    sys.path.insert(0, str(ROOT))
    from vitgan.launch import runtime_env

    wanted = runtime_env(os.environ)
    if wanted:  # the process settings the demo runs with
        os.environ.update(wanted)
        os.execv(sys.executable, [sys.executable, *sys.argv])
    import torch
    from torch.profiler import ProfilerActivity, profile

    from vitgan import presets
    from vitgan.bench import count_flops
    from vitgan.data import load_mnist5k
    from vitgan.training.device import device_name, gemm_gflops, resolve_precision
    from vitgan.training.trainer import Trainer, images_per_step

    cpu = torch.device("cpu")
    cfg = presets.get("mnist")
    data = load_mnist5k()
    cycle = cfg.r1_interval if cfg.r1_gamma > 0 else 1

    def two_cycles(trainer: Trainer) -> float:
        """Seconds for two lazy-R1 cycles of steps."""
        start = time.perf_counter()
        for _ in range(2 * cycle):
            trainer.step()
        return time.perf_counter() - start

    plain_compile = torch.compile
    trainers, warmup_s = {}, {}
    for name in names:
        mode, compiled, precision = VARIANTS[name]
        torch.compile = functools.partial(plain_compile, mode=mode) if mode else plain_compile
        try:
            trainer = Trainer(cfg, data, cpu, resolve_precision(precision, cpu), preset="mnist", compile=compiled,
                              seed=0)
        finally:
            torch.compile = plain_compile
        warmup_s[name] = round(two_cycles(trainer), 1)
        print(f"{name}: warm-up (compiling) {warmup_s[name]} s", flush=True)
        trainers[name] = trainer
    rounds: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name, trainer in trainers.items():
            rounds[name].append(two_cycles(trainer) / (2 * cycle))  # per step

    trainer = trainers["default"]
    with profile(activities=[ProfilerActivity.CPU]):  # the profiler's own start-up, not counted
        pass
    self_ms = {"matrix products": 0.0, "compiled kernels": 0.0, "fused Adam": 0.0, "other": 0.0}
    ordinary = 0
    while ordinary < 2 * cycle:
        if trainer.d_phase() != "Dmain":
            trainer.step()  # a lazy-R1 step, not profiled
            continue
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            trainer.step()
        ordinary += 1
        for event in prof.key_averages():
            kind = ("matrix products" if event.key in MATRIX_PRODUCTS else
                    "compiled kernels" if "CompiledFxGraph" in event.key else
                    "fused Adam" if event.key == "aten::_fused_adam_" else "other")
            self_ms[kind] += event.self_cpu_time_total / 1000 / (2 * cycle)
    trainer.uncompile()  # the flop counter reads the plain modules
    while trainer.d_phase() != "Dmain":
        trainer.step()
    step_flops = count_flops(trainer.step)
    step_ms = sum(self_ms.values())
    fp32, bf16 = gemm_gflops(cpu, torch.float32), gemm_gflops(cpu, torch.bfloat16)
    row = {
        "date": time.strftime("%Y-%m-%d"), "device": device_name(cpu), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "preset": "mnist", "batch": cfg.batch,
        "warmup_s": warmup_s,
        "cycle_images_per_s": {name: round(images_per_step(cfg) / statistics.median(times), 1)
                               for name, times in rounds.items()},
        "rounds_ms": {name: [round(t * 1000, 1) for t in times] for name, times in rounds.items()},
        "ordinary_step_self_ms": {kind: round(ms, 1) for kind, ms in self_ms.items()},
        "ordinary_step_share": {kind: round(ms / step_ms, 3) for kind, ms in self_ms.items()},
        "ordinary_step_gflop": round(step_flops / 1e9, 2),
        "matrix_products_gflops_per_s": round(step_flops / self_ms["matrix products"] / 1e6, 1),
        "gemm_fp32_gflops_per_s": round(fp32, 1), "gemm_bf16_gflops_per_s": round(bf16, 1),
    }
    row["matrix_products_vs_gemm_bf16"] = round(row["matrix_products_gflops_per_s"] / bf16, 3)
    print(json.dumps(row, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
