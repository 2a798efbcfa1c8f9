"""The ViTGAN generator (paper, Section 3.2, design C) and its baselines A and B, convolution-free."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vitgan.config import Config
from vitgan.nn import (
    SLN,
    Attention,
    EqualizedLinear,
    FourierFeatures,
    LayerNormIgnoringW,
    ModulatedLinear,
    check_labels,
)
from vitgan.nn.layers import grid_coordinates

_LRELU_GAIN = math.sqrt(2.0)  # keeps the activations' second moment through leaky ReLU(0.2)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * _LRELU_GAIN


def _normalize(x: torch.Tensor) -> torch.Tensor:
    """x scaled to unit second moment per row."""
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class MappingNetwork(nn.Module):
    """w = MLP(z): z normalised to unit second moment, then `num_layers` equalised-lr layers with leaky ReLU.

    Conditional (`classes` > 0, as StyleGAN2-ADA's): the one-hot label c is embedded by an equalised-lr linear layer
    to w_dim features, normalised likewise, and concatenated with the normalised z before the first layer."""

    def __init__(self, z_dim: int, w_dim: int, num_layers: int, *, lr_mul: float, classes: int = 0) -> None:
        super().__init__()
        self.classes = classes
        self.embed = EqualizedLinear(classes, w_dim) if classes else None
        dims = [z_dim + (w_dim if classes else 0)] + [w_dim] * num_layers
        pairs = zip(dims[:-1], dims[1:], strict=True)
        self.layers = nn.ModuleList(EqualizedLinear(a, b, lr_mul=lr_mul) for a, b in pairs)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        x = _normalize(z)
        if self.embed is not None:
            x = torch.cat([x, _normalize(self.embed(F.one_hot(c, self.classes).to(z.dtype)))], dim=1)
        for layer in self.layers:
            x = _lrelu(layer(x))
        return x


def _mlp(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class GeneratorBlock(nn.Module):
    """Transformer block; norm = SLN (design C) or LayerNorm (A, B).

    `pre` (the paper's Eq. 5): h += Attn(norm1(h, w)); h += MLP(norm2(h, w)), the residual stream bypassing the norms.
    `stream` (the authors' code): h = norm1(h, w); h += Attn(h); h = norm2(h, w); h += MLP(h), the residual stream
    itself normalised and modulated by w before each branch.
    """

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, w_dim: int, *, modulated: bool,
                 norm_position: str = "pre", sln_equalized: bool = False) -> None:
        super().__init__()
        self.norm_position = norm_position
        self.norm1 = SLN(dim, w_dim, equalized=sln_equalized) if modulated else LayerNormIgnoringW(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = SLN(dim, w_dim, equalized=sln_equalized) if modulated else LayerNormIgnoringW(dim)
        self.mlp = _mlp(dim, mlp_dim)

    def forward(self, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.norm_position == "stream":
            h = self.norm1(h, w)
            h = h + self.attn(h)
            h = self.norm2(h, w)
            return h + self.mlp(h)
        h = h + self.attn(self.norm1(h, w))
        return h + self.mlp(self.norm2(h, w))


class INRHead(nn.Module):
    """Implicit-neural-representation patch decoder (paper, Section 3.2).

    Each pixel of a patch is decoded from E_fou = sin(Linear(its coordinates inside the patch, in [-1, 1])) by a
    2-layer MLP whose weights are modulated by that patch's output embedding: a demodulated modulated layer
    (fourier_dim -> hidden), leaky ReLU, and a modulated output layer (hidden -> channels).
    """

    def __init__(self, dim: int, patch: int, channels: int, *, fourier_dim: int, hidden: int) -> None:
        super().__init__()
        self.fourier = FourierFeatures(2, fourier_dim)
        self.register_buffer("pixel_coords", grid_coordinates(patch), persistent=False)  # (P*P, 2)
        self.hidden = ModulatedLinear(fourier_dim, hidden, dim, demodulate=True)
        self.out = ModulatedLinear(hidden, channels, dim, demodulate=False)

    def forward(self, e: torch.Tensor) -> torch.Tensor:  # e (B, L, dim) -> (B, L, P*P, channels)
        features = self.fourier(self.pixel_coords)  # (P*P, fourier_dim), the same for every patch
        x = features.expand(e.shape[0], e.shape[1], *features.shape)  # (B, L, P*P, fourier_dim)
        return self.out(_lrelu(self.hidden(x, e)), e)


class LinearHead(nn.Module):
    """Ablation: each patch's pixels as one linear projection of its embedding (B, L, dim) -> (B, L, P*P, C)."""

    def __init__(self, dim: int, patch: int, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.linear = nn.Linear(dim, patch * patch * channels)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return rearrange(self.linear(e), "b l (p c) -> b l p c", c=self.channels)


class Generator(nn.Module):
    """ViTGAN generator: z -> w (mapping) -> transformer over Fourier positional tokens -> INR patches -> image.

    `G(z)` takes z of shape (B, G.z_dim) (and `G(z, c)`, with `cond`, class labels c (B,) int64) and returns images
    (B, C, H, W): in [-1, 1] with `g_output` tanh,
    unbounded with `g_output` linear (every preset's; vitgan's image writers clamp them to [-1, 1] when they
    quantise, vitgan/images.py).
    The input tokens are the learned Fourier positional embeddings sin(Linear(patch coordinates)), not z;
    w enters through SLN (design C), by addition to every token (A), or as a prepended token (B).
    """

    def __init__(self, cfg: Config, *, w_avg_beta: float = 0.995) -> None:
        super().__init__()
        self.cfg = cfg
        self.z_dim = cfg.z_dim
        self.w_avg_beta = w_avg_beta
        self.grid = cfg.resolution // cfg.g_patch
        self.cond = cfg.cond  # classes (0: unconditional)
        self.classes: list[str] | None = None  # the class names, where the data had them (set by whoever loads it)
        self.mapping = MappingNetwork(cfg.z_dim, cfg.w_dim, cfg.mapping_layers, lr_mul=cfg.mapping_lr_mul,
                                      classes=cfg.cond)
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))  # running mean of w, for the truncation trick
        self.register_buffer("patch_coords", grid_coordinates(self.grid), persistent=False)  # (L, 2)
        self.pos = FourierFeatures(2, cfg.g_dim)
        modulated = cfg.g_design == "C"
        self.w_to_token = None if modulated else nn.Linear(cfg.w_dim, cfg.g_dim)
        self.blocks = nn.ModuleList(
            GeneratorBlock(cfg.g_dim, cfg.g_heads, cfg.g_mlp_dim, cfg.w_dim, modulated=modulated,
                           norm_position=cfg.g_norm_position, sln_equalized=cfg.g_sln_equalized)
            for _ in range(cfg.g_depth)
        )
        self.norm_out = (SLN(cfg.g_dim, cfg.w_dim, equalized=cfg.g_sln_equalized) if modulated
                         else LayerNormIgnoringW(cfg.g_dim))
        if cfg.g_head == "inr":
            self.head = INRHead(cfg.g_dim, cfg.g_patch, cfg.channels, fourier_dim=cfg.g_fourier_dim,
                                hidden=cfg.g_inr_hidden)
        else:
            self.head = LinearHead(cfg.g_dim, cfg.g_patch, cfg.channels)
        for block in self.blocks:  # attention and MLP layers; SLN keeps its own init (gamma(w) starts at 1)
            for module in (*block.attn.modules(), *block.mlp.modules()):
                if isinstance(module, nn.Linear):
                    nn.init.xavier_uniform_(module.weight)
                    nn.init.zeros_(module.bias)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, psi: float = 1.0) -> torch.Tensor:
        return self.synthesis(self.map(z, c, psi))

    def map(self, z: torch.Tensor, c: torch.Tensor | None = None, psi: float = 1.0) -> torch.Tensor:
        """z (B, z_dim) and, for a conditional G, class labels c (B,) -> w (B, w_dim), truncated towards w_avg by psi
        (the mean w over all classes, as StyleGAN2-ADA's); tracks w_avg in training mode."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z: expected shape (B, {self.z_dim}), got {tuple(z.shape)}")
        check_labels(c, self.cond, z.shape[0])
        w = self.mapping(z, c)
        if self.training:
            self.w_avg.copy_(w.detach().float().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if psi != 1.0:
            w = self.w_avg.lerp(w.float(), psi)  # truncation trick: w_avg + psi * (w - w_avg)
        return w

    def synthesis(self, w: torch.Tensor) -> torch.Tensor:  # w (B, w_dim) -> images (B, C, H, W)
        h = self.pos(self.patch_coords).expand(w.shape[0], -1, -1)  # (B, L, dim): E_pos, the same for every image
        design = self.cfg.g_design
        if design == "A":
            h = h + self.w_to_token(w).unsqueeze(1)
        elif design == "B":
            h = torch.cat([self.w_to_token(w).unsqueeze(1), h], dim=1)  # (B, 1 + L, dim)
        for block in self.blocks:
            h = block(h, w)
        h = self.norm_out(h, w)
        if design == "B":
            h = h[:, 1:]
        patches = self.head(h)  # (B, L, P*P, C)
        image = rearrange(patches, "b (gh gw) (ph pw) c -> b c (gh ph) (gw pw)", gh=self.grid, ph=self.cfg.g_patch)
        return torch.tanh(image) if self.cfg.g_output == "tanh" else image
