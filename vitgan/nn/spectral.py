"""Spectral normalisation of linear layers: plain SN and the paper's improved SN (ISN).

ISN (paper, Eq. 4): W_ISN = sigma(W_init) * W / sigma(W). sigma(W) is estimated by the power iteration of
`torch.nn.utils.parametrizations.spectral_norm` (its vector u is a persistent buffer, one step per forward in
training mode only); sigma(W_init) is computed exactly once, at construction, and kept as a buffer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm


class _ScaleBy(nn.Module):
    """Parametrization W -> c * W with a fixed scalar c, stored as a buffer (so checkpoints carry it)."""

    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.detach().clone().reshape(()))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.scale


class _LearnedScale(nn.Module):
    """Parametrization W -> gamma * W with a learned scalar gamma (sigma-reparam, Zhai et al. 2023)."""

    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.scale = nn.Parameter(scale.detach().clone().reshape(()))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.scale


class SNLinear(nn.Linear):
    """nn.Linear whose weight is divided by its spectral norm (Miyato et al. 2018), Xavier-uniform initialised.

    Xavier initialisation matters for ISN: the ViT default (normal, std 0.02) freezes every layer's largest singular
    value near 0.45 and caps the discriminator's logit; see SPEC.md. `init_gain` scales the Xavier bound (under ISN
    it is kept: sigma(W_init) scales with it; plain SN divides it out).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, n_power_iterations: int = 1,
                 init_gain: float = 1.0) -> None:
        super().__init__(in_features, out_features, bias)
        nn.init.xavier_uniform_(self.weight, gain=init_gain)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        spectral_norm(self, n_power_iterations=n_power_iterations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The power iteration and the normalisation stay in the master weight's precision (fp32) under autocast;
        # only the matrix product runs in the autocast dtype.
        with torch.autocast(x.device.type, enabled=False):
            weight = self.weight
        return F.linear(x, weight, self.bias)


class ISNLinear(SNLinear):
    """Improved spectral normalisation: a drop-in for nn.Linear with W_ISN = sigma(W_init) * W / sigma(W)."""

    scale_by: type[nn.Module] = _ScaleBy  # how sigma(W_init) is applied: a fixed buffer here

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, n_power_iterations: int = 1,
                 init_gain: float = 1.0) -> None:
        super().__init__(in_features, out_features, bias, n_power_iterations=n_power_iterations, init_gain=init_gain)
        raw = self.parametrizations.weight.original.detach()
        sigma_init = torch.linalg.matrix_norm(raw, ord=2)  # exact, once; the power iteration tracks sigma(W)
        parametrize.register_parametrization(self, "weight", self.scale_by(sigma_init))


class SigmaReparamLinear(ISNLinear):
    """ISN with a learned gain (sigma-reparam, Zhai et al. 2023): W_hat = gamma * W / sigma(W), gamma a learned scalar
    that starts at sigma(W_init), so the layer equals ISN at initialisation and D may then learn its own scale."""

    scale_by = _LearnedScale


class XavierLinear(nn.Linear):
    """nn.Linear with the same initialisation as the normalised layers (the `none` ablation)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, init_gain: float = 1.0) -> None:
        super().__init__(in_features, out_features, bias)
        nn.init.xavier_uniform_(self.weight, gain=init_gain)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


LinearFactory = Callable[..., nn.Linear]

_BY_NORM: dict[str, LinearFactory] = {"isn": ISNLinear, "sn": SNLinear, "sigma_reparam": SigmaReparamLinear,
                                      "none": XavierLinear}


def linear_for(norm: str) -> LinearFactory:
    """The linear-layer class for a discriminator normalisation name: `isn`, `sn`, `sigma_reparam` or `none`."""
    return _BY_NORM[norm]


@torch.no_grad()
def largest_singular_values(module: nn.Module) -> dict[str, float]:
    """The spectral norm of the weight each linear and convolution layer of `module` applies (after SN/ISN; a
    convolution's kernel as an (out, in*k*k) matrix), computed exactly. The module is read in eval mode, so the
    power-iteration vectors are left as they are."""
    was_training = module.training
    module.eval()
    try:
        return {
            name: float(torch.linalg.matrix_norm(layer.weight.detach().float().flatten(1), ord=2))
            for name, layer in module.named_modules() if isinstance(layer, (nn.Linear, nn.Conv2d))
        }
    finally:
        module.train(was_training)
