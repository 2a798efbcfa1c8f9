"""The ViTGAN training loop: NS loss, DiffAugment, bCR, optional lazy R1, Adam (0, 0.99), an EMA generator.

Progress is counted in images shown to D (kimg), reported once per tick. Each run writes into its own folder
`runs/NNNNN-<preset>-<data>/`: training_options.json, log.txt, stats.jsonl, TensorBoard events (when tensorboard
is installed), a sample grid per tick from fixed seeds (EMA generator), losses.png, network snapshots and
training states (see checkpoint.py).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import random
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vitgan.config import Config, ConfigError
from vitgan.data import ImageData, load
from vitgan.fileio import atomic_write
from vitgan.images import save_grid
from vitgan.networks import Generator, build_discriminator, count_parameters
from vitgan.nn.spectral import largest_singular_values
from vitgan.sampling import generate, latents
from vitgan.training import checkpoint, distributed
from vitgan.training.augment import Draws, diff_augment, translation
from vitgan.training.device import resolve_device, resolve_precision
from vitgan.training.distributed import World, average_gradients, mean_over_ranks
from vitgan.training.loss import consistency_penalty, d_logistic_loss, g_nonsaturating_loss, r1_penalty
from vitgan.training.options import MAX_ROLLBACKS, ROLLBACK_LR_FACTOR, RunOptions

GRID_SEEDS = range(64)
_SHOWN = ("loss_d", "loss_g", "bcr", "r1", "logits_real", "logits_fake", "g_z_std", "digit_fid", "classes")
DIGIT_FID_SEEDS = range(1_000_000, 1_001_000)  # 1,000 fixed latents for the per-tick digit FID

# Fields that may differ when resuming: the schedule and the regularisation weights, not the networks.
RESUMABLE_FIELDS = {"kimg", "batch", "g_lr", "d_lr", "augment", "augment_p", "augment_fill", "bcr_real", "bcr_fake",
                    "bcr_mode", "bcr_shift", "r1_gamma", "r1_interval", "lr_warmup_kimg", "ema_kimg", "ema_rampup"}


def new_run_dir(outdir: Path, preset: str, data_name: str) -> Path:
    """outdir/NNNNN-<preset>-<data>, NNNNN one more than the largest number already there."""
    outdir.mkdir(parents=True, exist_ok=True)
    numbers = [int(m.group(1)) for p in outdir.iterdir() if (m := re.match(r"^(\d{5})-", p.name))]
    safe = re.sub(r"[^A-Za-z0-9_.]+", "_", data_name) or "data"
    run_dir = outdir / f"{max(numbers, default=-1) + 1:05d}-{preset}-{safe}"
    run_dir.mkdir()
    return run_dir


class NonFiniteError(FloatingPointError):
    """NaN or inf in a loss term, a gradient or a weight; names the term, the step and the kimg."""

    def __init__(self, term: str, value: float, step: int, nimg: int) -> None:
        super().__init__(f"{term} became {value} in step {step} (kimg {nimg / 1000:.3f})")
        self.term, self.step, self.nimg = term, step, nimg


def total_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of all the tensors together (NaN or inf if any element is): one fused reduction, no sync."""
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors))) if tensors else torch.zeros(())


def check_finite(terms: dict[str, torch.Tensor], step: int, nimg: int) -> None:
    """One sync for all the step's scalars; raise NonFiniteError naming the first non-finite one, in step order."""
    values = torch.stack([t.detach().float().reshape(()) for t in terms.values()])
    if not bool(torch.isfinite(values).all()):
        for name, value in zip(terms, values.tolist(), strict=True):
            if not math.isfinite(value):
                raise NonFiniteError(name, value, step, nimg)


def crossed(before: int, after: int, interval: int) -> bool:
    """Whether the image counter passed a multiple of `interval` going from `before` to `after`: ticks and snapshots
    fall at fixed kimg, so a resumed run reports and checkpoints where an uninterrupted one does."""
    return after // interval > before // interval


def ema_beta(cfg: Config, cur_nimg: int) -> float:
    """Per-step EMA decay for a half-life of ema_kimg thousand images, ramped up early in training."""
    half_life = cfg.ema_kimg * 1000
    if cfg.ema_rampup > 0:
        half_life = min(half_life, cur_nimg * cfg.ema_rampup)
    return 0.5 ** (cfg.batch / max(half_life, 1e-8))


def lr_warmup(cfg: Config, cur_nimg: int) -> float:
    """The learning-rate factor of the step that starts at cur_nimg images: (images after the step) / warm-up
    images, at most 1; 1 without a warm-up."""
    if cfg.lr_warmup_kimg <= 0:
        return 1.0
    return min(1.0, (cur_nimg + cfg.batch) / (cfg.lr_warmup_kimg * 1000))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """ema <- beta * ema + (1 - beta) * model for parameters; buffers (w_avg) are copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
        p_ema.lerp_(p.detach(), 1 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)


class Tee:
    """Status lines to stdout and to log.txt."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "a", buffering=1)  # noqa: SIM115 - closed by close()

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        self.file.write(line + "\n")

    def close(self) -> None:
        self.file.close()


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional extra
        return None
    return SummaryWriter(str(run_dir))


def plot_losses(stats_path: Path, out: Path) -> None:
    """losses.png: the per-tick means of the loss terms against kimg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in stats_path.read_text().splitlines() if line.strip()]
    if not rows:
        return
    kimg = [r["kimg"] for r in rows]
    fig, axes = plt.subplots(1, 3 if "digit_fid" in rows[0] else 2, figsize=(15, 3.5), squeeze=False)
    axes = axes[0]
    for key in ("loss_d", "loss_g"):
        axes[0].plot(kimg, [r[key] for r in rows], label=key)
    for key in ("logits_real", "logits_fake", "bcr", "r1", "g_z_std"):
        if any(key in r for r in rows):  # lazy R1 may skip a tick shorter than its interval
            axes[1].plot(kimg, [r.get(key, math.nan) for r in rows], label=key)
    if len(axes) == 3:
        axes[2].plot(kimg, [r["digit_fid"] for r in rows], label="digit_fid (1k samples)")
        axes[2].set_yscale("log")
        axes[2].set_title("digit FID (EMA generator)")
    for ax in axes:
        ax.set_xlabel("kimg")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_title("losses")
    axes[1].set_title("D logits, regularisers, G diversity")
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)


def plot_metrics(stats_path: Path, names: list[str], out: Path) -> None:
    """metrics.png: one panel per metric against kimg (the ticks where it was measured)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in stats_path.read_text().splitlines() if line.strip()]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.5), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        points = [(r["kimg"], r[name]) for r in rows if name in r]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o")
        ax.set_title(name)
        ax.set_xlabel("kimg")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)


class Trainer:
    """Holds the networks, optimisers and counters of one run; `step()` is one D step and one G step.

    The batch of `cfg.batch` images is processed in rounds of `batch_gpu` images per rank (gradients accumulated,
    then averaged over the ranks). All per-sample randomness (data order, latents, augmentation, mirroring) comes
    from one generator seeded by the run seed and is drawn for the whole batch on every rank, each rank keeping its
    rows: the result does not depend on how the batch is split over ranks and rounds.
    """

    def __init__(self, cfg: Config, data: ImageData, device: torch.device, amp: torch.dtype | None, *,
                 preset: str = "custom", mirror: bool = False, compile: bool = False, seed: int = 0,
                 world: World | None = None, batch_gpu: int | None = None) -> None:
        self.cfg, self.data, self.device, self.amp, self.preset = cfg, data, device, amp, preset
        self.mirror, self.world = mirror, world or World()
        ranks = self.world.size
        self.batch_gpu = batch_gpu or cfg.batch // ranks
        if self.batch_gpu < 1 or cfg.batch % (self.batch_gpu * ranks):
            raise ConfigError(f"batch_gpu: the batch of {cfg.batch} is not a multiple of {self.batch_gpu} images "
                              f"per device x {ranks} ranks")
        self.rounds = cfg.batch // (self.batch_gpu * ranks)
        self.G = Generator(cfg).to(device).train()
        self.D = build_discriminator(cfg).to(device).train()
        for net in (self.G, self.D):
            distributed.broadcast_module(net, self.world)  # every rank starts from rank 0's weights
        # what the steps call: the networks themselves, or their torch.compile'd forms (same parameters)
        self.G_run: nn.Module = torch.compile(self.G) if compile else self.G
        self.D_run: nn.Module = torch.compile(self.D) if compile else self.D
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.g_lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.d_lr, betas=betas)
        self.cur_nimg = 0
        self.tick = 0
        self.d_steps = 0
        self.rng = torch.Generator().manual_seed(seed)  # the per-sample randomness, the same on every rank
        self.order = torch.randperm(len(data), generator=self.rng)
        self.position = 0

    # --- one round's share of the batch ---
    def _draws(self) -> Draws:
        """Random numbers for this rank's rows of one round (batch_gpu x ranks samples)."""
        return Draws(self.rng, start=self.world.rank * self.batch_gpu, total=self.batch_gpu * self.world.size)

    def next_reals(self) -> torch.Tensor:
        """This rank's rows of the next round of a shuffled pass over the data (a new shuffle per pass)."""
        picked = []
        needed = self.batch_gpu * self.world.size
        while needed:
            if self.position == len(self.order):
                self.order, self.position = torch.randperm(len(self.data), generator=self.rng), 0
            take = min(needed, len(self.order) - self.position)
            picked.append(self.order[self.position:self.position + take])
            self.position += take
            needed -= take
        mine = torch.cat(picked)[self.world.rank * self.batch_gpu:][:self.batch_gpu]
        flip = self._draws().rand(self.batch_gpu) < 0.5 if self.mirror else None
        return self.data.batch(mine, flip=flip).to(self.device)

    def _z(self) -> torch.Tensor:
        return self._draws().randn(self.batch_gpu, self.cfg.z_dim).to(self.device)

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.cfg.augment, self.cfg.augment_p, self._draws(), fill=self.cfg.augment_fill)

    def _bcr_transform(self, plain: torch.Tensor, augmented: torch.Tensor) -> torch.Tensor:
        """bCR's T: a shift of D's augmented input, or an independent DiffAugment draw of the plain images."""
        if self.cfg.bcr_mode == "diffaug":
            return self._augment(plain)
        return translation(augmented, self._draws(), ratio=self.cfg.bcr_shift, fill=self.cfg.augment_fill)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def _d_logits(self, batches: list[torch.Tensor]) -> list[torch.Tensor]:
        """D's fp32 logits for several batches: one forward when D's samples never interact, else one per batch
        (a minibatch-std layer must see each batch alone)."""
        if self.D.mixes_samples:
            return [self.D_run(x).float() for x in batches]
        return list(self.D_run(torch.cat(batches)).float().split([len(x) for x in batches]))

    def _d_round(self, with_r1: bool) -> tuple[torch.Tensor, dict[str, float]]:
        """D's loss on one round's images (logistic + bCR [+ lazy R1]) and its terms."""
        cfg = self.cfg
        reals = self.next_reals()
        with torch.no_grad(), self._autocast():
            fakes = self.G_run(self._z()).float()
        with self._autocast():
            real_aug, fake_aug = self._augment(reals), self._augment(fakes)
            batches = [real_aug, fake_aug]
            terms = [(w, i) for i, w in enumerate((cfg.bcr_real, cfg.bcr_fake)) if w > 0]  # (bCR weight, batch)
            batches += [self._bcr_transform((reals, fakes)[i], batches[i]) for _, i in terms]
            logits = self._d_logits(batches)
            loss_d = d_logistic_loss(logits[0], logits[1])
            bcr = torch.zeros((), device=self.device)
            for (weight, i), shifted in zip(terms, logits[2:], strict=True):
                bcr = bcr + weight * consistency_penalty(logits[i], shifted)
        stats = {"loss_d": loss_d.item(), "bcr": bcr.item(), "logits_real": logits[0].mean().item(),
                 "logits_fake": logits[1].mean().item()}
        total = loss_d + bcr
        if with_r1:  # lazy R1, in fp32, on the plain D (compiled code has no double backward)
            real_r1 = real_aug.detach().float().requires_grad_(True)
            r1 = r1_penalty(real_r1, self.D(real_r1).float())
            total = total + r1 * (cfg.r1_gamma / 2 * cfg.r1_interval)
            stats["r1"] = r1.item()
        return total, stats

    def _g_round(self) -> tuple[torch.Tensor, dict[str, float]]:
        with self._autocast():
            loss_g = g_nonsaturating_loss(self.D_run(self._augment(self.G_run(self._z()))).float())
        return loss_g, {"loss_g": loss_g.item()}

    def _optimise(self, net: nn.Module, other: nn.Module, opt: torch.optim.Optimizer, name: str,
                  round_loss: Callable[[], tuple[torch.Tensor, dict[str, float]]]
                  ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """One optimiser step of `net` (`other` frozen). Returns the loss terms averaged over the rounds and the
        ranks, and, for the finiteness check, the norms of the averaged gradient and of the updated weights."""
        other.requires_grad_(False)
        net.requires_grad_(True)
        opt.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for _ in range(self.rounds):
            loss, stats = round_loss()
            (loss / self.rounds).backward()
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + value / self.rounds
        average_gradients(net, self.world)
        norms = {f"grad_{name}": total_norm([p.grad for p in net.parameters() if p.grad is not None])}
        opt.step()
        norms[f"weights_{name}"] = total_norm(list(net.parameters()))
        return mean_over_ranks(sums, self.world), norms

    # --- one iteration ---
    def step(self) -> dict[str, float]:
        """One D step and one G step. Raises NonFiniteError if a loss term, the total gradient norm or the weights of
        D or G hold NaN or inf (checked in that order, with one sync for the whole step)."""
        cfg, start_nimg = self.cfg, self.cur_nimg
        warmup = lr_warmup(cfg, self.cur_nimg)
        for opt, lr in ((self.opt_g, cfg.g_lr), (self.opt_d, cfg.d_lr)):
            for group in opt.param_groups:  # this run's rate (a resumed or rolled-back run's, not the checkpoint's)
                group["lr"] = lr * warmup
        with_r1 = cfg.r1_gamma > 0 and self.d_steps % cfg.r1_interval == 0
        stats_d, norms_d = self._optimise(self.D, self.G, self.opt_d, "d", lambda: self._d_round(with_r1))
        self.d_steps += 1
        stats_g, norms_g = self._optimise(self.G, self.D, self.opt_g, "g", self._g_round)
        d_terms = {k: torch.tensor(stats_d[k]) for k in ("r1", "loss_d", "bcr") if k in stats_d}
        check_finite({**d_terms, **norms_d, "loss_g": torch.tensor(stats_g["loss_g"]), **norms_g}, self.d_steps,
                     start_nimg)
        distributed.average_buffers(self.G, self.world)  # w_avg, tracked by each rank from its own latents
        self.cur_nimg += cfg.batch
        update_ema(self.G_ema, self.G, ema_beta(cfg, self.cur_nimg))
        return {**stats_d, **stats_g, "grad_d": float(norms_d["grad_d"]), "grad_g": float(norms_g["grad_g"])}

    # --- checkpoints ---
    def state(self) -> dict[str, Any]:
        return {
            "format": checkpoint.STATE_FORMAT,
            "preset": self.preset,
            "config": self.cfg.to_dict(),
            "G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "cur_nimg": self.cur_nimg, "tick": self.tick, "d_steps": self.d_steps,
            "data": {"order": self.order, "position": self.position},
            "augment": {"policy": self.cfg.augment, "p": self.cfg.augment_p},
            "rng": checkpoint.rng_state(),
            "sample_rng": self.rng.get_state(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.cur_nimg, self.tick, self.d_steps = state["cur_nimg"], state["tick"], state["d_steps"]
        self.order, self.position = state["data"]["order"], state["data"]["position"]
        if len(self.order) != len(self.data):
            raise ConfigError(f"resume: the checkpoint's data had {len(self.order)} images, this data has "
                              f"{len(self.data)}")
        checkpoint.set_rng_state(state["rng"])
        self.rng.set_state(state["sample_rng"])

    def state_path(self, run_dir: Path) -> Path:
        return run_dir / f"training-state-{self.cur_nimg:09d}.pt"

    def save(self, run_dir: Path, *, keep_states: int = 2) -> Path:
        """A network snapshot and a training state (the newest `keep_states` kept); returns the training state."""
        snapshot = run_dir / f"network-snapshot-{self.cur_nimg:09d}.safetensors"
        checkpoint.save_snapshot(snapshot, self.cfg, {"G_ema": self.G_ema, "G": self.G, "D": self.D},
                                 {"cur_nimg": self.cur_nimg, "tick": self.tick})
        state = self.state_path(run_dir)
        checkpoint.save_training_state(state, self.state())
        checkpoint.prune_training_states(run_dir, keep_states)
        return state

    def rollback(self, state: dict[str, Any], lr_factor: float) -> None:
        """Return to a good training state with both learning rates multiplied by lr_factor."""
        self.cfg = self.cfg.replace(g_lr=self.cfg.g_lr * lr_factor, d_lr=self.cfg.d_lr * lr_factor)
        self.load_state(state)


def _format_seconds(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s"


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
    trainer = Trainer(cfg, data, device, amp, preset=opts.preset, mirror=opts.mirror, compile=opts.compile,
                      seed=opts.seed, world=world, batch_gpu=opts.batch_gpu)
    if resume_state is not None:
        trainer.load_state(resume_state)
    # --nan-policy rollback returns to the newest state written by this run, else to the one it started from
    last_good: Path | dict[str, Any] | None = None
    if opts.nan_policy == "rollback":
        last_good = Path(opts.resume) if resume_state is not None and opts.resume else copy.deepcopy(trainer.state())
    rollbacks = 0

    main = world.is_main  # only rank 0 writes files and prints
    run_dir = new_run_dir(Path(opts.outdir), opts.preset, data.name) if main else None
    run_dir = distributed.gather(run_dir, world)[0]  # rank 0's folder, known to all (for --nan-policy rollback)
    log: Callable[[str], None] = Tee(run_dir / "log.txt") if main else (lambda line: None)
    options = {"config": cfg.to_dict(), "run": dataclasses.asdict(opts), "device": str(device),
               "precision": "bf16" if amp == torch.bfloat16 else "fp32", "num_images": len(data),
               "ranks": world.size, "batch_gpu": trainer.batch_gpu, "rounds": trainer.rounds,
               "G_params": count_parameters(trainer.G), "D_params": count_parameters(trainer.D),
               "torch": torch.__version__, "command": " ".join(sys.argv)}
    tb = None
    if main:
        (run_dir / "training_options.json").write_text(json.dumps(options, indent=2) + "\n")
        tb = _tensorboard(run_dir)
        save_grid(data.batch(torch.arange(min(64, len(data)))), run_dir / "reals.png")
    stats_path = run_dir / "stats.jsonl"
    grid_z = latents(GRID_SEEDS, cfg.z_dim)
    digit_fid = None
    if opts.data == "mnist" and main:  # the embedded default gets a per-tick digit FID against all 5,000 digits
        from vitgan.metrics.digits import DigitFID

        digit_fid = DigitFID.of(data)
        digit_z = latents(DIGIT_FID_SEEDS, cfg.z_dim)
    evaluator, metric_names = None, []
    if opts.metrics:  # on every rank: each generates and measures its share of the samples
        from vitgan.metrics.evaluate import Evaluator, parse_metrics

        evaluator = Evaluator(parse_metrics(opts.metrics), data, inception_path=opts.inception, device=device,
                              log=log, world=world)

    log(f"run folder: {run_dir}")
    log(f"preset {opts.preset}, data {opts.data} ({len(data)} images), device {device}, precision "
        f"{options['precision']}, G {options['G_params']:,} params, D {options['D_params']:,} params")
    if world.size > 1 or trainer.rounds > 1:
        log(f"{world.size} rank(s) x {trainer.batch_gpu} images x {trainer.rounds} round(s) = batch {cfg.batch}")
    if resume_state is not None:
        log(f"resumed from {opts.resume} at kimg {trainer.cur_nimg / 1000:.1f}, tick {trainer.tick}")
    total_nimg = int(cfg.kimg * 1000)
    tick_nimg = max(round(opts.tick_kimg * 1000), 1)
    start_time, start_nimg = time.time(), trainer.cur_nimg
    tick_start_time, tick_start_nimg = start_time, trainer.cur_nimg
    sums: dict[str, float] = {}

    def end_tick(final: bool) -> None:
        """Status line, stats.jsonl row, sample grid, loss plot, TensorBoard; a checkpoint every `snap` ticks."""
        nonlocal tick_start_time, tick_start_nimg, last_good
        now = time.time()
        measured = {}
        if evaluator is not None and trainer.cur_nimg > tick_start_nimg and (final or
                                                                              trainer.tick % opts.metric_every == 0):
            measured = evaluator(trainer.G_ema)  # every rank takes part
        save_now = final or crossed(tick_start_nimg, trainer.cur_nimg, tick_nimg * opts.snap)
        if not main:  # rank 0 writes the state; the others remember where it is, to roll back to it
            last_good = trainer.state_path(run_dir) if save_now and opts.nan_policy == "rollback" else last_good
            sums.clear()
            tick_start_time, tick_start_nimg = time.time(), trainer.cur_nimg
            return
        steps = max(sums.pop("steps", 0), 1)
        row: dict[str, float] = {"tick": trainer.tick, "kimg": trainer.cur_nimg / 1000, "time": now - start_time}
        images = generate(trainer.G_ema, grid_z)
        if trainer.cur_nimg > tick_start_nimg:
            rate = (trainer.cur_nimg - start_nimg) / max(now - start_time, 1e-9)
            row["sec_per_kimg"] = (now - tick_start_time) / ((trainer.cur_nimg - tick_start_nimg) / 1000)
            row["img_per_sec"] = rate
            row.update({key: value / steps for key, value in sums.items()})
            row["g_z_std"] = float(images.std(dim=0).mean())  # G_ema's per-pixel spread across z
            row["d_sigma_max"] = max(largest_singular_values(trainer.D).values())  # D's instability signal
            if digit_fid is not None:
                row.update(digit_fid(generate(trainer.G_ema, digit_z, batch=250)))
            row.update(measured)
            metric_names[:] = list(dict.fromkeys(metric_names + list(measured)))
            eta = (total_nimg - trainer.cur_nimg) / max(rate, 1e-9)
            if opts.minutes is not None:
                eta = min(eta, opts.minutes * 60 - (now - start_time))
            with open(stats_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            plot_losses(stats_path, run_dir / "losses.png")
            if metric_names:
                plot_metrics(stats_path, metric_names, run_dir / "metrics.png")
            if tb is not None:
                for key, value in row.items():
                    tb.add_scalar(f"train/{key}", value, trainer.cur_nimg)
                tb.add_images("fakes", (images[:32] + 1) / 2, trainer.cur_nimg)
            terms = "  ".join(f"{k} {row[k]:.3f}" if isinstance(row[k], float) else f"{k} {row[k]}"
                              for k in (*_SHOWN, *metric_names) if k in row)
            log(f"tick {trainer.tick:<4d} kimg {row['kimg']:<7.1f} time {_format_seconds(row['time'])}  "
                f"sec/kimg {row['sec_per_kimg']:<6.2f} img/s {rate:<6.1f} ETA {_format_seconds(eta)}  {terms}")
        save_grid(images, run_dir / f"fakes-{trainer.cur_nimg:09d}.png")
        sums.clear()
        if save_now:
            last_good = trainer.save(run_dir, keep_states=opts.keep)
            log(f"saved {last_good.name} and network-snapshot-{trainer.cur_nimg:09d}.safetensors")
        tick_start_time, tick_start_nimg = time.time(), trainer.cur_nimg

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
            for key, value in step_stats.items():
                sums[key] = sums.get(key, 0.0) + value
            sums["steps"] = sums.get("steps", 0) + 1
            if crossed(tick_start_nimg, trainer.cur_nimg, tick_nimg) and trainer.cur_nimg < total_nimg:
                trainer.tick += 1
                end_tick(final=False)
    finally:
        if tb is not None:
            tb.close()
        if isinstance(log, Tee):
            log.close()
    return run_dir

