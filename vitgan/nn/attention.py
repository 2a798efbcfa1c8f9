"""Multi-head self-attention: dot-product (generator, ablation) and L2-distance with tied q/k (ViTGAN's D).

Either may normalise its per-head queries and keys (`qk_norm`): a LayerNorm over the head dimension, with a learned
gain and bias per dimension, on the projections' output before the similarity (QK-norm; Dehghani et al. 2023,
"Scaling Vision Transformers to 22 Billion Parameters"). It bounds the logits whatever the scale of the input.

Dot-product attention runs on `F.scaled_dot_product_attention` on accelerators (fused kernels on a GPU); L2
attention on explicit products everywhere, its logits and softmax in fp32 (see `L2Attention._attend`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vitgan.nn.spectral import LinearFactory


def scaled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float,
                     key_bias: torch.Tensor | None = None, fused: bool | None = None) -> torch.Tensor:
    """softmax(q k^T * scale + key_bias) v over the last two dims; key_bias broadcasts as (B, h, 1, N).

    `F.scaled_dot_product_attention` (fused kernels) everywhere but the CPU; there, explicit matrix products, which
    PyTorch 2.13's fused CPU kernel trails for ViT-sized sequences (65 tokens, head dim 32: 4 ms against 14-21 ms
    for a bf16 forward+backward; about equal in fp32). The logits and the softmax are kept in fp32.
    `fused` forces one path (None: by device).
    """
    if fused if fused is not None else q.device.type != "cpu":
        mask = None if key_bias is None else key_bias.to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    precise = torch.promote_types(q.dtype, torch.float32)  # fp32 for bf16/fp16 inputs, fp64 stays fp64
    logits = (q @ k.transpose(-2, -1)).to(precise) * scale  # (B, h, N, N)
    if key_bias is not None:
        logits = logits + key_bias.to(precise)
    return logits.softmax(dim=-1).to(v.dtype) @ v


class _MultiHeadSelfAttention(nn.Module):
    """What both attentions share: heads, the value and output projections, and the forward around `_attend`."""

    def __init__(self, dim: int, num_heads: int, linear: LinearFactory) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads: {num_heads} does not divide dim={dim}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.v = linear(dim, dim)
        self.proj = linear(dim, dim)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return rearrange(t, "b n (h d) -> b h n d", h=self.num_heads)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _qk_norm(self, enabled: bool) -> nn.Module:
        """QK-norm: a LayerNorm over the head dimension of (B, h, N, d_h), or nothing."""
        return nn.LayerNorm(self.head_dim) if enabled else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, dim) -> (B, N, dim)
        out = self._attend(x)  # (B, h, N, d_h)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class Attention(_MultiHeadSelfAttention):
    """Standard multi-head attention softmax(q k^T / sqrt(d_h)) v with separate q, k, v projections.

    Each projection is its own linear layer (built by `linear`; q and k by `qk_linear` when given), so spectral
    normalisation, when used, bounds each of them, as the paper's ISN does. `qk_norm`: q and k each through their
    own LayerNorm over d_h (QK-norm) before the dot product.
    """

    def __init__(self, dim: int, num_heads: int, *, linear: LinearFactory = nn.Linear,
                 qk_linear: LinearFactory | None = None, qk_norm: bool = False) -> None:
        super().__init__(dim, num_heads, linear)
        self.q = (qk_linear or linear)(dim, dim)
        self.k = (qk_linear or linear)(dim, dim)
        self.q_norm, self.k_norm = self._qk_norm(qk_norm), self._qk_norm(qk_norm)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))  # (B, h, N, d_h)
        q, k = self.q_norm(q), self.k_norm(k)
        return scaled_attention(q, k, v, scale=1.0 / math.sqrt(self.head_dim))


class L2Attention(_MultiHeadSelfAttention):
    """L2-distance self-attention with tied query/key weights (paper, Eq. 3; Kim et al. 2021).

        Attn_h(X) = softmax(-||X W_qk - X W_qk||^2 / sqrt(d_h)) X W_v,

    the squared distance summed over the head dimension. Query and key are the output of ONE projection `qk`.
    Computed exactly: -||q_i - k_j||^2 = 2 q_i.k_j - ||q_i||^2 - ||k_j||^2, and ||q_i||^2 is constant along a
    softmax row, so the attention is `scaled_attention` on (2q, k, v) with the per-key additive bias
    -||k_j||^2 / sqrt(d_h), on its explicit path (fp32 logits and softmax) on every device.
    `qk_norm`: one LayerNorm over d_h (QK-norm) on the projection's output, so query and key stay the same tensor.
    """

    def __init__(self, dim: int, num_heads: int, *, linear: LinearFactory = nn.Linear,
                 qk_linear: LinearFactory | None = None, qk_norm: bool = False) -> None:
        super().__init__(dim, num_heads, linear)
        self.qk = (qk_linear or linear)(dim, dim)
        self.qk_norm = self._qk_norm(qk_norm)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        qk, v = self.qk_norm(self._heads(self.qk(x))), self._heads(self.v(x))  # (B, h, N, d_h); query = key = qk
        scale = 1.0 / math.sqrt(self.head_dim)
        precise = torch.promote_types(qk.dtype, torch.float32)
        key_bias = -qk.to(precise).square().sum(-1).unsqueeze(-2) * scale  # (B, h, 1, N): -||k_j||^2 / sqrt(d_h)
        # Explicit products on every device: on CUDA in bf16, SDPA's fused kernels take the bias in bf16, and the
        # cifar10 preset's G turned NaN within 16 steps (fp16, fp32 and this path held; benchmarks/gpu_nan_probe.py).
        return scaled_attention(2 * qk, qk, v, scale=scale, key_bias=key_bias, fused=False)
