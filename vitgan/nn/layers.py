"""Small layers of the ViTGAN generator: self-modulated LayerNorm, Fourier features, modulated linear layers."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SLN(nn.Module):
    """Self-modulated LayerNorm (paper, Eq. 6): SLN(h, w) = gamma(w) * (h - mu) / sigma + beta(w).

    gamma and beta are affine in w (one linear layer each, per SLN; `equalized`: with StyleGAN's equalised learning
    rate, as the authors' code), broadcast over the tokens.
    gamma(w) starts at 1 + O(`init_scale`), beta(w) at O(`init_scale`): with the default scale the modulation moves
    the activations by a unit amount, so the generator's output depends on z from the first step (SPEC.md: a
    generator that barely uses z collapses to one mode).
    """

    def __init__(self, dim: int, w_dim: int, *, eps: float = 1e-5, init_scale: float = 1.0,
                 equalized: bool = False) -> None:
        super().__init__()
        self.eps = eps
        if equalized:  # the same function at initialisation; Adam's steps relative to the weights ~sqrt(w_dim) smaller
            self.gamma: nn.Module = EqualizedLinear(w_dim, dim, lr_mul=1.0, init_scale=init_scale)
            self.beta: nn.Module = EqualizedLinear(w_dim, dim, lr_mul=1.0, init_scale=init_scale)
        else:
            self.gamma = nn.Linear(w_dim, dim)
            self.beta = nn.Linear(w_dim, dim)
            for layer in (self.gamma, self.beta):
                nn.init.normal_(layer.weight, std=init_scale / math.sqrt(w_dim))
        with torch.no_grad():
            self.gamma.bias.fill_(1.0)
            self.beta.bias.zero_()

    def forward(self, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:  # h (B, N, dim), w (B, w_dim)
        normed = F.layer_norm(h, h.shape[-1:], eps=self.eps)
        return self.gamma(w).unsqueeze(1) * normed + self.beta(w).unsqueeze(1)


class LayerNormIgnoringW(nn.LayerNorm):
    """Plain LayerNorm with the SLN call signature (generator designs A and B, which do not modulate)."""

    def forward(self, h: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(h)


class FourierFeatures(nn.Module):
    """Learned Fourier features sin(Linear(coords)): coordinates (..., in_features) in [-1, 1] -> (..., out_features).

    Frequencies start as N(0, `scale`^2 * pi^2) and phases as U(-pi, pi), so a grid on [-1, 1] sees a spread of
    frequencies of up to a few periods; both are learned.
    """

    def __init__(self, in_features: int, out_features: int, *, scale: float = 1.0) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        nn.init.normal_(self.linear.weight, std=scale * math.pi)
        nn.init.uniform_(self.linear.bias, -math.pi, math.pi)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.linear(coords))


class EqualizedLinear(nn.Module):
    """Linear layer with an equalised learning rate and a learning-rate multiplier (StyleGAN's mapping network).

    The stored weight is N(0, 1/lr_mul^2) and is scaled at run time by lr_mul / sqrt(in_features), so Adam's
    effective step on the used weight is lr * lr_mul.
    """

    def __init__(self, in_features: int, out_features: int, *, lr_mul: float = 1.0, init_scale: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) * init_scale / lr_mul)
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)


def grid_coordinates(side: int, *, device: torch.device | None = None) -> torch.Tensor:
    """Centres of a side x side grid of cells in [-1, 1], row-major: (side*side, 2) as (y, x)."""
    axis = (torch.arange(side, device=device, dtype=torch.float32) + 0.5) / side * 2 - 1
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([yy.reshape(-1), xx.reshape(-1)], dim=-1)


class ModulatedLinear(nn.Module):
    """A linear layer whose weight is modulated per token by a style vector (StyleGAN2 / CIPS weight modulation).

    For a token with style s = A(e) (one scale per input feature), the token's weight is W'[o, i] = W[o, i] * s[i],
    demodulated (optionally) to W''[o, i] = W'[o, i] / sqrt(sum_i W'[o, i]^2 + eps). Applied to the N inputs that
    belong to that token. Computed as batched matrix products (scale the inputs by s, multiply by the shared W,
    scale the outputs by the demodulation factor); no per-token weight is ever materialised.
    """

    def __init__(self, in_features: int, out_features: int, style_dim: int, *, demodulate: bool = True,
                 eps: float = 1e-8) -> None:
        super().__init__()
        self.demodulate = demodulate
        self.eps = eps
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / math.sqrt(in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.affine = nn.Linear(style_dim, in_features)
        nn.init.constant_(self.affine.bias, 1.0)  # styles start near 1: the layer starts as a plain linear layer

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        # x (B, L, N, in): N inputs for each of L tokens; style (B, L, style_dim) -> (B, L, N, out)
        s = self.affine(style)  # (B, L, in)
        out = (x * s.unsqueeze(2)) @ self.weight.t()  # (B, L, N, out)
        if self.demodulate:
            demod = torch.rsqrt(s.square() @ self.weight.square().t() + self.eps)  # (B, L, out)
            out = out * demod.unsqueeze(2)
        return out + self.bias


class MinibatchStd(nn.Module):
    """Appends one feature map: the standard deviation across a group of samples, averaged over features and pixels.

    Groups are G consecutive samples (i and j share one when i // G = j // G), G the largest divisor of the batch
    not above `group_size`. (StyleGAN2 groups i = j mod B / G instead; consecutive groups make a data-parallel rank
    whose share of the batch is a multiple of G compute exactly what one process with the whole batch does.) With
    `segments` = S, the batch is S batches of B / S consecutive samples and G divides B / S, so that no group
    spans two of them: the same as S separate calls (D sees reals and fakes in one forward).
    """

    def __init__(self, group_size: int) -> None:  # the Config's d_mbstd_group (StyleGAN2: 4)
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor, segments: int = 1) -> torch.Tensor:
        n, c, h, w = x.shape
        if n % segments:
            raise ValueError(f"segments: {segments} do not divide the batch of {n}")
        g = min(self.group_size, n // segments)
        while (n // segments) % g:
            g -= 1
        y = x.reshape(n // g, g, c, h, w)
        y = (y.var(dim=1, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (n // g,)
        y = y.repeat_interleave(g).reshape(n, 1, 1, 1).expand(n, 1, h, w)
        return torch.cat([x, y], dim=1)
