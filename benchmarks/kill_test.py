"""Kill test: SIGKILL `vitgan train` at random moments, resume it with `--resume auto` each time, and check that

- the final training state equals an uninterrupted run's of the same length, exactly (CPU, fp32): G, D, G_ema, both
  optimisers, the counters, the data order and the RNG states;
- each kill lost at most one checkpoint interval of work (images seen when killed minus images of the state the
  next start resumed from);
- no kill ever left a damaged checkpoint in place (every state beside its sidecar verifies).

The kills are aimed in turn at three kinds of moment, each at a random time: while the process starts (imports,
data loading, choosing the state), after its first training step, or in the middle of a checkpoint write (as soon as
its first temporary file appears, plus 0-30 ms).

The run is the tiny configuration of tests/test_training.py on 12 random 32x32 images, a checkpoint every tick
(`--snap 1`). Each child process logs its image counter after every step to a progress file (line-buffered, so it
survives SIGKILL); that is how the images seen at a kill are known. Prints one JSON line of figures; exit status 1 if
a check fails.

    python benchmarks/kill_test.py                        # 20 kills (the figures in docs/reliability.md)
    python benchmarks/kill_test.py --kills 5 --kimg 0.12  # the short form run by tests/test_reliability.py
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

TINY = ["--g-dim", "32", "--g-depth", "1", "--g-heads", "2", "--g-mlp-dim", "64", "--z-dim", "16", "--w-dim", "16",
        "--mapping-layers", "1", "--g-fourier-dim", "8", "--g-inr-hidden", "8",
        "--d-dim", "32", "--d-depth", "1", "--d-heads", "2", "--d-mlp-dim", "64", "--batch", "4", "--r1-gamma", "0.1",
        "--r1-interval", "2", "--bcr-real", "2", "--bcr-fake", "2", "--precision", "fp32"]
BATCH = 4

# The child: `vitgan train`, with the image counter appended to a progress file after every step.
CHILD = """
import sys
from vitgan.cli import main
from vitgan.training.trainer import Trainer
progress = open(sys.argv[1], "a", buffering=1)
step = Trainer.run_step
def logged(self):
    stats = step(self)
    progress.write(f"{self.cur_nimg}\\n")
    return stats
Trainer.run_step = logged
sys.exit(main(sys.argv[2:]))
"""


def write_images(folder: Path) -> Path:
    """12 grayscale 32x32 PNGs of random pixels (the run's content does not matter here, only its exactness)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, pixels in enumerate(np.random.default_rng(0).integers(0, 256, (12, 32, 32), dtype=np.uint8)):
        Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    return folder


def newest_state(outdir: Path) -> Path:
    from vitgan.training.checkpoint import training_states

    runs = sorted((p for p in outdir.iterdir() if re.match(r"^\d{5}-", p.name)), key=lambda p: p.name)
    return training_states(runs[-1])[0]


def differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Where two loaded training states differ (tensors compared exactly)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and \
            a.shape == b.shape and torch.equal(a, b)
        return [] if same else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{where} keys"]
        return [d for key in a for d in differences(a[key], b[key], f"{where}.{key}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where} length"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [where]


def _wait_until(child: subprocess.Popen, ready: Any, timeout: float) -> bool:
    """Poll (about every millisecond) until ready() or the timeout; False if the child exits first."""
    end = time.time() + timeout
    while child.poll() is None:
        if ready() or time.time() > end:
            return True
        time.sleep(0.001)
    return False


def _progress(progress: Path) -> list[int]:
    return [int(n) for n in progress.read_text().split()] if progress.exists() else []


def kill_at(child: subprocess.Popen, moment: str, progress: Path, outdir: Path, rng: random.Random,
            total_nimg: int) -> bool:
    """Wait for a random moment of the kind asked for; False if the child finished before it.

    starting: a random delay from launch (imports, data loading, choosing the state to resume), cut short by the
    first step; training: after a random number of steps, between the first and half of those left (counted in
    images, so the aim does not depend on the machine's speed); writing: 0-30 ms after the child's first temporary
    checkpoint file appears (the temporary name holds the writer's process id), in the middle of the writes."""
    started = lambda: bool(_progress(progress))  # noqa: E731
    if moment == "starting":
        return _wait_until(child, started, rng.uniform(0.05, 2.0))
    if not _wait_until(child, started, 120):
        return False
    if moment == "training":
        first = _progress(progress)[0]
        target = first + BATCH * rng.randint(0, max((total_nimg - first) // BATCH // 2, 0))
        return _wait_until(child, lambda: (_progress(progress) or [0])[-1] >= target, 120)
    if not _wait_until(child, lambda: any(outdir.glob(f"*/.*.tmp{child.pid}.*")), 60):
        return False
    return _wait_until(child, lambda: False, rng.uniform(0.0, 0.03))  # somewhere in the snapshot/state writes


def run_kill_test(work: Path, *, kills: int, seed: int, kimg: float, tick: float, snap: int) -> dict[str, Any]:
    from vitgan.training.checkpoint import checksum_path, load_training_state, training_states, verify

    data = write_images(work / "images")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    common = ["train", "--data", str(data), *TINY, "--kimg", str(kimg), "--tick", str(tick), "--snap", str(snap),
              "--seed", str(seed)]
    interval = round(tick * 1000) * snap  # images between checkpoints
    rng = random.Random(seed)

    def start(outdir: Path, progress: Path, *extra: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", CHILD, str(progress), *common, "--outdir", str(outdir),
                                 *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    began = time.time()
    reference = start(work / "reference", work / "reference.progress")
    if reference.wait() != 0:
        raise RuntimeError(f"the uninterrupted run failed: {reference.stderr.read()}")
    reference_seconds = time.time() - began

    outdir, records, attempts, finished = work / "killed", [], 0, False
    pending: list[dict[str, Any]] = []  # kills whose work lost is known once a later start has chosen its state
    while not finished:
        attempts += 1
        progress = work / f"attempt{attempts}.progress"
        child = start(outdir, progress, "--resume", "auto")
        if len(records) < kills:
            moment = ("training", "writing", "starting")[len(records) % 3]  # each kind in turn, at random times
            if kill_at(child, moment, progress, outdir, rng, round(kimg * 1000)):
                child.send_signal(signal.SIGKILL)
        child.wait()
        stderr = child.stderr.read()
        chose = re.search(r"resuming from \S*training-state-(\d{9})\.pt|(starting a new run)", stderr)
        if chose:  # this start got as far as choosing what to resume from
            resumed_from = int(chose.group(1) or 0)
            for record in pending:
                record.update(resumed_from=resumed_from, lost=record["killed_at"] - resumed_from)
            pending = []
        lines = _progress(progress)
        if child.returncode == -signal.SIGKILL:
            runs = sorted(p for p in outdir.iterdir() if re.match(r"^\d{5}-", p.name)) if outdir.exists() else []
            folder = runs[-1] if runs else None
            partial = sorted(p.name for p in folder.glob(".*.tmp*")) if folder else []
            orphans = [s.name for s in folder.glob("*.sha256") if not s.with_suffix("").exists()] if folder else []
            damaged = [s.name for s in training_states(folder) if checksum_path(s).exists()
                       and verify(s) is False] if folder else []
            record = {"in_write": bool(partial or orphans), "damaged": damaged, "before_first_step": not lines,
                      "aimed_at": moment}
            if lines:  # killed while training: the images it had seen
                record["killed_at"] = int(lines[-1])
                pending.append(record)
            else:  # killed while starting: it had done no work, so it lost none
                record["lost"] = 0
            records.append(record)
        elif child.returncode == 0:
            finished = True
        else:
            raise RuntimeError(f"attempt {attempts} failed (exit {child.returncode}): {stderr.strip()}")

    a = load_training_state(newest_state(work / "reference"))
    b = load_training_state(newest_state(outdir))
    diff = differences({k: v for k, v in a.items() if k != "config"}, {k: v for k, v in b.items() if k != "config"})
    lost = [r["lost"] for r in records]
    return {
        "kills": len(records), "attempts": attempts,
        "kills_during_a_checkpoint_write": sum(r["in_write"] for r in records),
        "kills_before_the_first_step": sum(r["before_first_step"] for r in records),
        "kills_aimed": {m: sum(r["aimed_at"] == m for r in records) for m in ("starting", "training", "writing")},
        "checkpoint_interval_nimg": interval, "final_nimg": b["cur_nimg"], "reference_nimg": a["cur_nimg"],
        "lost_nimg_per_kill": lost, "max_lost_nimg": max(lost, default=0), "damaged_in_place": sum(
            len(r["damaged"]) for r in records), "final_state_differences": diff, "identical": not diff,
        "reference_seconds": round(reference_seconds, 1), "seconds": round(time.time() - began, 1),
        "ok": not diff and max(lost, default=0) <= interval and a["cur_nimg"] == b["cur_nimg"]
        and not any(r["damaged"] for r in records),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs before the run may finish")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run and of the kill delays")
    parser.add_argument("--kimg", type=float, default=1.2, help="training length")
    parser.add_argument("--tick", type=float, default=0.012, help="kimg per tick (a multiple of the batch of 4)")
    parser.add_argument("--snap", type=int, default=1, help="ticks per checkpoint")
    parser.add_argument("--workdir", help="keep the runs here (default: a temporary folder, removed)")
    args = parser.parse_args()
    if args.workdir:
        result = run_kill_test(Path(args.workdir), kills=args.kills, seed=args.seed, kimg=args.kimg, tick=args.tick,
                               snap=args.snap)
    else:
        with tempfile.TemporaryDirectory() as work:
            result = run_kill_test(Path(work), kills=args.kills, seed=args.seed, kimg=args.kimg, tick=args.tick,
                                   snap=args.snap)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
