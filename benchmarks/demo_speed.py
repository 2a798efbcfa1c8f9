"""The default CPU demo's training speed, now against an earlier commit, on this machine in one run.

    python benchmarks/demo_speed.py [--baseline e0c3a23] [--minutes 4] [--also '--ranks 2'] [--bench]

Each version runs `vitgan train --minutes M` exactly as a new user would (the `mnist` preset on the bundled digits,
its own defaults: threads, precision, compiling, OpenMP and malloc settings), from a checkout of the baseline commit
(a temporary git worktree) and from this working tree, one after the other; `--also` adds this tree with other train
arguments (e.g. the layout the machine does not default to: `--ranks 2` on a CPU with AMX, `--ranks 1` without).
From each run's stats.jsonl: the kimg reached in M minutes, the steady rate (images per second over the ticks after
the first, which holds any compiling) and, where the version logs it (`maintenance_s`), the share of that time spent
in the per-tick work (digit FID, grids, plots, checkpoints). One JSON line per version, with the machine's fp32 and
bf16 GEMM rates measured alone in the same run, is appended to benchmarks/results/demo_speed.jsonl.

--bench also runs `vitgan bench` in both trees, one after the other: the `cifar10` iteration at batch 64 in fp32 and
bf16 with the *baseline's* cifar10 configuration in both (this tree's preset has since changed recipe, so it gets
the baseline's values as flags: the same work, two versions of the code), and the `mnist` iteration at batch 16
in bf16 as each version's demo runs it (this tree compiled, the baseline eager); one JSON line per bench, with the
version and the GEMM rates of its own process, is appended to benchmarks/results/demo_speed_bench.jsonl. Run it on
an otherwise idle machine.
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

from vitgan.fileio import read_jsonl

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "demo_speed.jsonl"
BENCH_RESULTS = ROOT / "benchmarks" / "results" / "demo_speed_bench.jsonl"
TICK_KIMG = 4.0  # vitgan train's default tick: the per-tick share is the demo's


def vitgan(tree: Path, *args: str) -> str:
    """`python -m vitgan ARGS` from `tree`, with a user's environment (its own thread, OpenMP and malloc defaults)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GLIBC_TUNABLES")}
    env["PYTHONPATH"] = str(tree)
    return subprocess.run([sys.executable, "-m", "vitgan", *args], cwd=tree, env=env, check=True,
                          capture_output=True, text=True).stdout


def run(tree: Path, minutes: float, outdir: Path, extra: list[str]) -> dict:
    vitgan(tree, "train", "--minutes", str(minutes), "--tick", str(TICK_KIMG), "--outdir", str(outdir), *extra)
    folder = sorted(p for p in outdir.iterdir() if p.is_dir())[-1]
    rows = read_jsonl(folder / "stats.jsonl")
    first, last = rows[0], rows[-1]
    options = json.loads((folder / "training_options.json").read_text())
    # the ends of ticks 1..n-1 fall between the first and the last row; row k logs the end of tick k-1
    work = [r["maintenance_s"] for r in rows[1:] if "maintenance_s" in r]
    return {"kimg": round(last["kimg"], 3), "minutes": minutes, "first_tick_s": round(first["time"], 1),
            "steady_images_per_s": round((last["kimg"] - first["kimg"]) * 1000 / (last["time"] - first["time"]), 1)
            if len(rows) > 1 else None,  # (one tick: too short to tell)
            "tick_work_share": round(sum(work) / (last["time"] - first["time"]), 3)
            if work and len(work) == len(rows) - 1 else None,
            "ranks": options.get("ranks", 1),
            "compiled": options.get("compiled", options["run"].get("compile")), "precision": options["precision"],
            "torch": options["torch"]}


def baseline_cifar10_flags(base: Path) -> list[str]:
    """This tree's `vitgan bench --preset cifar10` flags that give the baseline's cifar10 configuration: its values
    for every field it has, this tree's defaults for fields added since."""
    from vitgan import presets
    from vitgan.config import Config

    code = "import json; from vitgan import presets; print(json.dumps(presets.get('cifar10').to_dict()))"
    env = {**os.environ, "PYTHONPATH": str(base)}
    old = json.loads(subprocess.run([sys.executable, "-c", code], cwd=base, env=env, check=True,
                                    capture_output=True, text=True).stdout)
    now = presets.get("cifar10").to_dict()
    want = {**Config().to_dict(), **{k: v for k, v in old.items() if k in now}}
    return [arg for k, v in want.items() if v != now[k]
            for arg in (f"--{k.replace('_', '-')}", str(v).lower() if isinstance(v, bool) else str(v))]


def benches(versions: list[tuple[str, Path, bool]], flags: list[str], tmp: Path) -> list[dict]:
    """`vitgan bench` rows: cifar10 (the baseline's configuration) in fp32 and bf16, mnist in bf16 as the demo runs
    it; `versions` are (name, tree, is this tree)."""
    rows = []
    for name, tree, current in versions:
        cifar = ["--preset", "cifar10", "--batch", "64", *(flags if current else [])]
        mnist = ["--preset", "mnist", "--batch", "16", "--precision", "bf16", *(["--compile"] if current else [])]
        runs = {"cifar10 fp32": [*cifar, "--precision", "fp32"], "cifar10 bf16": [*cifar, "--precision", "bf16"],
                "mnist bf16": mnist}
        for what, args in runs.items():
            out = tmp / f"bench-{len(rows)}.jsonl"
            vitgan(tree, "bench", *args, "--out", str(out))
            row = {"version": name, "bench": what, "flags": args, **json.loads(out.read_text().splitlines()[-1]),
                   "date": time.strftime("%Y-%m-%d")}
            rows.append(row)
            print(json.dumps({k: row.get(k) for k in ("version", "bench", "images_per_s", "iteration_vs_gemm_fp32",
                                                      "iteration_vs_gemm_bf16")}), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="e0c3a23")
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--also", action="append", default=[], metavar="ARGS",
                        help="run this tree once more with these train arguments, e.g. --also '--ranks 2' (repeatable)")
    parser.add_argument("--bench", action="store_true", help="also bench the cifar10 and mnist iterations in both")
    args = parser.parse_args()
    import torch

    from vitgan.training.device import device_name, gemm_gflops

    machine = {"cpu": device_name(torch.device("cpu")),
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
            for row in rows:
                base_rate, rate = rows[0]["steady_images_per_s"], row["steady_images_per_s"]
                row["steady_speedup_vs_baseline"] = round(rate / base_rate, 2) if rate and base_rate else None
                row["kimg_speedup_vs_baseline"] = round(row["kimg"] / rows[0]["kimg"], 2)
            with RESULTS.open("a") as f:
                f.writelines(json.dumps(row) + "\n" for row in rows)
            print(f"steady rate {rows[1]['steady_speedup_vs_baseline']}x the baseline's; kimg in {args.minutes:g} "
                  f"minutes {rows[1]['kimg_speedup_vs_baseline']}x", flush=True)
            if args.bench:
                trees = [(f"baseline {args.baseline}", base, False), (f"this tree (HEAD {head})", ROOT, True)]
                bench_rows = benches(trees, baseline_cifar10_flags(base), Path(tmp))
                with BENCH_RESULTS.open("a") as f:
                    f.writelines(json.dumps(row) + "\n" for row in bench_rows)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
