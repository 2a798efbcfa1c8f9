"""Speed benchmark: `vitgan bench` for the paper's CIFAR-10 preset and the MNIST demo, in bf16 and fp32 (and with
torch.compile), one configuration per process, one after another; appends each JSON line to
benchmarks/results/speed.jsonl and prints a markdown table of the figures the speed targets refer to.

    python benchmarks/speed.py              # all configurations (about 15 minutes on the 2-core CPU)
    python benchmarks/speed.py --quick      # the cifar10 batch-64 pair only

Run it with nothing else on the machine: two cores are easily shared away.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "speed.jsonl"
RUNS = [
    ("cifar10", 64, "bf16", False),
    ("cifar10", 64, "fp32", False),
    ("cifar10", 128, "bf16", False),
    ("mnist", 16, "bf16", False),
    ("mnist", 16, "fp32", False),
    ("mnist", 16, "bf16", True),
]
COLUMNS = ["preset", "batch", "precision", "compile", "d_fwd_bwd_ms", "vit_fwd_bwd_ms", "d_vs_vit", "g_fwd_bwd_ms",
           "iteration_ms", "images_per_s", "iteration_gflops_per_s", "gemm_fp32_gflops_per_s",
           "iteration_vs_gemm_fp32", "peak_memory_mb"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the cifar10 batch-64 pair")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    rows = []
    for preset, batch, precision, compiled in RUNS[:2] if args.quick else RUNS:
        command = [sys.executable, "-m", "vitgan", "bench", "--preset", preset, "--batch", str(batch), "--precision",
                   precision, "--device", args.device, "--out", str(RESULTS)] + (["--compile"] if compiled else [])
        print(" ".join(command[2:]), file=sys.stderr, flush=True)
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"device: {rows[0]['device']}, torch {rows[0]['torch']}\n")
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in COLUMNS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
