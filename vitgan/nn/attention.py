"""Multi-head self-attention: dot-product (generator, ablation) and L2-distance with tied q/k (ViTGAN's D).

Both run on `F.scaled_dot_product_attention`, so fused kernels serve them on a GPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vitgan.nn.spectral import LinearFactory


class Attention(nn.Module):
    """Standard multi-head attention softmax(q k^T / sqrt(d_h)) v with separate q, k, v projections.

    Each projection is its own linear layer (built by `linear`), so spectral normalisation, when used, bounds each
    of them, as the paper's ISN does.
    """

    def __init__(self, dim: int, num_heads: int, *, linear: LinearFactory = nn.Linear) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads: {num_heads} does not divide dim={dim}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = linear(dim, dim)
        self.k = linear(dim, dim)
        self.v = linear(dim, dim)
        self.proj = linear(dim, dim)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return rearrange(t, "b n (h d) -> b h n d", h=self.num_heads)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))  # (B, h, N, d_h)
        return F.scaled_dot_product_attention(q, k, v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, dim) -> (B, N, dim)
        out = self._attend(x)  # (B, h, N, d_h)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class L2Attention(Attention):
    """L2-distance self-attention with tied query/key weights (paper, Eq. 3; Kim et al. 2021).

        Attn_h(X) = softmax(-||X W_qk - X W_qk||^2 / sqrt(d_h)) X W_v,

    the squared distance summed over the head dimension. Query and key are the output of ONE projection `qk`.
    Computed exactly through SDPA: -||q_i - k_j||^2 = 2 q_i.k_j - ||q_i||^2 - ||k_j||^2, and ||q_i||^2 is constant
    along a softmax row, so the attention is SDPA on (2q, k, v) with the per-key additive bias -||k_j||^2 / sqrt(d_h).
    """

    def __init__(self, dim: int, num_heads: int, *, linear: LinearFactory = nn.Linear) -> None:
        nn.Module.__init__(self)
        if dim % num_heads:
            raise ValueError(f"num_heads: {num_heads} does not divide dim={dim}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qk = linear(dim, dim)
        self.v = linear(dim, dim)
        self.proj = linear(dim, dim)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        qk, v = self._heads(self.qk(x)), self._heads(self.v(x))  # (B, h, N, d_h); query = key = qk
        scale = 1.0 / math.sqrt(self.head_dim)
        key_bias = -qk.square().sum(-1).unsqueeze(-2) * scale  # (B, h, 1, N): -||k_j||^2 / sqrt(d_h)
        return F.scaled_dot_product_attention(2 * qk, qk, v, attn_mask=key_bias.to(qk.dtype), scale=scale)
