"""The training objective: its formulas (the non-saturating logistic loss, the relativistic pairing loss, balanced
consistency regularisation, R1 and R2) and `ViTGANLoss`, which combines them for each phase of a training step."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from vitgan.config import Config
from vitgan.training.augment import Draws, diff_augment, translation


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """D's logistic loss: E[softplus(D(fake))] + E[softplus(-D(real))] = -E[log s(D(x))] - E[log(1 - s(D(G(z))))]."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """G's non-saturating loss: E[softplus(-D(G(z)))] = -E[log s(D(G(z)))]."""
    return F.softplus(-fake_logits).mean()


def d_relativistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """D's relativistic pairing loss (RpGAN; Jolicoeur-Martineau 2019, R3GAN's Eq. 2): E[softplus(-(D(x_r) - D(x_f)))]
    over the pairs (real_logits[i], fake_logits[i])."""
    return F.softplus(fake_logits - real_logits).mean()


def g_relativistic_loss(fake_logits: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """G's relativistic pairing loss: E[softplus(-(D(x_f) - D(x_r)))] over the pairs (fake_logits[i],
    real_logits[i])."""
    return F.softplus(real_logits - fake_logits).mean()


def consistency_penalty(logits: torch.Tensor, transformed_logits: torch.Tensor) -> torch.Tensor:
    """bCR term (Zhao et al. 2021): E[(D(x) - D(T(x)))^2], for real x and, separately, for fake x."""
    return (logits - transformed_logits).square().mean()


def r1_penalty(critic: Callable[..., torch.Tensor], real_images: torch.Tensor, labels: torch.Tensor | None = None
               ) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): E[||grad_x D(x)||^2] over D's inputs x, on real images, D = `critic`; multiply by
    gamma / 2 for the loss. R2 is the same penalty on (detached) fake images. A D input is one image, or with PacGAN
    (`d_pack`) one pack of images with one logit, whose gradient's squared norm sums over the pack's images. A
    conditional D is given each image's own label (`labels`), held fixed.

    The input gradient is taken with torch.func.grad of the summed logits (each image's gradient of the sum is its
    own logit's, and a minibatch-std layer's cross terms are kept as autograd.grad would), so that the whole penalty,
    its gradient with respect to D's weights included, can go through torch.compile, which does not compile
    torch.autograd.grad(create_graph=True).
    """
    def summed(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = (critic(x) if labels is None else critic(x, labels)).float()
        return logits.sum(), logits

    grad, logits = torch.func.grad(summed, has_aux=True)(real_images.detach().float())
    return grad.square().sum() / logits.numel()


# How far the compiled R1 may be from the eager one (R1Check), both fp32, the compiled form's fused kernels summing in
# another order. Measured on a CPU (tests/test_compile.py): on the tests' tiny config the penalty 7e-7 apart and the
# D-weight gradients 3e-6 in R1Check's measure; on the mnist preset's D and real augmented digits 1.4e-6 and 1.0e-5.
# The measure is per weight tensor, against the larger of the tensor's own size and R1_GRAD_FLOOR of the whole
# gradient's: some gradients are 0 in exact arithmetic (the L2 attention's shared q/k bias, which cancels, and the
# last LayerNorm's bias) and hold rounding noise in both forms. pytorch#136662's silently wrong results are off by
# a factor (2 in its reproducer), far beyond 1e-2.
R1_RTOL = 1e-2
R1_GRAD_FLOOR = 1e-2


class R1Check(NamedTuple):
    """Compiled R1 against eager R1 on one D and batch (`check_compiled_r1`): the penalty's relative difference, and
    its gradient's with respect to D's weights: the largest over D's weight tensors of max |compiled - eager| over the
    larger of max |eager| of that tensor and R1_GRAD_FLOOR times that of the largest tensor."""

    value: float
    grad: float
    rtol: float = R1_RTOL

    @property
    def ok(self) -> bool:
        return self.value <= self.rtol and self.grad <= self.rtol  # False for NaN too

    def __str__(self) -> str:
        return f"value {self.value:.1e}, D-weight gradient {self.grad:.1e} (relative; tolerance {self.rtol:g})"


def check_compiled_r1(D: nn.Module, compiled: Callable[..., torch.Tensor], real_images: torch.Tensor,
                      labels: torch.Tensor | None = None, *, rtol: float = R1_RTOL) -> R1Check:
    """R1's penalty and its gradient with respect to D's weights through `compiled` (torch.compile of r1_penalty on
    D: torch.func.grad inside torch.compile, open upstream as silently wrong, pytorch#136662) against the eager
    r1_penalty, both from D's present state on `real_images`, on SDPA's math backend as ViTGANLoss.r1 runs them.

    Leaves no trace: D's buffers that moved (ISN's power-iteration vectors, which each training-mode forward moves)
    are put back, the weights' `.grad` is untouched (torch.autograd.grad) and the global random streams are
    restored, so a training run that calls it goes on exactly as one that does not."""
    params = [p for p in D.parameters() if p.requires_grad]
    if not params:
        raise ValueError("check_compiled_r1: none of D's weights requires grad (as in D's step, it must)")
    with torch.no_grad():
        saved = [b.clone() for b in D.buffers()]
    devices = [real_images.device] if real_images.device.type == "cuda" else []

    def run(r1: Callable[..., torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        value = r1(real_images, labels)
        grads = torch.autograd.grad(value, params, allow_unused=True)
        with torch.no_grad():  # only those that moved: a copy would bump the version of one the pending backward
            for buffer, before in zip(D.buffers(), saved, strict=True):  # of D's main loss saved (ISN's scale)
                if not torch.equal(buffer, before):
                    buffer.copy_(before)
        return value.detach(), [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]

    with torch.random.fork_rng(devices=devices), sdpa_kernel(SDPBackend.MATH):
        eager_value, eager_grads = run(functools.partial(r1_penalty, D))
        value, grads = run(compiled)
    tiny = torch.finfo(torch.float32).tiny  # 0 against 0 is no difference
    scale = max((g.abs().max() for g in eager_grads), default=torch.zeros(()))
    grad_error = max((((g - e).abs().max() / torch.maximum(e.abs().max(), R1_GRAD_FLOOR * scale).clamp_min(tiny))
                      .nan_to_num(float("inf")) for g, e in zip(grads, eager_grads, strict=True)),
                     default=torch.zeros(()))
    value_error = ((value - eager_value).abs() / eager_value.abs().clamp_min(tiny)).nan_to_num(float("inf"))
    return R1Check(float(value_error), float(grad_error), rtol)


class CheckedR1:
    """The compiled R1 that checks itself once: its first call (a training run's first R1 step, on its real batch)
    compares it with the eager R1 (`check_compiled_r1`); where they differ beyond the tolerance on any rank (`agree`
    makes every rank's answer the same), it says so through `log` and runs the eager r1_penalty from then on. The
    check leaves D, its gradients and the random streams as they were, so the training itself does not change."""

    def __init__(self, D: nn.Module, compiled: Callable[..., torch.Tensor], *,
                 log: Callable[[str], None], agree: Callable[[bool], bool] = bool, rtol: float = R1_RTOL) -> None:
        self.D, self.compiled, self.log, self.agree, self.rtol = D, compiled, log, agree, rtol
        self.eager = functools.partial(r1_penalty, D)
        self.result: R1Check | None = None  # the check's, once made
        self.use_eager = False

    def __call__(self, real_images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.result is None:
            self.result = check_compiled_r1(self.D, self.compiled, real_images, labels, rtol=self.rtol)
            self.use_eager = self.agree(not self.result.ok)
            if self.use_eager:
                where = "another rank's" if self.result.ok else "this rank's"
                self.log(f"R1: the compiled penalty differs from the eager one on {where} first R1 batch (here: "
                         f"{self.result}): torch.func.grad inside torch.compile can be silently wrong "
                         "(pytorch/pytorch#136662); R1 runs eager from now on")
        return (self.eager if self.use_eager else self.compiled)(real_images, labels)


# The loss terms, in the order a step computes them: the one list the status line, the plots and the finiteness check
# read. Each is the weighted contribution to its network's total (D: the first five, G: the last).
D_TERMS = ("loss_d", "bcr_real", "bcr_fake", "r1", "r2")
G_TERMS = ("loss_g",)
TERMS = D_TERMS + G_TERMS

Phase = Literal["Dmain", "Dboth", "Gmain"]
PHASES: tuple[Phase, ...] = ("Dmain", "Dboth", "Gmain")


class PhaseLoss(NamedTuple):
    """What one phase of the objective gives: the total to differentiate, its named terms (they sum to the total)
    and other observations (D's mean logits)."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]
    stats: dict[str, torch.Tensor]


class ViTGANLoss:
    """ViTGAN's objective (as StyleGAN2-ADA's `StyleGAN2Loss`): given the networks, one round's batch and a phase, the
    total loss and its named terms.

    - `Dmain`: D's adversarial loss on DiffAugment'ed reals and fakes (`gan_loss` ns: the logistic loss
      `softplus(D(fake)) + softplus(-D(real))`; rpgan: `softplus(-(D(real_i) - D(fake_i)))`), plus balanced
      consistency regularisation `bcr_real * E[(D(x) - D(T(x)))^2]` on the reals and the same with `bcr_fake` on the
      fakes, T the Config's `bcr_mode` (`transform(plain, augmented)`);
    - `Dboth`: `Dmain` plus R1, `r1_gamma / 2 * interval * E[||grad_x D(x)||^2]` on the same augmented reals, and R2,
      the same with `r2_gamma` on the same augmented fakes (one backward pass; lazy: the Trainer asks for it every
      `r1_interval` D steps, hence the interval in the weights), in fp32 outside autocast (compiled with its double
      backward when the Trainer compiles: see r1_penalty);
    - `Gmain`: G's loss, ns: `softplus(-D(aug(G(z))))`; rpgan: `softplus(-(D(aug(G(z))_i) - D(aug(real_i))))`, the
      reals those of the round's last D step (D frozen: its logits on them are constants for G).

    RpGAN pairs D's logits by position: image i of a round's augmented reals with image i of its fakes (with PacGAN's
    `d_pack`, pack i with pack i; a round holds whole packs, so the counts match). The reals and fakes go through D
    as separate batches of one forward (`_logits`), so a minibatch-std feature is over reals alone and over fakes
    alone, as under ns; bCR compares each image with its own transform, whatever the loss.

    Each D phase reports every D term (0 where off), so that a tick's mean of a term is its contribution per step.
    `draws()` gives the random numbers of one round (a `Draws`); augmentations take theirs from it in a fixed order
    (reals, fakes, then T of reals, T of fakes), so the same seed gives the same training.
    """

    def __init__(self, cfg: Config, G: nn.Module, D: nn.Module, *, draws: Callable[[], Draws],
                 G_run: nn.Module | None = None, D_run: nn.Module | None = None,
                 R1_run: Callable[..., torch.Tensor] | None = None,
                 autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                 transform: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> None:
        self.cfg, self.G, self.D, self.draws, self.autocast = cfg, G, D, draws, autocast
        # what the main phases call: torch.compile'd forms, if any (no `or`: a compiled module has no truth value)
        self.G_run = G if G_run is None else G_run
        self.D_run = D if D_run is None else D_run
        self.R1_run = functools.partial(r1_penalty, D) if R1_run is None else R1_run  # E||grad_x D(x)||^2
        self.transform = transform or self.bcr_transform
        self.augment_p = cfg.augment_p  # the probability of the policy's ops without their own (ADA moves it)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """DiffAugment of one round's images, with the Config's policy and fill and the probability `augment_p`."""
        return diff_augment(x, self.cfg.augment, self.augment_p, self.draws(), fill=self.cfg.augment_fill)

    def bcr_transform(self, plain: torch.Tensor, augmented: torch.Tensor) -> torch.Tensor:
        """bCR's T: `shift` translates D's augmented input (by up to bcr_shift of the image); `diffaug` is an
        independent DiffAugment draw of the plain images."""
        if self.cfg.bcr_mode == "diffaug":
            return self.augment(plain)
        return translation(augmented, self.draws(), ratio=self.cfg.bcr_shift, fill=self.cfg.augment_fill)

    def _logits(self, batches: list[torch.Tensor], labels: list[torch.Tensor | None] | None = None
                ) -> list[torch.Tensor]:
        """D's fp32 logits for several batches of one size in one forward, a conditional D given each batch's labels
        (`labels`, one per batch, or None); a D whose samples interact (minibatch std: `mixes_samples`) is told
        they are separate batches (`segments`). A D of unknown kind: one call each."""
        labels = labels or [None] * len(batches)
        mixes = getattr(self.D, "mixes_samples", None)
        if mixes is None or len({len(x) for x in batches}) > 1:
            return [self._critic(x, c).float() for x, c in zip(batches, labels, strict=True)]
        x = torch.cat(batches)
        c = {"c": torch.cat(labels)} if self.cfg.cond else {}
        logits = self.D_run(x, segments=len(batches), **c) if mixes else self.D_run(x, **c)
        return list(logits.float().chunk(len(batches)))  # a D with packs has len(b) / d_pack logits per batch

    def penalty(self, images: torch.Tensor, gamma: float, labels: torch.Tensor | None = None) -> torch.Tensor:
        """A weighted zero-centred gradient penalty, `gamma / 2 * r1_interval * E||grad_x D(x)||^2`, on D's
        (augmented) inputs `images` (a conditional D given their `labels`): R1 on reals, R2 on fakes. In fp32
        outside autocast, through `R1_run` (r1_penalty of the plain D, or its torch.compile'd form). Its gradient is
        a double backward, which the fused attention kernels (flash, memory-efficient; used off the CPU) do not have:
        D's attention runs on SDPA's math backend here."""
        with sdpa_kernel(SDPBackend.MATH):
            return self.R1_run(images, labels) * (gamma / 2 * self.cfg.r1_interval)

    def __call__(self, phase: Phase, *, z: torch.Tensor | None = None, reals: torch.Tensor | None = None,
                 c: torch.Tensor | None = None, real_c: torch.Tensor | None = None) -> PhaseLoss:
        """The loss of `phase` on this round's latents `z` and real images `reals` (for D's phases, and for G's
        under rpgan); with `cond`, the fakes' class labels `c` and the reals' `real_c`."""
        relativistic = self.cfg.gan_loss == "rpgan"
        if phase == "Gmain" and z is not None and (reals is not None or not relativistic):
            return self._g_main(z, c, reals, real_c)
        if phase not in PHASES or z is None or reals is None:
            raise ValueError(f"phase {phase!r}: expected one of {', '.join(PHASES)} with z, and reals for D's phases "
                             "(and for Gmain under gan_loss rpgan)")
        terms = dict.fromkeys(D_TERMS, torch.zeros((), device=reals.device))
        total, (real_aug, fake_aug), stats = self._d_main(reals, z, terms, real_c, c)
        if phase == "Dboth":
            for name, images, labels, gamma in (("r1", real_aug, real_c, self.cfg.r1_gamma),
                                                ("r2", fake_aug, c, self.cfg.r2_gamma)):
                if gamma > 0:
                    terms[name] = self.penalty(images, gamma, labels)
                    total = total + terms[name]
        return PhaseLoss(total, terms, stats)

    def _fakes(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """G's images of latents z (a conditional G: of labels c)."""
        return self.G_run(z, c) if self.cfg.cond else self.G_run(z)

    def _critic(self, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """D's logits of images x (a conditional D: with their labels c)."""
        return self.D_run(x, c) if self.cfg.cond else self.D_run(x)

    def _g_main(self, z: torch.Tensor, c: torch.Tensor | None, reals: torch.Tensor | None,
                real_c: torch.Tensor | None) -> PhaseLoss:
        """G's loss on the fakes of `z` (labels `c`) (and, under rpgan, the reals `reals`, paired with them)."""
        with self.autocast():
            fakes = self._fakes(z, c)
            if self.cfg.gan_loss == "rpgan":
                real_logits, fake_logits = self._logits([self.augment(reals), self.augment(fakes)], [real_c, c])
                loss_g = g_relativistic_loss(fake_logits, real_logits)
            else:
                loss_g = g_nonsaturating_loss(self._critic(self.augment(fakes), c).float())
        return PhaseLoss(loss_g, {"loss_g": loss_g}, {})

    def _d_main(self, reals: torch.Tensor, z: torch.Tensor, terms: dict[str, torch.Tensor],
                real_c: torch.Tensor | None = None, c: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]:
        """D's adversarial loss and bCR terms (written into `terms`): (their total, the augmented reals and fakes,
        D's mean logits and the mean sign of its real logits, ADA's overfitting measure r). A transformed image keeps
        its own label."""
        cfg = self.cfg
        with torch.no_grad(), self.autocast():
            fakes = self._fakes(z, c).float()
        with self.autocast():
            real_aug, fake_aug = self.augment(reals), self.augment(fakes)
            plain, augmented, labels = (reals, fakes), (real_aug, fake_aug), (real_c, c)
            weighted = [(name, w, i) for i, (name, w) in enumerate((("bcr_real", cfg.bcr_real),
                                                                     ("bcr_fake", cfg.bcr_fake))) if w > 0]
            logits = self._logits([real_aug, fake_aug, *(self.transform(plain[i], augmented[i])
                                                         for _, _, i in weighted)],
                                  [real_c, c, *(labels[i] for _, _, i in weighted)])
            adversarial = d_relativistic_loss if cfg.gan_loss == "rpgan" else d_logistic_loss
            terms["loss_d"] = adversarial(logits[0], logits[1])
            bcr = torch.zeros((), device=reals.device)
            for (name, weight, i), transformed in zip(weighted, logits[2:], strict=True):
                terms[name] = weight * consistency_penalty(logits[i], transformed)
                bcr = bcr + terms[name]
        stats = {"logits_real": logits[0].mean(), "logits_fake": logits[1].mean(), "real_sign": logits[0].sign().mean()}
        return terms["loss_d"] + bcr, (real_aug, fake_aug), stats
