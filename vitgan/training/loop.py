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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitgan import distributed
from vitgan.config import Config, ConfigError
from vitgan.data import ImageData, load, load_mnist5k
from vitgan.distributed import World
from vitgan.networks import count_parameters
from vitgan.nn.spectral import largest_singular_values
from vitgan.sampling import CLASS_SHEET_SEEDS, class_sheet, label_draws, latents
from vitgan.training import checkpoint
from vitgan.training.device import gemm_gflops, precision_name, resolve_device, resolve_precision
from vitgan.training.options import MAX_ROLLBACKS, ROLLBACK_LR_FACTOR, RunOptions, long_cpu_run
from vitgan.training.report import Report
from vitgan.training.trainer import NonFiniteError, Trainer

GRID_SEEDS = range(64)
DIGIT_FID_SEEDS = range(1_000_000, 1_001_000)  # 1,000 fixed latents for the per-tick digit FID
MODE_SEEDS = range(2_000_000, 2_005_000)  # 5,000 fixed latents for the per-tick modes of StackedMNIST

# Fields that may differ when resuming: the schedule and the regularisation weights, not the networks.
RESUMABLE_FIELDS = {"kimg", "batch", "g_lr", "d_lr", "d_steps_per_g", "grad_clip", "augment", "augment_p",
                    "ada_target", "ada_kimg", "augment_fill", "bcr_real", "bcr_fake", "bcr_mode", "bcr_shift",
                    "gan_loss", "r1_gamma", "r2_gamma", "r1_interval", "lr_warmup_kimg", "ema_kimg", "ema_rampup"}

# --nan-policy rollback's target: a training state this run wrote (or resumed from), or an in-memory one
GoodState = Path | dict[str, Any] | None


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


def conditioned(cfg: Config, opts: RunOptions, data: ImageData, *, resumed: bool) -> Config:
    """The run's Config with `cond` set to the data's class count when `opts.cond` asks for it. A resumed run's
    checkpoint decides: --cond must then be given exactly when it is conditional, on data of as many classes.
    Refusals are one line, before anything is written."""
    classes = data.num_classes
    if resumed:
        if bool(cfg.cond) != opts.cond:
            raise ConfigError(f"cond: the checkpoint is conditional on {cfg.cond} classes: resume with --cond"
                              if cfg.cond else "cond: the checkpoint is unconditional: resume without --cond")
        if cfg.cond and classes != cfg.cond:
            raise ConfigError(f"cond: the checkpoint has {cfg.cond} classes, {opts.data} has {classes}")
        return cfg
    if not opts.cond:
        return cfg
    if classes < 2:
        raise ConfigError(f"cond: {opts.data} has no labels (a label per image is needed: a dataset.json, class "
                          "folders through `vitgan prepare --labels folders`, CIFAR, parquet)" if classes == 0
                          else f"cond: {opts.data} has a single class; conditioning needs at least 2")
    return cfg.replace(cond=classes)


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
    cfg = conditioned(cfg, opts, data, resumed=resume_state is not None)

    torch.manual_seed(opts.seed + world.rank)  # per-rank streams; the per-sample ones are the Trainer's, shared
    np.random.seed(opts.seed + world.rank)
    random.seed(opts.seed + world.rank)
    compile = opts.compile if opts.compile is not None else long_cpu_run(cfg, device.type)
    trainer = Trainer(cfg, data, device, amp, preset=opts.preset, mirror=opts.mirror, compile=compile,
                      compile_mode=opts.compile_mode, seed=opts.seed, world=world, batch_gpu=opts.batch_gpu)
    if resume_state is not None:
        trainer.load_state(resume_state)
    # --nan-policy rollback returns to the newest state written by this run, else to the one it started from
    last_good: GoodState = None
    if opts.nan_policy == "rollback":
        last_good = Path(opts.resume) if resume_state is not None and opts.resume else copy.deepcopy(trainer.state())
    # the machine's matrix-product rate, which a run's speed is read against (every rank at once, as they train)
    gemm = {precision_name(dtype): round(gemm_gflops(device, dtype, n=2048), 1)
            for dtype in dict.fromkeys([torch.float32, amp or torch.float32])}
    report, run_dir = Report.create(Path(opts.outdir), opts.preset, data.name, world)  # run_dir: for rollback too
    trainer.log = report.log  # e.g. compiled R1 falling back to eager: a line in log.txt
    try:
        options = run_options(trainer, opts, gemm)
        report.options(options)
        report.grid(data.batch(torch.arange(min(64, len(data)))), "reals.png")
        probes = Probes(cfg, opts, data, device, world, report.log)
        log_start(report.log, options, trainer, run_dir, resumed=resume_state is not None)
        TrainingLoop(trainer, opts, report, run_dir, probes, last_good).run()
    finally:
        report.close()
    return run_dir


def run_options(trainer: Trainer, opts: RunOptions, gemm: dict[str, float]) -> dict[str, Any]:
    """training_options.json: the Config, the RunOptions and what the run found (device, ranks, sizes, versions)."""
    return {"config": trainer.cfg.to_dict(), "run": dataclasses.asdict(opts), "device": str(trainer.device),
            "precision": precision_name(trainer.amp), "num_images": len(trainer.data),
            "ranks": trainer.world.size, "batch_gpu": trainer.batch_gpu, "rounds": trainer.rounds,
            "compiled": trainer.compiled, "threads": torch.get_num_threads(), "gemm_gflops_per_s": gemm,
            "G_params": count_parameters(trainer.G), "D_params": count_parameters(trainer.D),
            "torch": torch.__version__, "command": " ".join(sys.argv)}


def log_start(log: Callable[[str], None], options: dict[str, Any], trainer: Trainer, run_dir: Path, *,
              resumed: bool) -> None:
    """The run's opening lines: where it writes, what it trains on what, and how the batch is split."""
    run, world = options["run"], trainer.world
    log(f"run folder: {run_dir}")
    log(f"preset {run['preset']}, data {run['data']} ({options['num_images']} images), device {trainer.device}, "
        f"precision {options['precision']}, G {options['G_params']:,} params, D {options['D_params']:,} params")
    log(f"GEMM rate of {'each rank' if world.size > 1 else 'this process'} ({options['threads']} thread(s)): "
        + ", ".join(f"{name} {rate:g} GFLOP/s" for name, rate in options["gemm_gflops_per_s"].items())
        + " (what the speed of each machine class is read against: benchmarks/README.md)")
    if world.size > 1 or trainer.rounds > 1:
        log(f"{world.size} rank(s) x {trainer.batch_gpu} images x {trainer.rounds} round(s) = batch "
            f"{trainer.cfg.batch}")
    if trainer.compiled:
        log("G and D run through torch.compile: the first step compiles them (one to three minutes on a CPU; "
            "--no-compile to skip)")
    if resumed:
        log(f"resumed from {run['resume']} at kimg {trainer.cur_nimg / 1000:.1f}, tick {trainer.tick}")


class Probes:
    """What a tick measures of G_ema besides the steps' statistics, on every rank (each its share of the samples):
    the grid's latents, the digit FID of the bundled digits (data 'mnist'), the modes of StackedMNIST with the digit
    FID of their channels (data 'stacked-mnist') and --metrics."""

    def __init__(self, cfg: Config, opts: RunOptions, data: ImageData, device: torch.device, world: World,
                 log: Callable[[str], None]) -> None:
        self.world, self.metric_every = world, opts.metric_every
        self.grid_z, self.grid_c, self.grid_nrow = latents(GRID_SEEDS, cfg.z_dim), None, None
        if cfg.cond:  # one row per class, the same latents in every row
            self.grid_z, self.grid_c = class_sheet(cfg.z_dim, cfg.cond)
            self.grid_nrow = len(CLASS_SHEET_SEEDS)
        self.digit_net = self.digit_fid = self.digit_z = self.digit_c = None
        self.stacked = opts.data == "stacked-mnist"
        # the bundled digits get a per-tick digit FID against all 5,000 of them; StackedMNIST that of every channel,
        # and its modes
        if opts.data == "mnist" or self.stacked:
            from vitgan.metrics.digits import DigitFID, load_classifier

            self.digit_net = load_classifier()  # every rank classifies its share; rank 0 scores them all
            reference = load_mnist5k() if self.stacked else data
            self.digit_fid = DigitFID.of(reference, self.digit_net) if world.is_main else None
            seeds = MODE_SEEDS if self.stacked else DIGIT_FID_SEEDS
            self.digit_z = latents(seeds, cfg.z_dim)[world.rank::world.size]
            if cfg.cond:  # labels as the data's; gathered from the ranks, the samples come rank by rank
                labels = label_draws(data.labels, len(seeds))
                self.digit_c = labels[world.rank::world.size]
                self.digit_c_gathered = torch.cat([labels[r::world.size] for r in range(world.size)]).numpy()
        self.evaluator = None
        if opts.metrics:
            from vitgan.metrics.evaluate import Evaluator, parse_metrics

            self.evaluator = Evaluator(parse_metrics(opts.metrics), data, inception_path=opts.inception,
                                       device=device, log=log, world=world)

    def metrics(self, trainer: Trainer, final: bool) -> dict[str, float]:
        """--metrics of G_ema on the ticks they are due (every `metric_every` and the last); {} on the others."""
        if self.evaluator is None or not (final or trainer.tick % self.metric_every == 0):
            return {}
        return self.evaluator(trainer.G_ema)

    def digits(self, trainer: Trainer) -> dict[str, float]:
        """The digit FID and class coverage of G_ema's samples (on rank 0; {} on the others, and without digits); on
        StackedMNIST those of every channel as a digit, and the samples' `modes`, `modes_kl` and `confidence`
        (`vitgan.metrics.modes`), each channel classified once for both. A conditional G's samples are drawn with
        labels as the data's (`label_draws`) and add their class agreement (`agreement`, `agreement_worst`): the
        digit, or on StackedMNIST the mode, the classifier gives them against their label."""
        if self.digit_net is None:
            return {}
        from vitgan.metrics.digits import class_agreement, classify
        from vitgan.metrics.modes import channel_digits, mode_of, stacked_scores

        samples = trainer.samples(self.digit_z, self.digit_c)
        parts = distributed.gather(classify(self.digit_net, channel_digits(samples) if self.stacked else samples),
                                   self.world)
        if self.digit_fid is None:
            return {}
        feats, probs = (np.concatenate(part) for part in zip(*parts, strict=True))
        if self.stacked:
            scores = stacked_scores(self.digit_fid, feats, probs)
            scores["modes_kl"] = scores.pop("kl")
            predicted = mode_of(probs.reshape(-1, 3, probs.shape[1]))
        else:
            scores, predicted = self.digit_fid.score(feats, probs), probs.argmax(axis=1)
        if self.digit_c is not None:  # a conditional G: do its samples keep the class they were drawn for?
            scores.update(class_agreement(predicted, self.digit_c_gathered))
        return scores


class TrainingLoop:
    """Steps the Trainer until cfg.kimg (or opts.minutes) and ends a tick at every multiple of the tick length.

    A non-finite step stops the run, or under --nan-policy rollback returns to `last_good` (the newest training
    state, or the one the run started from) with lower learning rates. A compiled run's first step is where compiling
    happens: if it fails, that step is retried uncompiled from the same state.
    """

    def __init__(self, trainer: Trainer, opts: RunOptions, report: Report, run_dir: Path, probes: Probes,
                 last_good: GoodState) -> None:
        self.trainer, self.opts, self.report, self.run_dir, self.probes = trainer, opts, report, run_dir, probes
        self.world = trainer.world
        self.last_good = last_good
        self.rollbacks = 0
        self.total_nimg = int(trainer.cfg.kimg * 1000)
        self.tick_nimg = max(round(opts.tick_kimg * 1000), 1)
        self.start_time, self.start_nimg = time.time(), trainer.cur_nimg
        self.tick_start_time, self.tick_start_nimg = self.start_time, trainer.cur_nimg
        self.maintenance_s = 0.0  # the previous end_tick's own time: the per-tick work off the training steps
        self.sums: dict[str, torch.Tensor | float] = {}  # the tick's step statistics, summed, and "steps"
        self.before_first_step = copy.deepcopy(trainer.state()) if trainer.compiled else None

    def run(self) -> None:
        self.end_tick(final=False)  # the starting point's sample grid
        while True:
            while not self.should_stop():
                self.step()
            if self.checked():  # the last tick's steps (after a rollback: train on)
                break
        if self.trainer.cur_nimg > self.tick_start_nimg:
            self.trainer.tick += 1
        self.end_tick(final=True)

    def should_stop(self) -> bool:
        """At cfg.kimg, or past opts.minutes on any rank (all ranks stop at the same step)."""
        done = self.trainer.cur_nimg >= self.total_nimg
        out_of_time = self.opts.minutes is not None and distributed.any_rank(
            time.time() - self.start_time >= self.opts.minutes * 60, self.world)
        return done or out_of_time

    def checked(self) -> bool:
        """Whether the steps since the last check were finite (one sync): if not, the run stops naming the first
        non-finite term and its step, or under --nan-policy rollback returns to `last_good` (False)."""
        try:
            self.trainer.check_finite()
        except NonFiniteError as error:
            if self.opts.nan_policy != "rollback":
                raise
            self.roll_back(error)
            return False
        return True

    def step(self) -> None:
        """One Trainer step (no host sync), its statistics added to the tick's on the device; the tick ends, its
        steps checked for NaN and inf, where its length is crossed."""
        trainer = self.trainer
        try:
            stats = trainer.run_step()
        except Exception as error:  # the compiled first step failed (no C++ compiler, ...): retried uncompiled,
            if self.before_first_step is None:  # where a fault that is not the compiler's shows again
                raise
            self.report.log(f"torch.compile failed ({type(error).__name__}: {str(error).strip()[:200]!r}); "
                            "training without it")
            trainer.load_state(self.before_first_step)
            trainer.uncompile()
            return
        self.before_first_step = None
        for key, value in stats.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.sums["steps"] = self.sums.get("steps", 0) + 1
        tick_ends = crossed(self.tick_start_nimg, trainer.cur_nimg, self.tick_nimg)
        if tick_ends and trainer.cur_nimg < self.total_nimg and self.checked():
            trainer.tick += 1
            self.end_tick(final=False)

    def end_tick(self, final: bool) -> None:
        """Status line, stats.jsonl row, sample grid, loss plot, TensorBoard; a checkpoint every `snap` ticks."""
        trainer, now = self.trainer, time.time()
        progressed = trainer.cur_nimg > self.tick_start_nimg
        measured = self.probes.metrics(trainer, final) if progressed else {}  # every rank takes part
        save_now = final or crossed(self.tick_start_nimg, trainer.cur_nimg, self.tick_nimg * self.opts.snap)
        digits = self.probes.digits(trainer) if progressed else {}  # every rank takes part
        if not self.world.is_main:  # rank 0 writes the state; the others remember where it is, to roll back to it
            if save_now and self.opts.nan_policy == "rollback":
                self.last_good = trainer.state_path(self.run_dir)
            self.start_tick()
            return
        images = trainer.samples(self.probes.grid_z, self.probes.grid_c)
        if progressed:
            row = {**self.tick_row(now, images), **digits, **measured}
            self.report.tick(row, images, trainer.cur_nimg, self.eta(now), list(measured))
        self.report.grid(images, f"fakes-{trainer.cur_nimg:09d}.png", nrow=self.probes.grid_nrow)
        if save_now:
            self.last_good = trainer.save(self.run_dir, keep_states=self.opts.keep)
            self.report.log(f"saved {self.last_good.name} and {checkpoint.snapshot_name(trainer.cur_nimg)}")
        self.start_tick()
        self.maintenance_s = self.tick_start_time - now

    def tick_row(self, now: float, images: torch.Tensor) -> dict[str, float]:
        """The tick's stats.jsonl row before the digit FID and --metrics: its time and rates, the means of the steps'
        statistics, G_ema's spread across z (from the tick's grid, `images`) and D's largest singular value."""
        trainer = self.trainer
        steps = max(self.sums.pop("steps", 0), 1)
        row: dict[str, float] = {"tick": trainer.tick, "kimg": trainer.cur_nimg / 1000, "time": now - self.start_time}
        # sec_per_kimg: the tick's steps alone (the status line's img/s is 1000 over it); img_per_sec: the run's
        # mean since it started, compiling and per-tick work included (the ETA's, and what the benchmarks read)
        row["sec_per_kimg"] = (now - self.tick_start_time) / ((trainer.cur_nimg - self.tick_start_nimg) / 1000)
        row["img_per_sec"] = self.mean_rate(now)
        row["maintenance_s"] = self.maintenance_s
        row.update({key: float(value) / steps for key, value in self.sums.items()})  # the tick's one sync of them
        row["g_z_std"] = float(images.std(dim=0).mean())  # G_ema's per-pixel spread across z
        row["d_sigma_max"] = max(largest_singular_values(trainer.D).values())  # D's instability signal
        return row

    def mean_rate(self, now: float) -> float:
        """Images per second since the run (or its resumption) started."""
        return (self.trainer.cur_nimg - self.start_nimg) / max(now - self.start_time, 1e-9)

    def eta(self, now: float) -> float:
        """Seconds to cfg.kimg at the run's mean rate, or to opts.minutes if that comes first."""
        eta = (self.total_nimg - self.trainer.cur_nimg) / max(self.mean_rate(now), 1e-9)
        if self.opts.minutes is not None:
            eta = min(eta, self.opts.minutes * 60 - (now - self.start_time))
        return eta

    def start_tick(self) -> None:
        """A new tick starts now, at the current image count, with no statistics yet."""
        self.sums.clear()
        self.tick_start_time, self.tick_start_nimg = time.time(), self.trainer.cur_nimg

    def roll_back(self, error: NonFiniteError) -> None:
        """--nan-policy rollback: back to the last good state with half the learning rates, or give up."""
        self.rollbacks += 1
        if self.last_good is None or self.rollbacks > MAX_ROLLBACKS:
            raise FloatingPointError(f"{error} (gave up after {MAX_ROLLBACKS} rollbacks)") from None
        good = self.last_good
        state = checkpoint.load_training_state(good) if isinstance(good, Path) else good
        self.trainer.rollback(state, ROLLBACK_LR_FACTOR)
        where = good.name if isinstance(good, Path) else "the start of this run"
        self.report.log(f"non-finite: {error}; rolled back to {where} (kimg {self.trainer.cur_nimg / 1000:.3f}) "
                        f"with g_lr {self.trainer.cfg.g_lr:g}, d_lr {self.trainer.cfg.d_lr:g} (rollback "
                        f"{self.rollbacks} of {MAX_ROLLBACKS})")
        self.start_tick()
