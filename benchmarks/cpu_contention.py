"""How much a CPU training iteration loses beside another busy process, by OpenMP wait policy and thread count.

    python benchmarks/cpu_contention.py [--preset mnist] [--batch 16] [--busy 1]

For each setting (2 threads with OpenMP's default waiting, 2 threads waiting passively, which `vitgan` now sets
unless OMP_WAIT_POLICY is set, and 1 thread) it runs `vitgan bench` alone, then beside --busy processes that each
keep one core busy with 1-thread matrix products, and prints images/s and the slowdown. Each JSON line (with the
GEMM rates of the machine measured alone in the same run) is appended to benchmarks/results/cpu_contention.jsonl.
Run it on an otherwise idle machine: the "alone" figures need the cores to themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "cpu_contention.jsonl"
BUSY = "import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\nwhile True:\n    a @ a\n"
# "" keeps libgomp's default (spinning) and tells vitgan not to set its own (an empty value counts as set)
SETTINGS = [("2 threads, OpenMP default", "2", ""), ("2 threads, passive", "2", "PASSIVE"),
            ("1 thread", "1", "PASSIVE")]


def bench(preset: str, batch: int, threads: str, policy: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": threads, "OMP_WAIT_POLICY": policy}
    command = [sys.executable, "-m", "vitgan", "bench", "--preset", preset, "--batch", str(batch), "--repeats", "5"]
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mnist")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--busy", type=int, default=1, help="busy processes beside the benchmark")
    args = parser.parse_args()
    import torch

    from vitgan.training.device import gemm_gflops

    gemm = {"gemm_fp32_gflops_per_s": round(gemm_gflops(torch.device("cpu"), torch.float32), 1),
            "gemm_bf16_gflops_per_s": round(gemm_gflops(torch.device("cpu"), torch.bfloat16), 1)}
    print(json.dumps(gemm), flush=True)
    for name, threads, policy in SETTINGS:
        alone = bench(args.preset, args.batch, threads, policy)
        busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(args.busy)]
        try:
            time.sleep(2)
            shared = bench(args.preset, args.batch, threads, policy)
        finally:
            for proc in busy:
                proc.kill()
                proc.wait()
        row = {"setting": name, "threads": int(threads), "omp_wait_policy": policy or "(default)",
               "busy_processes": args.busy, "preset": args.preset, "batch": args.batch, "device": alone["device"],
               "torch": alone["torch"], "alone_images_per_s": alone["images_per_s"],
               "shared_images_per_s": shared["images_per_s"],
               "slowdown": round(alone["images_per_s"] / shared["images_per_s"], 2), **gemm,
               "date": time.strftime("%Y-%m-%d")}
        print(json.dumps(row), flush=True)
        with RESULTS.open("a") as f:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
