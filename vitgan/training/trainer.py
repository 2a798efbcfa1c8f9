"""One training step of ViTGAN: draw the data, compute the objective (loss.py), step the optimisers, keep the EMA
generator, and check that everything stays finite."""

from __future__ import annotations

import contextlib
import copy
import functools
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitgan import distributed
from vitgan.config import Config, ConfigError
from vitgan.data import ImageData
from vitgan.distributed import World
from vitgan.networks import Generator, build_discriminator
from vitgan.sampling import generate
from vitgan.training import checkpoint
from vitgan.training.augment import Draws
from vitgan.training.device import CompileMode, to_device
from vitgan.training.loss import D_TERMS, G_TERMS, CheckedR1, Phase, ViTGANLoss, r1_penalty


class NonFiniteError(FloatingPointError):
    """NaN or inf in a loss term, a gradient or a weight; names the term, the step and the kimg."""

    def __init__(self, term: str, value: float, step: int, nimg: int) -> None:
        super().__init__(f"{term} became {value} in step {step} (kimg {nimg / 1000:.3f})")
        self.term, self.step, self.nimg = term, step, nimg


def total_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of all the tensors together (NaN or inf if any element is): one fused reduction, no sync."""
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors))) if tensors else torch.zeros(())


class FiniteWatch:
    """The first non-finite scalar of a run's steps, kept on the device so that a step needs no host sync:
    `observe` each step's scalars (`names`: loss terms, gradient and weight norms, in the order the step computes
    them), and `check` once in a while (the run loop: once per tick, one sync) raises NonFiniteError naming the first
    scalar that became NaN or inf, its value, and the step and image count where it did; a later step's NaN does not
    overwrite it."""

    def __init__(self, names: tuple[str, ...], device: torch.device) -> None:
        self.names, self.device = names, device
        self.reset()

    def reset(self) -> None:
        """Nothing seen yet (a new run, or one rolled back to a good state)."""
        # (step, image count, index into names, value) of the first non-finite scalar; step -1: none yet
        self.first = torch.tensor([-1.0, 0.0, 0.0, 0.0], dtype=torch.float64, device=self.device)

    def observe(self, scalars: dict[str, torch.Tensor], step: int, nimg: int) -> None:
        values = torch.stack([scalars[name].detach().reshape(()).to(torch.float64) for name in self.names])
        bad = ~torch.isfinite(values)
        index = torch.argmax(bad.to(torch.uint8))  # the first non-finite one, in step order
        where = [torch.full((), n, dtype=torch.float64, device=values.device) for n in (step, nimg)]  # no copy
        found = torch.stack([*where, index.to(torch.float64), values[index]])
        self.first = torch.where(bad.any() & (self.first[0] < 0), found, self.first)

    def check(self) -> None:
        """One sync: raise NonFiniteError for the first non-finite scalar observed since the last check (or reset)."""
        step, nimg, index, value = self.first.tolist()
        if step >= 0:
            self.reset()
            raise NonFiniteError(self.names[int(index)], value, int(step), int(nimg))


def images_per_step(cfg: Config) -> int:
    """The reals D sees in one training step (its d_steps_per_g batches before one G step)."""
    return cfg.batch * cfg.d_steps_per_g


def ema_beta(cfg: Config, cur_nimg: int) -> float:
    """Per-G-step EMA decay for a half-life of ema_kimg thousand images, ramped up early in training."""
    half_life = cfg.ema_kimg * 1000
    if cfg.ema_rampup > 0:
        half_life = min(half_life, cur_nimg * cfg.ema_rampup)
    return 0.5 ** (images_per_step(cfg) / max(half_life, 1e-8))


def lr_warmup(cfg: Config, cur_nimg: int) -> float:
    """The learning-rate factor of the step that starts at cur_nimg images: (images after the step) / warm-up
    images, at most 1; 1 without a warm-up."""
    if cfg.lr_warmup_kimg <= 0:
        return 1.0
    return min(1.0, (cur_nimg + images_per_step(cfg)) / (cfg.lr_warmup_kimg * 1000))


ADA_INTERVAL = 4  # D steps between two adjustments of the adaptive augmentation probability (ADA's value)


def ada_adjust(cfg: Config, p: float, r: float, images: int) -> float:
    """ADA's update (Karras et al. 2020): p + sign(r - ada_target) * images / (ada_kimg * 1000), kept in [0, 1];
    r is the mean of sign(D(augmented real)) over the `images` reals since the last adjustment."""
    direction = (r > cfg.ada_target) - (r < cfg.ada_target)
    return min(max(p + direction * images / (cfg.ada_kimg * 1000), 0.0), 1.0)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """ema <- beta * ema + (1 - beta) * model for parameters; buffers (w_avg) are copied."""
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)


def check_data_labels(cfg: Config, data: ImageData) -> None:
    """Refuse a conditional Config (`cond` classes) whose data has an image without a label or a label outside
    [0, cond): one line naming the data."""
    if not cfg.cond:
        return
    labels = data.labels
    if len(labels) == 0 or int(labels.min()) < 0:
        raise ConfigError(f"cond: {data.name} has images without a label; class conditioning needs a label per image "
                          "(a dataset.json, class folders through `vitgan prepare --labels folders`, CIFAR, parquet)")
    if int(labels.max()) >= cfg.cond:
        raise ConfigError(f"cond: {data.name} has the label {int(labels.max())}, beyond the {cfg.cond} classes of "
                          "the configuration")


class Trainer:
    """Holds the networks, optimisers and counters of one run; `step()` is `d_steps_per_g` D steps and one G step: it
    draws the data, asks the objective (`loss`, a `ViTGANLoss`) for each phase's loss, steps the optimisers, keeps
    the EMA of G and checks that every term, gradient and weight stays finite.

    The batch of `cfg.batch` images is processed in rounds of `batch_gpu` images per rank (gradients accumulated,
    then averaged over the ranks). All per-sample randomness (data order, latents, augmentation, mirroring) comes
    from one generator seeded by the run seed and is drawn for the whole batch on every rank, each rank keeping its
    rows: the result does not depend on how the batch is split over ranks and rounds.
    """

    def __init__(self, cfg: Config, data: ImageData, device: torch.device, amp: torch.dtype | None, *,
                 preset: str = "custom", mirror: bool = False, compile: bool = False,
                 compile_mode: CompileMode = "default", seed: int = 0, world: World | None = None,
                 batch_gpu: int | None = None) -> None:
        self.cfg, self.data, self.device, self.amp, self.preset = cfg, data, device, amp, preset
        self.mirror, self.world = mirror, world or World()
        ranks = self.world.size
        self.batch_gpu = batch_gpu or cfg.batch // ranks
        if self.batch_gpu < 1 or cfg.batch % (self.batch_gpu * ranks) or self.batch_gpu % cfg.d_pack:
            per_rank = cfg.batch // ranks if cfg.batch % ranks == 0 else 0
            works = [n for n in range(cfg.d_pack, per_rank + 1, cfg.d_pack) if per_rank % n == 0]
            raise ConfigError(f"batch_gpu: {self.batch_gpu} images per device per round must divide the batch of "
                              f"{cfg.batch} over {ranks} rank(s) and make whole packs of d_pack={cfg.d_pack}; "
                              + (f"it can be {', '.join(map(str, works))}" if works else "no value can: change batch"))
        self.rounds = cfg.batch // (self.batch_gpu * ranks)
        check_data_labels(cfg, data)
        self.G = Generator(cfg).to(device).train()
        self.D = build_discriminator(cfg).to(device).train()
        for net in (self.G, self.D):
            distributed.broadcast_module(net, self.world)  # every rank starts from rank 0's weights
        # what the steps call: the networks themselves, or their torch.compile'd forms (same parameters)
        if compile and compile_mode == "reduce-overhead" and device.type != "cuda":
            raise ConfigError(f"compile_mode: reduce-overhead replays CUDA graphs and needs a CUDA device, not "
                              f"{device.type}")
        self.compiled = compile
        # CUDA graphs (reduce-overhead): a step's outputs are dead once the next begins, as each round tells them
        self.cudagraphs = compile and compile_mode == "reduce-overhead"
        mode = None if compile_mode == "default" else compile_mode
        self.G_run: nn.Module = torch.compile(self.G, mode=mode) if compile else self.G
        self.D_run: nn.Module = torch.compile(self.D, mode=mode) if compile else self.D
        r1 = functools.partial(r1_penalty, self.D)  # R1's penalty, with the double backward of its gradient
        # compiled, R1 checks itself against the eager form on its first batch and falls back to it where they differ
        self.log: Callable[[str], None] = warnings.warn  # where the Trainer reports (the run loop: its log)
        self.R1_run: Callable[[torch.Tensor], torch.Tensor] = CheckedR1(
            self.D, torch.compile(r1), log=lambda line: self.log(line),
            agree=lambda differ: distributed.any_rank(differ, self.world)) if compile else r1
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        betas = (cfg.beta1, cfg.beta2)
        # fused: one kernel per parameter tensor, on the CPU too (the default there updates each tensor with about
        # a dozen separate operations, a visible share of a small preset's step)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.g_lr, betas=betas, fused=True)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.d_lr, betas=betas, fused=True)
        # fp16 autocast: one gradient scaler per optimiser (disabled otherwise, where each call is a no-op)
        self.scaler_g = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
        self.scaler_d = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
        self.loss = ViTGANLoss(cfg, self.G, self.D, draws=self._device_draws, G_run=self.G_run, D_run=self.D_run,
                               R1_run=self.R1_run, autocast=self.autocast)
        self.cur_nimg = 0
        self.tick = 0
        self.d_steps = 0
        self.ada_r: list[torch.Tensor | float] = []  # ADA: r of each D step since its last adjustment
        self.rng = torch.Generator().manual_seed(seed)  # the per-sample randomness, the same on every rank
        self.order = torch.randperm(len(data), generator=self.rng)
        self.position = 0
        self.watch = FiniteWatch(D_TERMS + ("grad_d", "weights_d") + G_TERMS + ("grad_g", "weights_g"), device)
        # the last D step's reals and their labels, one batch per round (rpgan's G step)
        self.last_reals: list[tuple[torch.Tensor, torch.Tensor]] = []

    def uncompile(self) -> None:
        """Run the plain networks from now on (after compiling them failed)."""
        self.compiled = False
        self.G_run = self.loss.G_run = self.G
        self.D_run = self.loss.D_run = self.D
        self.R1_run = self.loss.R1_run = functools.partial(r1_penalty, self.D)

    # --- one round's share of the batch ---
    def _draws(self, device: torch.device | None = None) -> Draws:
        """Random numbers for this rank's rows of one round (batch_gpu x ranks samples), on the host or `device`."""
        return Draws(self.rng, start=self.world.rank * self.batch_gpu, total=self.batch_gpu * self.world.size,
                     device=device)

    def _device_draws(self) -> Draws:
        """The loss's random numbers (latents, augmentation): drawn on the host, queued to the run's device."""
        return self._draws(self.device)

    def next_reals(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's rows of the next round of a shuffled pass over the data (a new shuffle per pass): the images
        and their labels."""
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
        return to_device(self.data.batch(mine, flip=flip), self.device), to_device(self.data.labels[mine], self.device)

    def _z(self) -> torch.Tensor:
        return self._device_draws().randn(self.batch_gpu, self.cfg.z_dim)

    def _fake_labels(self) -> dict[str, torch.Tensor]:
        """A conditional run's labels for this round's fakes, {"c": (batch_gpu,)}: those of uniformly drawn training
        images, so the fakes' classes follow the data's label distribution; {} (and no draw) when unconditional."""
        if not self.cfg.cond:
            return {}
        index = self._draws().randint(0, len(self.data), self.batch_gpu)
        return {"c": to_device(self.data.labels[index], self.device)}

    def autocast(self) -> contextlib.AbstractContextManager:
        """The run's precision: autocast to its dtype, or nothing under fp32."""
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    # --- one iteration ---
    def d_phase(self) -> Phase:
        """The phase of the next D step: with R1 and R2 (`Dboth`) every `r1_interval` D steps when either is on, else
        `Dmain`."""
        penalised = self.cfg.r1_gamma > 0 or self.cfg.r2_gamma > 0
        return "Dboth" if penalised and self.d_steps % self.cfg.r1_interval == 0 else "Dmain"

    def accumulate(self, phase: Phase) -> dict[str, torch.Tensor]:
        """The gradient of `phase`'s network (D for D's phases, G for Gmain; the other frozen) on one batch: this
        rank's share, in `rounds` rounds of `batch_gpu` images, each round's loss divided by the rounds, then averaged
        over the ranks; under fp16 the gradient of the loss times the network's scaler's scale. Returns the terms and
        statistics averaged over the rounds and the ranks. Under rpgan, G's rounds pair their fakes with the reals of
        the same rounds of the last D step (kept in `last_reals`: no image is drawn for G)."""
        net, other, scaler = (self.G, self.D, self.scaler_g) if phase == "Gmain" else (self.D, self.G, self.scaler_d)
        other.requires_grad_(False)
        net.requires_grad_(True)
        net.zero_grad(set_to_none=True)
        sums: dict[str, torch.Tensor] = {}
        relativistic_g = phase == "Gmain" and self.cfg.gan_loss == "rpgan"
        if phase != "Gmain":
            self.last_reals = []  # this D step's, round by round
        for i in range(self.rounds):
            if self.cudagraphs:
                torch.compiler.cudagraph_mark_step_begin()
            if phase == "Gmain":
                batch = {"z": self._z(), **self._fake_labels()}
                if relativistic_g:
                    batch["reals"], batch["real_c"] = self.last_reals[i]
            else:
                reals, real_c = self.next_reals()
                batch = {"reals": reals, "z": self._z(), **self._fake_labels()}
                if self.cfg.cond:
                    batch["real_c"] = real_c
                self.last_reals.append((reals, real_c))
            total, terms, stats = self.loss(phase, **batch)
            scaler.scale(total / self.rounds).backward()
            for key, value in {**terms, **stats}.items():  # on the device: no sync
                sums[key] = sums.get(key, 0.0) + value.detach().float() / self.rounds
        distributed.average_gradients(net, self.world)
        return distributed.mean_over_ranks(sums, self.world)

    def _optimise(self, phase: Phase, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, name: str
                  ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """One optimiser step of `phase`'s network: its terms, and for the finiteness check the norms of the averaged
        (unscaled) gradient and of the updated weights. A step that fp16's scaler skips (inf or NaN in the scaled
        gradient; it lowers its scale) is no error: no update, and its gradient norm counts as 0."""
        net = self.G if phase == "Gmain" else self.D
        stats = self.accumulate(phase)
        scaler.unscale_(opt)  # the norm, and the clipping, are of the true gradient
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        norms = {f"grad_{name}": total_norm(grads)}
        if self.cfg.grad_clip > 0:  # as clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1
            torch._foreach_mul_(grads, (self.cfg.grad_clip / (norms[f"grad_{name}"] + 1e-6)).clamp(max=1.0))
        scale = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        if scaler.get_scale() < scale:
            norms[f"grad_{name}"] = torch.zeros((), device=self.device)
        norms[f"weights_{name}"] = total_norm(list(net.parameters()))
        return stats, norms

    def run_step(self) -> dict[str, torch.Tensor | float]:
        """`d_steps_per_g` D steps and one G step with no host sync (on CUDA, every kernel is queued and the host runs
        ahead; fp16's scaler and ADA's adjustment excepted): the D terms returned are averaged over the D steps, as
        tensors on the device. Each step's loss terms, total gradient norms and weight norms of D and G go to
        `watch`, which keeps the first that is NaN or inf (in that order; a NaN in an earlier D step reaches the
        last one's weights; a gradient overflow that fp16's scaler skips is not one) for `check_finite`."""
        cfg, start_nimg = self.cfg, self.cur_nimg
        warmup = lr_warmup(cfg, self.cur_nimg)
        for opt, lr in ((self.opt_g, cfg.g_lr), (self.opt_d, cfg.d_lr)):
            for group in opt.param_groups:  # this run's rate (a resumed or rolled-back run's, not the checkpoint's)
                group["lr"] = lr * warmup
        sums: dict[str, torch.Tensor] = {}
        for _ in range(cfg.d_steps_per_g):
            stats_d, norms_d = self._optimise(self.d_phase(), self.opt_d, self.scaler_d, "d")
            self.d_steps += 1
            self._adapt(stats_d)
            for key, value in stats_d.items():
                sums[key] = sums.get(key, 0.0) + value / cfg.d_steps_per_g
        stats_d = sums
        stats_g, norms_g = self._optimise("Gmain", self.opt_g, self.scaler_g, "g")
        self.watch.observe({**stats_d, **norms_d, **stats_g, **norms_g}, self.d_steps, start_nimg)
        distributed.average_buffers(self.G, self.world)  # w_avg, tracked by each rank from its own latents
        self.cur_nimg += images_per_step(cfg)
        update_ema(self.G_ema, self.G, ema_beta(cfg, self.cur_nimg))
        return {**stats_d, **stats_g, "grad_d": norms_d["grad_d"], "grad_g": norms_g["grad_g"],
                "augment_p": self.loss.augment_p}

    def check_finite(self) -> None:
        """One sync: raise NonFiniteError naming the first loss term, gradient or weight norm that became NaN or inf
        in a step since the last check (or the start, or a rollback), with that step and its image count."""
        self.watch.check()

    def step(self) -> dict[str, float]:
        """`run_step`, checked (NonFiniteError if it, or an earlier unchecked step, was not finite) and its
        statistics as numbers: one sync per step, for callers that look at every step (the run loop checks once per
        tick instead)."""
        stats = self.run_step()
        self.check_finite()
        return {key: float(value) for key, value in stats.items()}

    def _adapt(self, stats_d: dict[str, torch.Tensor]) -> None:
        """ADA (ada_target > 0): collect r = E[sign(D(augmented real))] of this D step (the mean over every rank's
        reals, so all ranks move p alike) and every ADA_INTERVAL D steps move the augmentation probability."""
        if self.cfg.ada_target <= 0:
            return
        self.ada_r.append(stats_d["real_sign"])
        if len(self.ada_r) == ADA_INTERVAL:
            r = float(sum(self.ada_r)) / len(self.ada_r)  # one sync per adjustment
            self.loss.augment_p = ada_adjust(self.cfg, self.loss.augment_p, r, self.cfg.batch * len(self.ada_r))
            self.ada_r = []

    def samples(self, z: torch.Tensor, c: torch.Tensor | None = None, batch: int = 125) -> torch.Tensor:
        """G_ema's images for latents z (and, conditional, labels c) in the run's precision: the per-tick grid and
        digit FID (`vitgan eval` and `vitgan generate` run in fp32)."""
        with self.autocast():
            return generate(self.G_ema, z, c, batch=batch)

    # --- checkpoints ---
    def state(self) -> dict[str, Any]:
        return {
            "format": checkpoint.STATE_FORMAT,
            "preset": self.preset,
            "config": self.cfg.to_dict(),
            "G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "scaler_g": self.scaler_g.state_dict(), "scaler_d": self.scaler_d.state_dict(),  # {} without fp16
            "cur_nimg": self.cur_nimg, "tick": self.tick, "d_steps": self.d_steps,
            "data": {"order": self.order, "position": self.position},
            "augment": {"policy": self.cfg.augment, "p": self.loss.augment_p, "ada_r": [float(r) for r in self.ada_r]},
            "rng": checkpoint.rng_state(),
            "sample_rng": self.rng.get_state(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.watch.reset()  # the steps after `state` are undone, their NaNs with them
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        for key, scaler in (("scaler_g", self.scaler_g), ("scaler_d", self.scaler_d)):
            if state.get(key):  # a state without fp16 (or from before it) leaves the scaler fresh
                scaler.load_state_dict(state[key])
        self.cur_nimg, self.tick, self.d_steps = state["cur_nimg"], state["tick"], state["d_steps"]
        self.order, self.position = state["data"]["order"], state["data"]["position"]
        if len(self.order) != len(self.data):
            raise ConfigError(f"resume: the checkpoint's data had {len(self.order)} images, this data has "
                              f"{len(self.data)}")
        checkpoint.set_rng_state(state["rng"])
        self.rng.set_state(state["sample_rng"])
        if self.cfg.ada_target > 0:  # ADA's probability where it had moved to (without ADA: this run's augment_p)
            self.loss.augment_p = float(state["augment"]["p"])
            self.ada_r = [float(r) for r in state["augment"].get("ada_r", [])]

    def state_path(self, run_dir: Path) -> Path:
        """Where `save` writes the training state of the current image count."""
        return run_dir / checkpoint.state_name(self.cur_nimg)

    def save(self, run_dir: Path, *, keep_states: int = 2) -> Path:
        """A network snapshot and a training state (the newest `keep_states` kept); returns the training state."""
        snapshot = run_dir / checkpoint.snapshot_name(self.cur_nimg)
        classes = {"classes": self.data.classes} if self.cfg.cond and self.data.classes else {}
        checkpoint.save_snapshot(snapshot, self.cfg, {"G_ema": self.G_ema, "G": self.G, "D": self.D},
                                 {"cur_nimg": self.cur_nimg, "tick": self.tick, **classes})
        state = self.state_path(run_dir)
        checkpoint.save_training_state(state, self.state())
        checkpoint.prune_training_states(run_dir, keep_states)
        return state

    def rollback(self, state: dict[str, Any], lr_factor: float) -> None:
        """Return to a good training state with both learning rates multiplied by lr_factor."""
        self.cfg = self.loss.cfg = self.cfg.replace(g_lr=self.cfg.g_lr * lr_factor, d_lr=self.cfg.d_lr * lr_factor)
        self.load_state(state)
