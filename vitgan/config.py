"""The one configuration object: every network size and every ablation switch is a field here.

A variant of ViTGAN is a value of `Config`, never a copy of a model. Every field is checked when a `Config` is made,
and a bad value raises `ConfigError` with a one-line message that names the field.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, Literal

from vitgan.training.augment import parse_policy


class ConfigError(ValueError):
    """A configuration value is invalid. The message is one line and starts with the field's name."""


@dataclass(frozen=True)
class Config:
    # --- images ---
    resolution: int = 32  # output side in pixels (square images)
    channels: int = 3  # 1 (grayscale) or 3 (RGB)

    # --- generator ---
    z_dim: int = 384  # latent size
    w_dim: int = 384  # mapping-network output size
    mapping_layers: int = 8  # depth of the mapping MLP z -> w
    mapping_lr_mul: float = 0.01  # learning-rate multiplier of the mapping MLP (equalised learning rate)
    g_patch: int = 4  # side of one generated patch
    g_dim: int = 384  # token width
    g_depth: int = 4  # transformer blocks
    g_heads: int = 6
    g_mlp_dim: int = 1536
    g_design: Literal["A", "B", "C"] = "C"  # A: w added to tokens, B: w prepended as a token, C: SLN (ViTGAN)
    # where each block's norm sits: `pre` on the branch inputs, the residual stream bypassing it (the paper's Eq. 5);
    # `stream` on the residual stream itself before each branch, so w modulates the stream (the authors' code)
    g_norm_position: Literal["pre", "stream"] = "pre"
    # SLN's gamma/beta layers with StyleGAN's equalised learning rate (as the authors' code): the same function at
    # initialisation, Adam's steps ~sqrt(w_dim) times smaller relative to the weights
    g_sln_equalized: bool = False
    g_head: Literal["inr", "linear"] = "inr"  # patch decoder: implicit neural representation or a linear layer
    g_output: Literal["tanh", "linear"] = "tanh"  # tanh: pixels in [-1, 1]; linear: unbounded (StyleGAN2-style)
    g_fourier_dim: int = 64  # Fourier features of the pixel coordinates inside a patch (INR head)
    g_inr_hidden: int = 128  # hidden width of the INR MLP

    # --- discriminator ---
    d_arch: Literal["vit", "cnn"] = "vit"  # "cnn": StyleGAN2-style residual D (the "ViTGAN G + CNN D" variant)
    d_patch: int = 4  # stride P of the patch grid
    d_overlap: bool = True  # overlapping patches of side P + 2*(P/2), stride P
    d_dim: int = 384
    d_depth: int = 4
    d_heads: int = 6
    d_mlp_dim: int = 1536
    d_attention: Literal["l2", "dot"] = "l2"  # L2-distance attention with tied q/k, or dot-product attention
    # improved spectral norm, plain spectral norm, ISN with a learned gain (sigma-reparam), or none
    d_norm: Literal["isn", "sn", "sigma_reparam", "none"] = "isn"
    # initial gain of D's query/key projection (its Xavier bound times this; ISN keeps it): squared distances scale
    # with its square, and at 1 tied-q/k L2 attention attends almost only to itself (the class token takes ~1% of
    # its attention from the patches), at 0.5 mostly to the other tokens
    d_qk_gain: float = 1.0
    d_head: Literal["linear", "mlp"] = "linear"  # the logit from the class token: one linear layer, or a 2-layer MLP
    d_mbstd: bool = False  # ViT D: append the minibatch standard deviation of the class token to the head's input
    d_cnn_base: int = 16384  # CNN D: channels at resolution r are min(d_cnn_max, d_cnn_base // r)
    d_cnn_max: int = 512

    # --- training (paper, Section 4: Adam (0, 0.99), lr 0.002, batch 128, bCR 10, DiffAugment, optional R1) ---
    batch: int = 128  # total batch size
    g_lr: float = 0.002
    d_lr: float = 0.002
    beta1: float = 0.0
    beta2: float = 0.99
    # DiffAugment policy, applied to real and fake images before D: ops in order, `op:p` gives an op its own
    # probability (ops: color = brightness+saturation+contrast as one, brightness, saturation, contrast, translation,
    # xflip, cutout, scale)
    augment: str = "color,translation,cutout,scale"
    augment_p: float = 0.8  # probability of each augmentation without its own, per sample
    augment_fill: Literal["zero", "reflect", "edge"] = "zero"  # what translation/scale bring in, cutout erases with
    bcr_real: float = 10.0  # balanced consistency regularisation weights
    bcr_fake: float = 10.0
    # bCR's transformation T: `shift` translates D's augmented input by up to bcr_shift of the image; `diffaug` is a
    # second, independent DiffAugment draw of the un-augmented images (the authors' code)
    bcr_mode: Literal["shift", "diffaug"] = "shift"
    bcr_shift: float = 0.125
    r1_gamma: float = 0.0  # R1 on real images (0 = off; the paper found it weakens a ViT D)
    r1_interval: int = 16  # lazy R1: every this many D steps, scaled by the interval
    lr_warmup_kimg: float = 0.0  # both learning rates ramp linearly from 0 over this many kimg (0 = none)
    ema_kimg: float = 10.0  # half-life of the generator's EMA, in thousands of images
    ema_rampup: float = 0.05  # EMA half-life at most this fraction of the images seen so far (0 = no ramp-up)
    kimg: float = 25000.0  # training length, in thousands of real images shown to D

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), hints[f.name])
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if f.name in _MAY_BE_ZERO and value < 0:
                    raise ConfigError(f"{f.name}: must be zero or positive, got {value}")
                if f.name not in _MAY_BE_ZERO and value <= 0:
                    raise ConfigError(f"{f.name}: must be positive, got {value}")
        self._check_relations()

    def _check_relations(self) -> None:
        def need(ok: bool, field: str, why: str) -> None:
            if not ok:
                raise ConfigError(f"{field}: {getattr(self, field)!r} {why}")

        need(self.channels in (1, 3), "channels", "must be 1 or 3")
        need(self.resolution % self.g_patch == 0, "g_patch", f"must divide resolution={self.resolution}")
        need(self.g_dim % self.g_heads == 0, "g_heads", f"must divide g_dim={self.g_dim}")
        if self.d_arch == "vit":
            need(self.resolution % self.d_patch == 0, "d_patch", f"must divide resolution={self.resolution}")
            need(not self.d_overlap or self.d_patch % 2 == 0, "d_patch", "must be even for overlapping patches")
            need(self.d_dim % self.d_heads == 0, "d_heads", f"must divide d_dim={self.d_dim}")
        else:
            need(self.resolution >= 4 and math.log2(self.resolution).is_integer(), "resolution",
                 "must be a power of two >= 4 for the CNN discriminator")
        need(self.beta1 < 1, "beta1", "must be below 1")
        need(self.beta2 < 1, "beta2", "must be below 1")
        need(self.augment_p <= 1, "augment_p", "must be a probability in [0, 1]")
        need(self.bcr_shift < 1, "bcr_shift", "must be a fraction of the image below 1")
        try:
            parse_policy(self.augment)
        except ValueError as error:
            raise ConfigError(f"augment: {error}") from None

    # --- conversions ---
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown configuration field")
        return cls(**data)

    def replace(self, **overrides: Any) -> Config:
        return Config.from_dict({**self.to_dict(), **overrides})

    @classmethod
    def parse_value(cls, name: str, text: str) -> Any:
        """Convert a command-line string to the type of field `name` (validated when the Config is made)."""
        hints = typing.get_type_hints(cls)
        if name not in hints:
            raise ConfigError(f"{name}: unknown configuration field")
        hint = hints[name]
        try:
            if hint is bool:
                lowered = text.strip().lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return lowered in ("true", "1", "yes")
            if hint is int:
                return int(text)
            if hint is float:
                return float(text)
        except ValueError:
            raise ConfigError(f"{name}: cannot read {text!r} as {hint.__name__}") from None
        return text


_MAY_BE_ZERO = {"beta1", "augment_p", "bcr_real", "bcr_fake", "bcr_shift", "r1_gamma", "lr_warmup_kimg", "ema_kimg",
                "ema_rampup"}


def _check_type(name: str, value: Any, hint: Any) -> None:
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{name}: {value!r} is not one of {', '.join(map(str, choices))}")
    elif hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{name}: expected a finite number, got {value!r}")
    elif hint is str and not isinstance(value, str):
        raise ConfigError(f"{name}: expected a string, got {value!r}")
