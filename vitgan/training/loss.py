"""GAN losses and regularisers: non-saturating logistic loss, balanced consistency regularisation, R1."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """D's logistic loss: E[softplus(D(fake))] + E[softplus(-D(real))] = -E[log s(D(x))] - E[log(1 - s(D(G(z))))]."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """G's non-saturating loss: E[softplus(-D(G(z)))] = -E[log s(D(G(z)))]."""
    return F.softplus(-fake_logits).mean()


def consistency_penalty(logits: torch.Tensor, transformed_logits: torch.Tensor) -> torch.Tensor:
    """bCR term (Zhao et al. 2021): E[(D(x) - D(T(x)))^2], for real x and, separately, for fake x."""
    return (logits - transformed_logits).square().mean()


def r1_penalty(real_images: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): E[||grad_x D(x)||^2] on real images; multiply by gamma / 2 for the loss.

    `real_images` must require grad and `real_logits` be computed from them in fp32.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.square().sum(dim=(1, 2, 3)).mean()
