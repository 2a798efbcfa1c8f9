"""The training objective: its formulas (non-saturating logistic loss, balanced consistency regularisation, R1) and
`ViTGANLoss`, which combines them for each phase of a training step."""

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


def consistency_penalty(logits: torch.Tensor, transformed_logits: torch.Tensor) -> torch.Tensor:
    """bCR term (Zhao et al. 2021): E[(D(x) - D(T(x)))^2], for real x and, separately, for fake x."""
    return (logits - transformed_logits).square().mean()


def r1_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real_images: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): E[||grad_x D(x)||^2] over D's inputs x, on real images, D = `critic`; multiply by
    gamma / 2 for the loss. A D input is one image, or with PacGAN (`d_pack`) one pack of images with one logit,
    whose gradient's squared norm sums over the pack's images.

    The input gradient is taken with torch.func.grad of the summed logits (each image's gradient of the sum is its
    own logit's, and a minibatch-std layer's cross terms are kept as autograd.grad would), so that the whole penalty,
    its gradient with respect to D's weights included, can go through torch.compile, which does not compile
    torch.autograd.grad(create_graph=True).
    """
    def summed(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = critic(x).float()
        return logits.sum(), logits

    grad, logits = torch.func.grad(summed, has_aux=True)(real_images.detach().float())
    return grad.square().sum() / logits.numel()


# The loss terms, in the order a step computes them: the one list the status line, the plots and the finiteness check
# read. Each is the weighted contribution to its network's total (D: the first four, G: the last).
D_TERMS = ("loss_d", "bcr_real", "bcr_fake", "r1")
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

    - `Dmain`: D's logistic loss on DiffAugment'ed reals and fakes, `softplus(D(fake)) + softplus(-D(real))`, plus
      balanced consistency regularisation `bcr_real * E[(D(x) - D(T(x)))^2]` on the reals and the same with
      `bcr_fake` on the fakes, T the Config's `bcr_mode` (`transform(plain, augmented)`);
    - `Dboth`: `Dmain` plus R1, `gamma / 2 * interval * E[||grad_x D(x)||^2]` on the same augmented reals (one
      backward pass; lazy: the Trainer asks for it every `r1_interval` D steps, hence the interval in its weight), in
      fp32 outside autocast (compiled with its double backward when the Trainer compiles: see r1_penalty);
    - `Gmain`: G's non-saturating loss `softplus(-D(aug(G(z))))`.

    Each D phase reports every D term (0 where off), so that a tick's mean of a term is its contribution per step.
    `draws()` gives the random numbers of one round (a `Draws`); augmentations take theirs from it in a fixed order
    (reals, fakes, then T of reals, T of fakes), so the same seed gives the same training.
    """

    def __init__(self, cfg: Config, G: nn.Module, D: nn.Module, *, draws: Callable[[], Draws],
                 G_run: nn.Module | None = None, D_run: nn.Module | None = None,
                 R1_run: Callable[[torch.Tensor], torch.Tensor] | None = None,
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

    def _logits(self, batches: list[torch.Tensor]) -> list[torch.Tensor]:
        """D's fp32 logits for several batches of one size in one forward; a D whose samples interact (minibatch
        std: `mixes_samples`) is told they are separate batches (`segments`). A D of unknown kind: one call each."""
        mixes = getattr(self.D, "mixes_samples", None)
        if mixes is None or len({len(x) for x in batches}) > 1:
            return [self.D_run(x).float() for x in batches]
        x = torch.cat(batches)
        logits = self.D_run(x, segments=len(batches)) if mixes else self.D_run(x)
        return list(logits.float().chunk(len(batches)))  # a D with packs has len(b) / d_pack logits per batch

    def r1(self, real_aug: torch.Tensor) -> torch.Tensor:
        """The weighted R1 term on (augmented) reals, in fp32 outside autocast, through `R1_run` (r1_penalty of the
        plain D, or its torch.compile'd form). Its gradient is a double backward, which the fused attention kernels
        (flash, memory-efficient; used off the CPU) do not have: D's attention runs on SDPA's math backend here."""
        with sdpa_kernel(SDPBackend.MATH):
            return self.R1_run(real_aug) * (self.cfg.r1_gamma / 2 * self.cfg.r1_interval)

    def __call__(self, phase: Phase, *, z: torch.Tensor | None = None, reals: torch.Tensor | None = None
                 ) -> PhaseLoss:
        """The loss of `phase` on this round's latents `z` and, for D's phases, real images `reals`."""
        if phase == "Gmain" and z is not None:
            with self.autocast():
                loss_g = g_nonsaturating_loss(self.D_run(self.augment(self.G_run(z))).float())
            return PhaseLoss(loss_g, {"loss_g": loss_g}, {})
        if phase not in PHASES or z is None or reals is None:
            raise ValueError(f"phase {phase!r}: expected one of {', '.join(PHASES)} with z, and reals for D's phases")
        terms = dict.fromkeys(D_TERMS, torch.zeros((), device=reals.device))
        total, real_aug, stats = self._d_main(reals, z, terms)
        if phase == "Dboth":
            terms["r1"] = self.r1(real_aug)
            total = total + terms["r1"]
        return PhaseLoss(total, terms, stats)

    def _d_main(self, reals: torch.Tensor, z: torch.Tensor, terms: dict[str, torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """D's logistic loss and bCR terms (written into `terms`): (their total, the augmented reals, D's mean
        logits and the mean sign of its real logits, ADA's overfitting measure r)."""
        cfg = self.cfg
        with torch.no_grad(), self.autocast():
            fakes = self.G_run(z).float()
        with self.autocast():
            real_aug, fake_aug = self.augment(reals), self.augment(fakes)
            plain, augmented = (reals, fakes), (real_aug, fake_aug)
            weighted = [(name, w, i) for i, (name, w) in enumerate((("bcr_real", cfg.bcr_real),
                                                                     ("bcr_fake", cfg.bcr_fake))) if w > 0]
            logits = self._logits([real_aug, fake_aug, *(self.transform(plain[i], augmented[i])
                                                         for _, _, i in weighted)])
            terms["loss_d"] = d_logistic_loss(logits[0], logits[1])
            bcr = torch.zeros((), device=reals.device)
            for (name, weight, i), transformed in zip(weighted, logits[2:], strict=True):
                terms[name] = weight * consistency_penalty(logits[i], transformed)
                bcr = bcr + terms[name]
        stats = {"logits_real": logits[0].mean(), "logits_fake": logits[1].mean(), "real_sign": logits[0].sign().mean()}
        return terms["loss_d"] + bcr, real_aug, stats
