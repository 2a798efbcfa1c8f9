"""Starting processes for the `vitgan` command: the local ranks of a multi-core CPU run (under torchrun), and the
re-execution of a command with the runtime environment it trains fastest in. cli.py decides; this module launches."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

LOCAL_RANK_MARK = "VITGAN_LOCAL_RANKS"  # set for the ranks `vitgan train` starts itself


def die_with_parent() -> None:
    """Make this process end (SIGTERM) when its parent does, even by SIGKILL (Linux's parent-death signal): a local
    rank whose launcher was killed must not train on alone. Its last training state stays the one written."""
    if sys.platform != "linux":
        return
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent was already gone before the signal was armed
        raise SystemExit(1)


def launch_local_ranks(ranks: int, threads: int, argv: list[str], *, replace: bool) -> int:
    """`vitgan train ARGV` again as `ranks` local processes of `threads` threads under torchrun (which gives each its
    rank and stops them all when one fails). From a command line this process becomes torchrun (exec), so that
    signals (Ctrl-C, a scheduler's SIGTERM) reach it; from Python it waits for it."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
               "-m", "vitgan", "train", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), LOCAL_RANK_MARK: "1"}
    print(f"vitgan: training as {ranks} local ranks of {threads} thread(s) each (--ranks 1: one process)",
          flush=True)
    if replace:
        os.execve(sys.executable, command, env)
    return subprocess.run(command, env=env).returncode


# Settings a process must have before torch loads, so a command that trains, benchmarks or evaluates re-runs itself
# once with those of them that are not already set (set one, even empty, to opt out of it):
# - glibc's malloc, by default, returns each large freed block to the OS and faults fresh zeroed pages in for the
#   next one: for CPU training that is every activation of every step (a cifar10 iteration at batch 128 ran 1.67x
#   faster with freed memory kept for reuse; benchmarks/README.md).
# - OpenMP's threads, by default, spin while they wait for work: beside another busy process they spin against it
#   (a 2-thread mnist iteration beside two busy processes ran at 3.9 img/s by default, 19.9 with passive waiting;
#   benchmarks/results/cpu_contention_beside_ablation.jsonl).
FAST_MALLOC = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184"


def runtime_env(environ: dict[str, str] | os._Environ) -> dict[str, str]:
    """The settings of the comment above that `environ` lacks."""
    wanted = {}
    if sys.platform == "linux" and platform.libc_ver()[0] == "glibc" and "GLIBC_TUNABLES" not in environ:
        wanted["GLIBC_TUNABLES"] = FAST_MALLOC
    if "OMP_WAIT_POLICY" not in environ:
        wanted["OMP_WAIT_POLICY"] = "PASSIVE"
    return wanted


def rerun_with_runtime_env() -> None:
    """Run this command line again (exec) with the settings of `runtime_env` that the environment lacks."""
    wanted = runtime_env(os.environ)
    if wanted:
        os.environ.update(wanted)
        os.execv(sys.executable, [sys.executable, "-m", "vitgan", *sys.argv[1:]])
