"""Where a tick of the default demo's training goes: the time of each kind of step and of the per-tick work.

    python benchmarks/tick_profile.py [--steps 48] [--threads N] [--no-compile] [--tick 4]

Builds the Trainer as `vitgan train` does for the `mnist` preset on the bundled digits (its precision, compiled
unless --no-compile), runs warm-up steps until every kind of step has run twice (the compiled ones are compiled
then), and times `--steps` steps one by one, by kind: a plain D step (Dmain) or one with lazy R1 (Dboth), each with
the G step that follows. Then it times each piece of the per-tick work (sample grid, per-tick digit FID on 1,000
samples, both generated in the run's precision as the loop does; D's singular values; the status line with its
stats row and plots and the grid files) and reads both as shares of a tick of `--tick` kimg; the digit FID is timed
once more from fp32 samples (as before 2026-11-27) for comparison. One JSON line is appended to
benchmarks/results/tick_profile.jsonl, with the machine's fp32 and bf16 GEMM rates. Run it on an otherwise idle
machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "tick_profile.jsonl"


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--tick", type=float, default=4.0, help="kimg per tick (vitgan train's default)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT))
    from vitgan import presets
    from vitgan.data import load_mnist5k
    from vitgan.metrics.digits import DigitFID
    from vitgan.nn.spectral import largest_singular_values
    from vitgan.sampling import generate, latents
    from vitgan.training.device import device_name, gemm_gflops, precision_name, resolve_precision
    from vitgan.training.loop import DIGIT_FID_SEEDS, GRID_SEEDS
    from vitgan.training.report import Report
    from vitgan.training.trainer import Trainer, images_per_step

    cpu = torch.device("cpu")
    cfg = presets.get("mnist")
    data = load_mnist5k()
    amp = resolve_precision("auto", cpu)
    trainer = Trainer(cfg, data, cpu, amp, preset="mnist", compile=args.compile, seed=0)
    warmup_start = time.perf_counter()
    seen: dict[str, int] = {}
    while min(seen.get("Dmain", 0), seen.get("Dboth", 0)) < 2:
        phase = trainer.d_phase()
        trainer.step()
        seen[phase] = seen.get(phase, 0) + 1
    warmup_s = time.perf_counter() - warmup_start
    times: dict[str, list[float]] = {"Dmain": [], "Dboth": []}
    for _ in range(args.steps):
        phase = trainer.d_phase()
        times[phase].append(seconds(trainer.step))
    mean = {phase: statistics.fmean(t) for phase, t in times.items() if t}
    # a tick's steps: one in r1_interval is a Dboth step
    tick_steps = args.tick * 1000 / images_per_step(cfg)
    r1_share = 1 / cfg.r1_interval if cfg.r1_gamma > 0 else 0.0
    steps_s = tick_steps * ((1 - r1_share) * mean["Dmain"] + r1_share * mean.get("Dboth", 0.0))

    digit_fid = DigitFID.of(data)
    grid_z, digit_z = latents(GRID_SEEDS, cfg.z_dim), latents(DIGIT_FID_SEEDS, cfg.z_dim)
    work: dict[str, float] = {}
    images = trainer.samples(grid_z)  # as the loop: in the run's precision
    work["grid_generate_s"] = seconds(lambda: trainer.samples(grid_z))
    work["digit_fid_s"] = seconds(lambda: digit_fid(trainer.samples(digit_z)))
    fp32_digit_fid_s = seconds(lambda: digit_fid(generate(trainer.G_ema, digit_z, batch=250)))  # before 2026-11-27
    work["singular_values_s"] = seconds(lambda: largest_singular_values(trainer.D))
    with tempfile.TemporaryDirectory() as tmp:
        report = Report(Path(tmp))
        row = {"tick": 1, "kimg": 4.0, "time": 60.0, "sec_per_kimg": 15.0, "img_per_sec": 66.0, "loss_d": 1.0,
               "loss_g": 1.0, "digit_fid": 30.0, "classes": 9}
        for tick in range(1, 4):  # a plot of a few rows, as a run's first ticks
            start = time.perf_counter()
            report.tick({**row, "tick": tick}, images, 4000 * tick, 60.0, [])
            work["status_and_plots_s"] = time.perf_counter() - start
        work["grid_file_s"] = seconds(lambda: report.grid(images, "fakes.png"))
        report.close()
    per_tick_s = sum(work.values())
    tick_s = steps_s + per_tick_s
    result = {
        "cpu": device_name(cpu), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "precision": precision_name(amp), "compiled": args.compile, "warmup_s": round(warmup_s, 1),
        "batch": cfg.batch, "r1_interval": cfg.r1_interval, "steps_timed": {k: len(v) for k, v in times.items()},
        "step_ms": {k: round(v * 1000, 1) for k, v in mean.items()},
        "r1_step_vs_plain": round(mean["Dboth"] / mean["Dmain"], 2) if "Dboth" in mean else None,
        "r1_share_of_steps": round(r1_share * (mean.get("Dboth", 0.0) - mean["Dmain"]) / (steps_s / tick_steps), 3),
        "steps_images_per_s": round(images_per_step(cfg) * tick_steps / steps_s, 1),
        "plain_step_images_per_s": round(images_per_step(cfg) / mean["Dmain"], 1),
        **{k: round(v, 3) for k, v in work.items()}, "digit_fid_fp32_samples_s": round(fp32_digit_fid_s, 3),
        "tick_kimg": args.tick, "per_tick_share": round(per_tick_s / tick_s, 3),
        "tick_images_per_s": round(args.tick * 1000 / tick_s, 1),
        "gemm_fp32_gflops_per_s": round(gemm_gflops(cpu, torch.float32), 1),
        "gemm_bf16_gflops_per_s": round(gemm_gflops(cpu, torch.bfloat16), 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    line = json.dumps(result)
    print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
