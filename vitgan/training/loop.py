"""The training loop: sets a run up, steps the Trainer (trainer.py; the objective is loss.py) and, once per tick,
measures the EMA generator and hands the row to the run folder (report.py); a checkpoint every `snap` ticks, resume,
and --nan-policy rollback.

Progress is counted in images shown to D (kimg); ticks and checkpoints fall at fixed multiples of the tick length.
"""

from __future__ import annotations

import copy
import dataclasses
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitgan import distributed
from vitgan.config import Config, ConfigError
from vitgan.data import ImageData, load
from vitgan.networks import count_parameters
from vitgan.nn.spectral import largest_singular_values
from vitgan.sampling import latents
from vitgan.training import checkpoint
from vitgan.training.device import gemm_gflops, precision_name, resolve_device, resolve_precision
from vitgan.training.options import MAX_ROLLBACKS, ROLLBACK_LR_FACTOR, RunOptions, long_cpu_run
from vitgan.training.report import Report
from vitgan.training.trainer import NonFiniteError, Trainer

GRID_SEEDS = range(64)
DIGIT_FID_SEEDS = range(1_000_000, 1_001_000)  # 1,000 fixed latents for the per-tick digit FID

# Fields that may differ when resuming: the schedule and the regularisation weights, not the networks.
RESUMABLE_FIELDS = {"kimg", "batch", "g_lr", "d_lr", "d_steps_per_g", "grad_clip", "augment", "augment_p",
                    "ada_target", "ada_kimg", "augment_fill", "bcr_real", "bcr_fake", "bcr_mode", "bcr_shift",
                    "r1_gamma", "r1_interval", "lr_warmup_kimg", "ema_kimg", "ema_rampup"}


def crossed(before: int, after: int, interval: int) -> bool:
    """Whether the image counter passed a multiple of `interval` going from `before` to `after`: ticks and snapshots
    fall at fixed kimg, so a resumed run reports and checkpoints where an uninterrupted one does."""
    return after // interval > before // interval


def resume_config(state: dict[str, Any], overrides: dict[str, Any]) -> Config:
    """The configuration of a resumed run: the checkpoint's, with the given schedule overrides applied.

    An override of a network field is accepted only if it equals the checkpoint's value.
    """
    saved = Config.from_dict(state["config"])
    for name in sorted(set(overrides) - RESUMABLE_FIELDS):
        if overrides[name] != getattr(saved, name):
            allowed = ", ".join(sorted(RESUMABLE_FIELDS))
            raise ConfigError(f"{name}: cannot change when resuming (checkpoint has {getattr(saved, name)!r}; "
                              f"only {allowed} may change)")
    return saved.replace(**overrides)


def open_data(cfg: Config, opts: RunOptions) -> ImageData:
    """The run's images, decoded at the Config's resolution and channels; checked to fill a batch."""
    data = load(opts.data, resolution=cfg.resolution, channels=cfg.channels, skip_bad=opts.skip_bad)
    if len(data) < cfg.batch:
        raise ConfigError(f"batch: {cfg.batch} is larger than the {len(data)} images of {opts.data}")
    return data


def train(cfg: Config, opts: RunOptions, resume_state: dict[str, Any] | None = None) -> Path:
    """Train until cfg.kimg thousand images (or opts.minutes); returns the run folder.

    With `resume_state` (from checkpoint.load_training_state), every network, optimiser, counter and RNG state
    continues from it; `cfg` must then come from `resume_config`.
    """
    opts.check()
    world, device_name = distributed.init(opts.device, timeout_s=opts.dist_timeout)
    device = resolve_device(device_name)
    amp = resolve_precision(opts.precision, device)
    data = open_data(cfg, opts)

    torch.manual_seed(opts.seed + world.rank)  # per-rank streams; the per-sample ones are the Trainer's, shared
    np.random.seed(opts.seed + world.rank)
    random.seed(opts.seed + world.rank)
    compile = opts.compile if opts.compile is not None else long_cpu_run(cfg, device.type)
    trainer = Trainer(cfg, data, device, amp, preset=opts.preset, mirror=opts.mirror, compile=compile,
                      seed=opts.seed, world=world, batch_gpu=opts.batch_gpu)
    if resume_state is not None:
        trainer.load_state(resume_state)
    # --nan-policy rollback returns to the newest state written by this run, else to the one it started from
    last_good: Path | dict[str, Any] | None = None
    if opts.nan_policy == "rollback":
        last_good = Path(opts.resume) if resume_state is not None and opts.resume else copy.deepcopy(trainer.state())
    rollbacks = 0

    main = world.is_main  # only rank 0 writes files and prints
    # the machine's matrix-product rate, which a run's speed is read against (every rank at once, as they train)
    gemm = {precision_name(dtype): round(gemm_gflops(device, dtype, n=2048), 1)
            for dtype in dict.fromkeys([torch.float32, amp or torch.float32])}
    report, run_dir = Report.create(Path(opts.outdir), opts.preset, data.name, world)  # run_dir: for rollback too
    log = report.log
    options = {"config": cfg.to_dict(), "run": dataclasses.asdict(opts), "device": str(device),
               "precision": precision_name(amp), "num_images": len(data),
               "ranks": world.size, "batch_gpu": trainer.batch_gpu, "rounds": trainer.rounds,
               "compiled": trainer.compiled, "threads": torch.get_num_threads(), "gemm_gflops_per_s": gemm,
               "G_params": count_parameters(trainer.G), "D_params": count_parameters(trainer.D),
               "torch": torch.__version__, "command": " ".join(sys.argv)}
    report.options(options)
    report.grid(data.batch(torch.arange(min(64, len(data)))), "reals.png")
    grid_z = latents(GRID_SEEDS, cfg.z_dim)
    digit_net = digit_fid = None
    if opts.data == "mnist":  # the embedded default gets a per-tick digit FID against all 5,000 digits
        from vitgan.metrics.digits import DigitFID, classify, load_classifier

        digit_net = load_classifier()  # every rank classifies its share of the samples; rank 0 scores them all
        digit_fid = DigitFID.of(data, digit_net) if main else None
        digit_z = latents(DIGIT_FID_SEEDS, cfg.z_dim)[world.rank::world.size]  # each rank its share
    evaluator = None
    if opts.metrics:  # on every rank: each generates and measures its share of the samples
        from vitgan.metrics.evaluate import Evaluator, parse_metrics

        evaluator = Evaluator(parse_metrics(opts.metrics), data, inception_path=opts.inception, device=device,
                              log=log, world=world)

    log(f"run folder: {run_dir}")
    log(f"preset {opts.preset}, data {opts.data} ({len(data)} images), device {device}, precision "
        f"{options['precision']}, G {options['G_params']:,} params, D {options['D_params']:,} params")
    log(f"GEMM rate of {'each rank' if world.size > 1 else 'this process'} ({torch.get_num_threads()} thread(s)): "
        + ", ".join(f"{name} {rate:g} GFLOP/s" for name, rate in gemm.items())
        + " (what the speed of each machine class is read against: benchmarks/README.md)")
    if world.size > 1 or trainer.rounds > 1:
        log(f"{world.size} rank(s) x {trainer.batch_gpu} images x {trainer.rounds} round(s) = batch {cfg.batch}")
    if trainer.compiled:
        log("G and D run through torch.compile: the first step compiles them (one to three minutes on a CPU; "
            "--no-compile to skip)")
    if resume_state is not None:
        log(f"resumed from {opts.resume} at kimg {trainer.cur_nimg / 1000:.1f}, tick {trainer.tick}")
    total_nimg = int(cfg.kimg * 1000)
    tick_nimg = max(round(opts.tick_kimg * 1000), 1)
    start_time, start_nimg = time.time(), trainer.cur_nimg
    tick_start_time, tick_start_nimg = start_time, trainer.cur_nimg
    maintenance_s = 0.0  # the previous end_tick's own time: the per-tick work off the training steps
    sums: dict[str, float] = {}

    def end_tick(final: bool) -> None:
        """Status line, stats.jsonl row, sample grid, loss plot, TensorBoard; a checkpoint every `snap` ticks."""
        nonlocal tick_start_time, tick_start_nimg, last_good, maintenance_s
        now = time.time()
        measured = {}
        if evaluator is not None and trainer.cur_nimg > tick_start_nimg and (final or
                                                                              trainer.tick % opts.metric_every == 0):
            measured = evaluator(trainer.G_ema)  # every rank takes part
        save_now = final or crossed(tick_start_nimg, trainer.cur_nimg, tick_nimg * opts.snap)
        digits = None
        if digit_net is not None and trainer.cur_nimg > tick_start_nimg:  # every rank classifies its share
            digits = distributed.gather(classify(digit_net, trainer.samples(digit_z)), world)
        if not main:  # rank 0 writes the state; the others remember where it is, to roll back to it
            last_good = trainer.state_path(run_dir) if save_now and opts.nan_policy == "rollback" else last_good
            sums.clear()
            tick_start_time, tick_start_nimg = time.time(), trainer.cur_nimg
            return
        steps = max(sums.pop("steps", 0), 1)
        row: dict[str, float] = {"tick": trainer.tick, "kimg": trainer.cur_nimg / 1000, "time": now - start_time}
        images = trainer.samples(grid_z)
        if trainer.cur_nimg > tick_start_nimg:
            rate = (trainer.cur_nimg - start_nimg) / max(now - start_time, 1e-9)
            row["sec_per_kimg"] = (now - tick_start_time) / ((trainer.cur_nimg - tick_start_nimg) / 1000)
            row["img_per_sec"] = rate
            row["maintenance_s"] = maintenance_s
            row.update({key: value / steps for key, value in sums.items()})
            row["g_z_std"] = float(images.std(dim=0).mean())  # G_ema's per-pixel spread across z
            row["d_sigma_max"] = max(largest_singular_values(trainer.D).values())  # D's instability signal
            if digits is not None:
                row.update(digit_fid.score(*(np.concatenate(part) for part in zip(*digits, strict=True))))
            row.update(measured)
            eta = (total_nimg - trainer.cur_nimg) / max(rate, 1e-9)
            if opts.minutes is not None:
                eta = min(eta, opts.minutes * 60 - (now - start_time))
            report.tick(row, images, trainer.cur_nimg, eta, list(measured))
        report.grid(images, f"fakes-{trainer.cur_nimg:09d}.png")
        sums.clear()
        if save_now:
            last_good = trainer.save(run_dir, keep_states=opts.keep)
            log(f"saved {last_good.name} and network-snapshot-{trainer.cur_nimg:09d}.safetensors")
        tick_start_time, tick_start_nimg = time.time(), trainer.cur_nimg
        maintenance_s = tick_start_time - now

    def roll_back(error: NonFiniteError) -> None:
        """--nan-policy rollback: back to the last good state with half the learning rates, or give up."""
        nonlocal rollbacks, tick_start_time, tick_start_nimg
        rollbacks += 1
        if last_good is None or rollbacks > MAX_ROLLBACKS:
            raise FloatingPointError(f"{error} (gave up after {MAX_ROLLBACKS} rollbacks)") from None
        state = checkpoint.load_training_state(last_good) if isinstance(last_good, Path) else last_good
        trainer.rollback(state, ROLLBACK_LR_FACTOR)
        where = last_good.name if isinstance(last_good, Path) else "the start of this run"
        log(f"non-finite: {error}; rolled back to {where} (kimg {trainer.cur_nimg / 1000:.3f}) with g_lr "
            f"{trainer.cfg.g_lr:g}, d_lr {trainer.cfg.d_lr:g} (rollback {rollbacks} of {MAX_ROLLBACKS})")
        sums.clear()
        tick_start_time, tick_start_nimg = time.time(), trainer.cur_nimg

    # a compiled run's first step is where compiling happens: if it fails, the run restarts that step uncompiled
    before_first_step = copy.deepcopy(trainer.state()) if trainer.compiled else None
    try:
        end_tick(final=False)  # the starting point's sample grid
        while True:
            done = trainer.cur_nimg >= total_nimg
            out_of_time = opts.minutes is not None and distributed.any_rank(
                time.time() - start_time >= opts.minutes * 60, world)  # all ranks stop at the same step
            if done or out_of_time:
                if trainer.cur_nimg > tick_start_nimg:
                    trainer.tick += 1
                end_tick(final=True)
                break
            try:
                step_stats = trainer.step()
            except NonFiniteError as error:
                if opts.nan_policy != "rollback":
                    raise
                roll_back(error)
                continue
            except Exception as error:  # the compiled first step failed (no C++ compiler, ...): retried uncompiled,
                if before_first_step is None:  # where a fault that is not the compiler's shows again
                    raise
                log(f"torch.compile failed ({type(error).__name__}: {str(error).strip()[:200]!r}); training "
                    "without it")
                trainer.load_state(before_first_step)
                trainer.uncompile()
                continue
            before_first_step = None
            for key, value in step_stats.items():
                sums[key] = sums.get(key, 0.0) + value
            sums["steps"] = sums.get("steps", 0) + 1
            if crossed(tick_start_nimg, trainer.cur_nimg, tick_nimg) and trainer.cur_nimg < total_nimg:
                trainer.tick += 1
                end_tick(final=False)
    finally:
        report.close()
    return run_dir

