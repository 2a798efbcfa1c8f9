"""What a run needs besides the Config: where the data and the outputs are, and how to run.

Each field of `RunOptions` is an option of `vitgan train`, generated from the field as Config's are (vitgan/cli.py):
its help is the field's, its default written once, here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from vitgan.config import Config, ConfigError, check_types, nearest_multiples, option
from vitgan.metrics.inception import WEIGHTS_NAME
from vitgan.training.device import CompileMode, resolve_device

AUTO_COMPILE_KIMG = 20.0  # a run on the CPU this long (or longer) is compiled unless --no-compile
MAX_ROLLBACKS = 3  # --nan-policy rollback gives up after this many rollbacks in one run
ROLLBACK_LR_FACTOR = 0.5  # each rollback multiplies both learning rates by this


@dataclass
class RunOptions:
    """What a run needs besides the Config: where the data and outputs are, and how to run. Each field is an option
    of `vitgan train` (its help is the field's)."""

    preset: str = option("mnist", "the preset the Config came from (names the run folder)", cli=False)
    data: str = option("mnist", "'mnist' (the bundled 5k digits), 'stacked-mnist' (StackedMNIST: three of them per "
                       "RGB image; the default of --preset stacked-mnist), a zip from `vitgan prepare`, or any source "
                       "`prepare` reads (resized to the preset's resolution)", metavar="SOURCE")
    cond: bool = option(False, "class-conditional: train on the data's labels (the Config's cond set to its class "
                        "count); the data must label every image")
    outdir: str = option("runs", "runs are written to OUTDIR/NNNNN-<preset>-<data>/", metavar="DIR")
    seed: int = option(0, "random seed of the run")
    # on the command line a file, a folder or `auto`; in RunOptions, the training-state file that was chosen
    resume: str | None = option(None, "a training-state-*.pt file; a run folder (its newest training state that "
                                "verifies); or 'auto': the newest verified one of all runs in --outdir (none: a fresh "
                                "start)", metavar="PATH|auto")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = option(
        "auto", "autocast dtype; auto = bf16 where the hardware has bf16 matrix units, fp16 with a gradient scaler on "
        "CUDA devices without them, else fp32")
    device: str = option("auto", "the device: cuda where there is one (auto), cpu, cuda or cuda:N",
                         metavar="auto|cpu|cuda|cuda:N")
    minutes: float | None = option(None, "stop after this many minutes (a final snapshot is written)")
    tick_kimg: float = option(4.0, "kimg between status lines and sample grids", flag="--tick")
    snap: int = option(10, "ticks between network snapshots and training states")
    keep: int = option(2, "training states kept in the run folder (the newest); network snapshots are all kept")
    nan_policy: Literal["stop", "rollback"] = option(
        "stop", "NaN/inf in a loss, gradient or weight: stop with an error, or go back to the last good training "
        f"state with half the learning rates (at most {MAX_ROLLBACKS} times)")
    mirror: bool = option(False, "flip each real image left-right with probability 1/2")
    skip_bad: bool = option(False, "skip unreadable data files (they are listed) instead of stopping")
    compile: bool | None = option(None, "run G and D through torch.compile (--no-compile: never); by default on a CPU "
                                  f"for runs of at least {AUTO_COMPILE_KIMG:g} kimg, where its one to three minutes "
                                  "of compiling pay back (a 2-thread mnist iteration ran 1.53x faster); a run whose "
                                  "compiling fails goes on without it")
    compile_mode: CompileMode = option(
        "default", "torch.compile's mode with --compile: default; max-autotune-no-cudagraphs (longer compiling, tuned "
        "kernels); reduce-overhead (CUDA graphs: each step's kernels replayed as one launch; CUDA only). "
        "benchmarks/gpu_check.sh measures each on a GPU")
    ranks: int | None = option(None, "on a CPU: local data-parallel processes that share every batch, the cores "
                               "split between them (`vitgan train` starts them through torchrun; the same training "
                               f"as one process). By default, for runs of at least {AUTO_COMPILE_KIMG:g} kimg on a "
                               "CPU without AMX, as many as the cores allow with each rank's share of the batch a "
                               "multiple of the minibatch-std group (with AMX: 1); 1: one process with every core")
    batch_gpu: int | None = option(None, "images per device per round; --batch (the total over all ranks) is reached "
                                   "by gradient accumulation when larger (default: --batch / ranks, one round)")
    dist_timeout: float = option(600.0, "under torchrun: seconds a collective waits for a lost rank before the job "
                                 "fails")
    metrics: str | None = option(None, "metrics of the EMA generator during training, e.g. "
                                 "fid10k_full,kid10k_full (see eval)",
                                 metavar="LIST")
    metric_every: int = option(1, "ticks between metric evaluations (and at the end)")
    inception: str | None = option(None, f"the {WEIGHTS_NAME} file for Inception metrics (default: "
                                   "$VITGAN_INCEPTION, then the torch hub cache)", metavar="FILE")

    def check(self) -> None:
        check_types(self)
        if not math.isfinite(self.tick_kimg) or self.tick_kimg <= 0:
            raise ConfigError(f"tick_kimg: must be a positive number, got {self.tick_kimg}")
        if self.snap < 1:
            raise ConfigError(f"snap: must be a positive number of ticks, got {self.snap}")
        if self.keep < 1:
            raise ConfigError(f"keep: must keep at least one training state, got {self.keep}")
        if self.minutes is not None and not (math.isfinite(self.minutes) and self.minutes > 0):
            raise ConfigError(f"minutes: must be a positive number, got {self.minutes}")
        if not 0 <= self.seed < 2**32:  # numpy's seed range
            raise ConfigError(f"seed: must be in [0, 2**32), got {self.seed}")
        if self.ranks is not None and self.ranks < 1:
            raise ConfigError(f"ranks: must be positive, got {self.ranks}")
        if self.batch_gpu is not None and self.batch_gpu < 1:
            raise ConfigError(f"batch_gpu: must be positive, got {self.batch_gpu}")
        if not (math.isfinite(self.dist_timeout) and self.dist_timeout > 0):
            raise ConfigError(f"dist_timeout: must be a positive number, got {self.dist_timeout}")
        if self.metric_every < 1:
            raise ConfigError(f"metric_every: must be a positive number of ticks, got {self.metric_every}")
        resolve_device(self.device)
        if self.metrics is not None:
            from vitgan.metrics.evaluate import parse_metrics

            parse_metrics(self.metrics)


def long_cpu_run(cfg: Config, device_type: str) -> bool:
    """A run on the CPU long enough (cfg.kimg >= AUTO_COMPILE_KIMG) for compiling and local ranks to pay back."""
    return device_type == "cpu" and cfg.kimg >= AUTO_COMPILE_KIMG


def available_cores(environ: Mapping[str, str] | None = None) -> int:
    """The cores this process may use: its CPU affinity, capped by OMP_NUM_THREADS when that is set (a run given one
    thread, as each of `vitgan ablate`'s, stays one process of one thread)."""
    environ = os.environ if environ is None else environ
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = environ.get("OMP_NUM_THREADS", "")
    return max(1, min(cores, int(threads))) if threads.isdigit() else cores


def local_ranks(cfg: Config, opts: RunOptions, cores: int, *, launched: bool, amx: bool = False) -> int:
    """How many local data-parallel processes a run starts (1: this process trains alone).

    Each rank's share of the batch must be a whole multiple of D's unit (`Config.d_unit`: the pack times the
    minibatch-std group where D has one), so that the ranks compute exactly what one process does. `--ranks` pins
    the number; by default a long CPU run takes the most ranks up to `cores` that share its batch so, except on a
    CPU with AMX tiles (`amx`), where it stays one process of all the threads. Measured (benchmarks/README.md, "The
    default demo's speed"): on a 2-core CPU without AMX two 1-thread processes did about twice the work of one
    2-thread process; on the 2-core AMX machine one 2-thread process did as much or more (76.7 against 77.1, 69.4
    against 63.5, 84.7 against 78.0 img/s in three runs). Under a launcher it is 1.
    """
    if launched:
        return 1
    device = resolve_device(opts.device).type
    if device != "cpu":
        if opts.ranks not in (None, 1):
            raise ConfigError(f"ranks: local ranks are for CPU training, not {device} (torchrun starts GPU ranks)")
        return 1
    def fits(n: int) -> bool:
        return cfg.batch % n == 0 and (cfg.batch // n) % cfg.d_unit == 0

    if opts.ranks is not None:
        if not fits(opts.ranks):
            fitting = [n for n in range(1, cfg.batch // cfg.d_unit + 1) if fits(n)]
            below = [n for n in fitting if n < opts.ranks][-1:]
            above = [n for n in fitting if n > opts.ranks][:1]
            ranks = " or ".join(map(str, below + above))
            raise ConfigError(f"ranks: {opts.ranks} ranks cannot share batch {cfg.batch} in whole multiples of "
                              f"{cfg.d_unit} images (D's pack times its minibatch-std group): use {ranks} ranks, "
                              f"or a batch that is a multiple of {opts.ranks * cfg.d_unit} "
                              f"({nearest_multiples(cfg.batch, opts.ranks * cfg.d_unit)})")
        return opts.ranks
    if opts.batch_gpu is not None or not long_cpu_run(cfg, device) or amx:
        return 1
    return max(n for n in range(1, cores + 1) if fits(n))
