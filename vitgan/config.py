"""The one configuration object: every network size and every ablation switch is a field here.

A variant of ViTGAN is a value of `Config`, never a copy of a model. Every field is checked when a `Config` is made,
and a bad value raises `ConfigError` with a one-line message that names the field. Each field carries its meaning
(`option(default, help)`), which the command line shows as the option's `--help`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

# DiffAugment's ops, in the names a policy uses (vitgan/training/augment.py implements exactly these: tested)
AUGMENT_OPS = ("color", "brightness", "saturation", "contrast", "translation", "xflip", "cutout", "scale")


class ConfigError(ValueError):
    """A configuration value is invalid. The message is one line and starts with the field's name."""


def option(default: Any, help: str, **cli: Any) -> Any:
    """A dataclass field with its meaning, shown by `--help`; `cli` may say how the command line spells it
    (`flag="--tick"`, `metavar="DIR"`) or that it is not an option (`cli=False`)."""
    return dataclasses.field(default=default, metadata={"help": help, **cli})


@dataclass(frozen=True)
class Config:
    # --- images ---
    resolution: int = option(32, "output side in pixels (square images)")
    channels: int = option(3, "1 (grayscale) or 3 (RGB)")

    # --- conditioning ---
    cond: int = option(0, "class-conditional on this many classes (0 = unconditional): G's mapping network takes an "
                       "embedding of the label beside z (StyleGAN2-ADA's), D adds the projection <embed(c), h> of "
                       "its final feature h to its logit (Miyato and Koyama 2018); `vitgan train --cond` sets it to "
                       "the data's class count", cli=False)

    # --- generator ---
    z_dim: int = option(384, "latent size")
    w_dim: int = option(384, "mapping-network output size")
    mapping_layers: int = option(8, "depth of the mapping MLP z -> w")
    mapping_lr_mul: float = option(0.01, "learning-rate multiplier of the mapping MLP (equalised learning rate)")
    g_patch: int = option(4, "G: side of one generated patch, in pixels")
    g_dim: int = option(384, "G: token width")
    g_depth: int = option(4, "G: transformer blocks")
    g_heads: int = option(6, "G: attention heads (must divide g_dim)")
    g_mlp_dim: int = option(1536, "G: hidden width of each block's MLP")
    g_design: Literal["A", "B", "C"] = option("C", "G's use of w: A adds it to every token, B prepends it as a token "
                                              "(both with plain LayerNorm), C modulates each LayerNorm (SLN, ViTGAN)")
    g_norm_position: Literal["pre", "stream"] = option("pre", "where each G block's norm sits: pre on the branch "
                                                       "inputs, the residual stream bypassing it (the paper's Eq. 5); "
                                                       "stream on the residual stream itself before each branch, so w "
                                                       "modulates the stream (the authors' code)")
    g_sln_equalized: bool = option(False, "SLN's gamma/beta layers with StyleGAN's equalised learning rate (the "
                                   "authors' code): the same function at initialisation, Adam's steps ~sqrt(w_dim) "
                                   "times smaller relative to the weights")
    g_head: Literal["inr", "linear"] = option("inr", "G's patch decoder: an implicit neural representation of the "
                                              "patch's pixels, or one linear layer")
    g_output: Literal["tanh", "linear"] = option("tanh", "tanh: pixels in [-1, 1]; linear: unbounded "
                                                 "(StyleGAN2-style)")
    g_fourier_dim: int = option(64, "INR head: Fourier features of the pixel coordinates inside a patch")
    g_inr_hidden: int = option(128, "INR head: hidden width of its MLP")

    # --- discriminator ---
    d_arch: Literal["vit", "cnn"] = option("vit", "D's architecture: the ViT, or a StyleGAN2-style residual CNN "
                                           "(the 'ViTGAN G + CNN D' variant)")
    d_patch: int = option(4, "ViT D: stride P of the patch grid")
    d_overlap: bool = option(True, "ViT D: overlapping patches of side P + 2*(P/2) with stride P, or plain P-patches")
    d_dim: int = option(384, "ViT D: token width")
    d_depth: int = option(4, "ViT D: transformer blocks")
    d_heads: int = option(6, "ViT D: attention heads (must divide d_dim)")
    d_mlp_dim: int = option(1536, "ViT D: hidden width of each block's MLP")
    d_attention: Literal["l2", "dot"] = option("l2", "ViT D: L2-distance attention with tied q/k, or dot-product "
                                               "attention")
    d_norm: Literal["isn", "sn", "sigma_reparam", "none"] = option("isn", "ViT D: improved spectral norm, plain "
                                                                   "spectral norm, ISN with a learned gain per layer "
                                                                   "(sigma-reparam), or none")
    d_qk_gain: float = option(1.0, "ViT D: initial gain of the query/key projection (its Xavier bound times this; ISN "
                              "keeps it). Squared distances scale with its square: at 1 tied-q/k L2 attention "
                              "attends almost only to itself at initialisation (the class token takes ~1% of its "
                              "attention from the patches), at 0.5 mostly to the other tokens")
    d_qk_norm: bool = option(False, "ViT D: LayerNorm over the head dimension (learned gain and bias) on the "
                             "attention's per-head queries and keys, after their projection, before the distance or "
                             "dot product, which bounds the logits (QK-norm; Dehghani et al. 2023, 'Scaling Vision "
                             "Transformers to 22 Billion Parameters'). L2 attention keeps q = k tied")
    d_head: Literal["linear", "mlp"] = option("linear", "ViT D: the logit from the class token through one linear "
                                              "layer, or a 2-layer MLP (the authors' D head)")
    d_projection: Literal["feature", "hidden", "centered"] = option(
        "feature", "D with cond: the projection term <embed(c), h>, h the class token's final feature (the head's "
        "input; the CNN D's last hidden feature); hidden: h the hidden layer of the ViT D's MLP head (d_head mlp), "
        "the feature its last linear layer reads, as in Miyato and Koyama's logit psi(phi(x)) + <embed(c), phi(x)> "
        "with psi linear; centered: h the final feature and the embedding taken relative to the mean over classes, "
        "<embed(c) - mean_k embed(k), h> (the head alone says how real; the embedding's norm, held by ISN, goes to "
        "what tells the classes apart)")
    d_projection_gain: float = option(1.0, "D with cond: the projection term times this")
    d_cond_token: bool = option(False, "ViT D with cond: also add a class embedding (under D's normalisation, as the "
                                "projection's) to the class token at the input, so that the label steers D's "
                                "attention and not only the final projection term")
    d_mbstd: bool = option(False, "ViT D: append the minibatch standard deviation of the class token to the head's "
                           "input")
    d_mbstd_group: int = option(4, "minibatch-std group size (ViT D with d_mbstd, and CNN D): the standard deviation "
                                "is over this many consecutive samples; must divide the batch (StyleGAN2: 4)")
    d_pack: int = option(1, "PacGAN (Lin et al. 2018): D judges packs of this many consecutive samples stacked along "
                         "channels, one logit per pack, which makes a G that drops modes easier to tell apart "
                         "(1 = one image per logit, the paper); must divide the batch")
    d_cnn_base: int = option(16384, "CNN D: channels at resolution r are min(d_cnn_max, d_cnn_base // r)")
    d_cnn_max: int = option(512, "CNN D: the most channels of a layer")

    # --- training (paper, Section 4: Adam (0, 0.99), lr 0.002, batch 128, bCR 10, DiffAugment, optional R1) ---
    batch: int = option(128, "total batch size, over all ranks and accumulation rounds")
    g_lr: float = option(0.002, "G's Adam learning rate")
    d_lr: float = option(0.002, "D's Adam learning rate")
    d_steps_per_g: int = option(1, "D steps per G step, each on its own batch of reals (kimg counts the reals D "
                                "sees, so a G step comes every d_steps_per_g x batch images)")
    grad_clip: float = option(0.0, "clip each network's gradient to this total 2-norm before its optimiser step (0 = "
                              "off); the logged grad_d/grad_g are the norms before clipping")
    beta1: float = option(0.0, "Adam's beta1 (both networks)")
    beta2: float = option(0.99, "Adam's beta2 (both networks)")
    augment: str = option("color,translation,cutout,scale", "DiffAugment policy, applied to real and fake images "
                          "before D: ops in order, comma-separated ('' for none); `op:p` gives an op its own "
                          f"probability. Ops: {', '.join(AUGMENT_OPS)} (color = brightness, saturation and contrast "
                          "as one op)")
    augment_p: float = option(0.8, "probability of each augmentation op without its own, per sample")
    ada_target: float = option(0.0, "adaptive augmentation (ADA, Karras et al. 2020): the target of r = E[sign(D("
                               "augmented real))]; every 4 D steps the probability of the ops without their own "
                               "moves up if r is above it, down if below (0 = off: fixed at augment_p; ADA: 0.6)")
    ada_kimg: float = option(100.0, "ADA: the probability moves by at most 1 per this many kimg (ADA: 500); it "
                             "starts at augment_p")
    augment_fill: Literal["zero", "reflect", "edge"] = option("zero", "what translation and scale bring in and "
                                                              "cutout erases with: 0, the mirror image, or the edge "
                                                              "pixels (cutout: the border's mean)")
    bcr_real: float = option(10.0, "weight of balanced consistency regularisation on real images (0 = off)")
    bcr_fake: float = option(10.0, "weight of balanced consistency regularisation on fake images (0 = off)")
    bcr_mode: Literal["shift", "diffaug"] = option("shift", "bCR's transformation T: shift translates D's augmented "
                                                   "input by up to bcr_shift of the image; diffaug is a second, "
                                                   "independent DiffAugment draw of the un-augmented images (the "
                                                   "authors' code)")
    bcr_shift: float = option(0.125, "bcr_mode shift: the largest translation, as a fraction of the image")
    gan_loss: Literal["ns", "rpgan"] = option("ns", "the adversarial loss: ns, the non-saturating logistic loss (D: "
                                              "softplus(D(fake)) + softplus(-D(real)), G: softplus(-D(fake))); "
                                              "rpgan, the relativistic pairing GAN (Jolicoeur-Martineau 2019; R3GAN): "
                                              "D: softplus(-(D(real) - D(fake))), G: softplus(-(D(fake) - D(real))) "
                                              "over one-to-one pairs of a real and a fake (image i, or pack i, of the "
                                              "round), G's step on the reals of the last D step")
    r1_gamma: float = option(0.0, "R1 weight gamma on real images (0 = off; the paper found it weakens a ViT D)")
    r2_gamma: float = option(0.0, "R2 weight gamma: the zero-centred gradient penalty on fake images, gamma / 2 * "
                             "E||grad_x D(x_fake)||^2, fakes detached (0 = off; R3GAN: RpGAN + R1 + R2, both gammas "
                             "equal)")
    r1_interval: int = option(16, "lazy R1 and R2: every this many D steps, scaled by the interval (1 = every step)")
    lr_warmup_kimg: float = option(0.0, "both learning rates ramp linearly from 0 over this many kimg (0 = none)")
    ema_kimg: float = option(10.0, "half-life of the generator's EMA, in thousands of images")
    ema_rampup: float = option(0.05, "the EMA half-life is at most this fraction of the images seen so far "
                               "(0 = no ramp-up)")
    kimg: float = option(25000.0, "training length, in thousands of real images shown to D")

    def __post_init__(self) -> None:
        check_types(self)
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
        need(self.cond != 1, "cond", "must be 0 (unconditional) or at least 2 classes")
        need(not self.cond or self.d_pack == 1, "d_pack", "must be 1 with cond: a pack has one logit but a label "
             "per image")
        need(self.d_projection != "hidden" or (self.d_arch == "vit" and self.d_head == "mlp"), "d_projection",
             "needs the ViT D's MLP head (d_arch vit, d_head mlp): only it has a hidden layer")
        need(not self.d_cond_token or self.d_arch == "vit", "d_cond_token", "needs the ViT D (d_arch vit): only it "
             "has a class token")
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
        if self.batch % self.d_unit:  # D computes its logits over whole units of d_unit images
            unit = (f"d_mbstd_group {self.d_mbstd_group} x d_pack {self.d_pack}" if self.d_unit != self.d_pack
                    else f"d_pack {self.d_pack}")
            raise ConfigError(f"batch: must be a multiple of {self.d_unit} ({unit}), got {self.batch}; "
                              f"{nearest_multiples(self.batch, self.d_unit)}")
        need(self.ada_target < 1, "ada_target", "must be below 1 (r, a mean of signs, cannot exceed 1)")
        need(self.bcr_shift < 1, "bcr_shift", "must be a fraction of the image below 1")
        try:
            parse_policy(self.augment)
        except ValueError as error:
            raise ConfigError(f"augment: {error}") from None

    @property
    def d_unit(self) -> int:
        """The consecutive images whose logits D computes together: a pack (`d_pack`), times the minibatch-std group
        (`d_mbstd_group`, in packs) where D has one. Each local rank's share of the batch is a multiple of it, so that
        ranks compute exactly what one process does (a round's share need only be whole packs: Trainer)."""
        return self.d_pack * (self.d_mbstd_group if self.d_mbstd or self.d_arch == "cnn" else 1)

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
        return parse_field(cls, name, text)


def nearest_multiples(value: int, unit: int) -> str:
    """The multiples of `unit` nearest to `value`, below and above, for an error to say what works: 'e.g. 4 or 8'
    (only the one above where none is positive below)."""
    below, above = value // unit * unit, (value // unit + 1) * unit
    return f"e.g. {below} or {above}" if below > 0 else f"e.g. {above}"


def parse_field(cls: type, name: str, text: str) -> Any:
    """Convert a command-line string to the type of the dataclass field `cls.name` (for `X | None`, to X)."""
    hints = typing.get_type_hints(cls)
    if name not in hints:
        raise ConfigError(f"{name}: unknown configuration field")
    hint = non_none(hints[name])
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


def parse_policy(policy: str) -> list[tuple[str, float | None]]:
    """'color,cutout:0.3' -> [('color', None), ('cutout', 0.3)]: each op with its own probability, or None for the
    policy-wide one. Raises ValueError on an unknown op or a probability outside [0, 1]."""
    ops = []
    for item in (part.strip() for part in policy.split(",")):
        if not item:
            continue
        name, _, p_text = (part.strip() for part in item.partition(":"))
        if name not in AUGMENT_OPS:
            raise ValueError(f"unknown augmentation {name!r}; choose from {', '.join(AUGMENT_OPS)}")
        p = None
        if p_text:
            try:
                p = float(p_text)
            except ValueError:
                raise ValueError(f"{item!r}: the probability after ':' must be a number") from None
            if not 0 <= p <= 1:
                raise ValueError(f"{item!r}: the probability must be in [0, 1]")
        ops.append((name, p))
    return ops


_MAY_BE_ZERO = {"cond", "beta1", "grad_clip", "augment_p", "ada_target", "bcr_real", "bcr_fake", "bcr_shift",
                "r1_gamma", "r2_gamma", "lr_warmup_kimg", "ema_kimg", "ema_rampup"}


def non_none(hint: Any) -> Any:
    """X for the hint `X | None`, else the hint itself."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        return next(a for a in args if a is not type(None))
    return hint


def check_types(obj: Any) -> None:
    """Check each field of the dataclass `obj` against its type hint, naming the first bad one. Numbers are coerced
    to their field's type: an integer given to a float field becomes a float (`Config(beta1=0)` reaches Adam as 0.0),
    a numpy integer an int."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, hint = getattr(obj, f.name), hints[f.name]
        if value is None and non_none(hint) is not hint:
            continue
        coerced = _check_type(f.name, value, non_none(hint))
        if coerced is not value:
            object.__setattr__(obj, f.name, coerced)  # frozen dataclasses too


def _check_type(name: str, value: Any, hint: Any) -> Any:
    """`value` as the type `hint` names (a number converted to it), or a ConfigError naming the field."""
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{name}: {value!r} is not one of {', '.join(map(str, choices))}")
    elif hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return int(value)
    elif hint is float:
        try:
            number = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
        except OverflowError:  # an integer beyond float's range
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{name}: expected a finite number, got {value!r}")
        return number
    elif hint is str and not isinstance(value, str):
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    return value
