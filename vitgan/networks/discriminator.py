"""The ViTGAN discriminator (paper, Section 3.1): a convolution-free ViT with L2 attention, ISN, overlapping patches."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from vitgan.config import Config
from vitgan.nn import Attention, ClassProjection, L2Attention, MinibatchStd, check_labels, image_patches, linear_for
from vitgan.nn.spectral import LinearFactory


def packed_images(x: torch.Tensor, cfg: Config) -> torch.Tensor:
    """D's input: x, a batch (B, channels, resolution, resolution), with each `d_pack` consecutive images stacked
    along channels (PacGAN): (B / d_pack, d_pack * channels, resolution, resolution). Raises a one-line ValueError
    for any other shape."""
    expected = (cfg.channels, cfg.resolution, cfg.resolution)
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(f"images: expected shape (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
    if x.shape[0] % cfg.d_pack:
        raise ValueError(f"images: a batch of {x.shape[0]} is not whole packs of d_pack={cfg.d_pack}")
    return x.reshape(x.shape[0] // cfg.d_pack, cfg.d_pack * cfg.channels, cfg.resolution, cfg.resolution)


class DiscriminatorBlock(nn.Module):
    """Pre-LayerNorm transformer block; every linear layer built by `linear` (ISN, SN or plain)."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, *, attention: str, linear: LinearFactory,
                 qk_gain: float = 1.0, qk_norm: bool = False) -> None:
        super().__init__()
        attn_cls = L2Attention if attention == "l2" else Attention
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attn_cls(dim, num_heads, linear=linear, qk_linear=functools.partial(linear, init_gain=qk_gain),
                             qk_norm=qk_norm)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(linear(dim, mlp_dim), nn.GELU(), linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Discriminator(nn.Module):
    """ViT discriminator: `D(x)` takes images (B, C, H, W) (reals in [-1, 1]; G's, unbounded with a linear output)
    and returns logits (B,), or (B / d_pack,), one per pack of `d_pack` consecutive images stacked along channels
    (PacGAN; 1 in the paper).

    Patches of side P + 2o with stride P (o = P/2 when `d_overlap`, else 0), zero-padded by o at the border, are
    projected to tokens; a class token and learned 1-D positional embeddings are added; pre-LN blocks with L2 (or
    dot-product) attention follow; the logit is a linear projection (or a 2-layer MLP, `d_head`) of the class token
    after a final LayerNorm, plus, with `cond`, the projection term <embed(c), class token> (`ClassProjection`);
    with `d_cond_token` the class token also starts with a class embedding added.
    """

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.overlap = cfg.d_patch // 2 if cfg.d_overlap else 0
        linear = linear_for(cfg.d_norm)
        num_tokens = (cfg.resolution // cfg.d_patch) ** 2
        patch_features = cfg.d_pack * cfg.channels * (cfg.d_patch + 2 * self.overlap) ** 2
        self.patch_embed = linear(patch_features, cfg.d_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.d_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens + 1, cfg.d_dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(cfg.d_dim, cfg.d_heads, cfg.d_mlp_dim, attention=cfg.d_attention, linear=linear,
                               qk_gain=cfg.d_qk_gain, qk_norm=cfg.d_qk_norm)
            for _ in range(cfg.d_depth)
        )
        self.norm = nn.LayerNorm(cfg.d_dim)
        self.mbstd = MinibatchStd(cfg.d_mbstd_group) if cfg.d_mbstd else None
        features = cfg.d_dim + int(cfg.d_mbstd)
        if cfg.d_head == "mlp":  # as the authors' D head: minibatch std, then an MLP that can amplify it
            self.head = nn.Sequential(linear(features, cfg.d_dim), nn.LeakyReLU(0.2), linear(cfg.d_dim, 1))
        else:
            self.head = linear(features, 1)
        self.projection = ClassProjection(cfg.cond, cfg.d_dim, linear, centered=cfg.d_projection == "centered",
                                          gain=cfg.d_projection_gain) if cfg.cond else None
        # d_cond_token: the class token starts as cls + E_in[:, c], an embedding of the one-hot label
        self.cond_token = linear(cfg.cond, cfg.d_dim, bias=False) if cfg.cond and cfg.d_cond_token else None

    @property
    def mixes_samples(self) -> bool:
        """True when a sample's logit depends on the other samples of its batch (minibatch standard deviation)."""
        return self.mbstd is not None

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None, segments: int = 1) -> torch.Tensor:
        """Logits (B / d_pack,); with `segments` S, the batch is S batches of B / S images to the minibatch-std
        layer; with `cond`, each image's class label c (B,) adds the projection term of the class token."""
        x = packed_images(x, self.cfg)
        check_labels(c, self.cfg.cond, x.shape[0])
        tokens = self.patch_embed(image_patches(x, self.cfg.d_patch, self.overlap))  # (B, L, dim)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        if self.cond_token is not None:
            cls = cls + self.cond_token(F.one_hot(c, self.cfg.cond).to(tokens.dtype))[:, None]
        h = torch.cat([cls, tokens], dim=1) + self.pos_embed  # (B, 1 + L, dim)
        for block in self.blocks:
            h = block(h)
        cls = self.norm(h[:, 0])  # (B, dim)
        feature = cls
        if self.mbstd is not None:
            cls = self.mbstd(cls[:, :, None, None], segments).flatten(1)  # (B, dim + 1)
        if self.cfg.d_projection == "hidden":  # the MLP head's hidden layer, the input of its last linear layer
            feature = self.head[:-1](cls)
            logits = self.head[-1](feature).squeeze(-1)
        else:
            logits = self.head(cls).squeeze(-1)
        return logits if self.projection is None else logits + self.projection(feature, c)
