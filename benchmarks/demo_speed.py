"""The default CPU demo's training speed, now against an earlier commit, on this machine in one run.

    python benchmarks/demo_speed.py [--baseline e0c3a23] [--minutes 4] [--also '--ranks 1']

Each version runs `vitgan train --minutes M` exactly as a new user would (the `mnist` preset on the bundled digits,
its own defaults: threads, precision, compiling, OpenMP and malloc settings), from a checkout of the baseline commit
(a temporary git worktree) and from this working tree, one after the other. From each run's stats.jsonl: the kimg
reached in M minutes, and the steady rate (images per second over the ticks after the first, which holds any
compiling). One JSON line per version, with the machine's fp32 and bf16 GEMM rates measured alone in the same run,
is appended to benchmarks/results/demo_speed.jsonl. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "demo_speed.jsonl"
TICK_KIMG = 2.0


def run(tree: Path, minutes: float, outdir: Path, extra: list[str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GLIBC_TUNABLES")}
    env["PYTHONPATH"] = str(tree)
    subprocess.run([sys.executable, "-m", "vitgan", "train", "--minutes", str(minutes), "--tick", str(TICK_KIMG),
                    "--outdir", str(outdir), *extra], cwd=tree, env=env, check=True, capture_output=True, text=True)
    folder = sorted(p for p in outdir.iterdir() if p.is_dir())[-1]
    rows = [json.loads(line) for line in (folder / "stats.jsonl").read_text().splitlines() if line.strip()]
    first, last = rows[0], rows[-1]
    options = json.loads((folder / "training_options.json").read_text())
    return {"kimg": round(last["kimg"], 3), "minutes": minutes, "first_tick_s": round(first["time"], 1),
            "steady_images_per_s": round((last["kimg"] - first["kimg"]) * 1000 / (last["time"] - first["time"]), 1)
            if len(rows) > 1 else None,  # (one tick: too short to tell)
            "compiled": options.get("compiled", options["run"].get("compile")), "precision": options["precision"],
            "torch": options["torch"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="e0c3a23")
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--also", action="append", default=[], metavar="ARGS",
                        help="run this tree once more with these train arguments, e.g. --also '--ranks 1' (repeatable)")
    args = parser.parse_args()
    import torch

    from vitgan.bench import _device_name, gemm_gflops

    machine = {"cpu": _device_name(torch.device("cpu")),
               "gemm_fp32_gflops_per_s": round(gemm_gflops(torch.device("cpu"), torch.float32), 1),
               "gemm_bf16_gflops_per_s": round(gemm_gflops(torch.device("cpu"), torch.bfloat16), 1)}
    print(json.dumps(machine), flush=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base), args.baseline], cwd=ROOT, check=True)
        try:
            rows = []
            versions = [(f"baseline {args.baseline}", base, []), (f"this tree (HEAD {head})", ROOT, [])]
            versions += [(f"this tree (HEAD {head}) {also}", ROOT, also.split()) for also in args.also]
            for name, tree, extra in versions:
                row = {"version": name, **run(tree, args.minutes, Path(tmp) / f"runs-{len(rows)}", extra), **machine,
                       "date": time.strftime("%Y-%m-%d")}
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
    for row in rows:
        base_rate, rate = rows[0]["steady_images_per_s"], row["steady_images_per_s"]
        row["steady_speedup_vs_baseline"] = round(rate / base_rate, 2) if rate and base_rate else None
        row["kimg_speedup_vs_baseline"] = round(row["kimg"] / rows[0]["kimg"], 2)
    with RESULTS.open("a") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    print(f"steady rate {rows[1]['steady_speedup_vs_baseline']}x the baseline's; kimg in {args.minutes:g} minutes "
          f"{rows[1]['kimg_speedup_vs_baseline']}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
