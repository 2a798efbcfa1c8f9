"""L2-distance attention against the paper's formula, computed independently in float64."""

import math

import pytest
import torch

from vitgan.nn import Attention, ISNLinear, L2Attention
from vitgan.nn.attention import scaled_attention


def reference_l2_attention(x, w_qk, b_qk, w_v, b_v, w_o, b_o, heads):
    """softmax(-||X Wq - X Wk||^2 / sqrt(d_h)) X Wv with Wq = Wk, distances summed over the head dim, per head."""
    batch, n, dim = x.shape
    d_h = dim // heads
    q = (x @ w_qk.T + b_qk).reshape(batch, n, heads, d_h)
    v = (x @ w_v.T + b_v).reshape(batch, n, heads, d_h)
    out = torch.empty(batch, n, heads, d_h, dtype=x.dtype)
    for b in range(batch):
        for h in range(heads):
            qh = q[b, :, h]  # (n, d_h); the key is the same matrix
            diff = qh[:, None, :] - qh[None, :, :]  # (n, n, d_h)
            dist = (diff**2).sum(-1)  # summed, not averaged
            weights = torch.softmax(-dist / math.sqrt(d_h), dim=-1)  # negated, scaled before the softmax
            out[b, :, h] = weights @ v[b, :, h]
    return out.reshape(batch, n, dim) @ w_o.T + b_o


def test_l2_attention_matches_formula_outputs_and_gradients():
    torch.manual_seed(0)
    attn = L2Attention(24, 3).double()
    x = torch.randn(2, 7, 24, dtype=torch.float64, requires_grad=True)
    params = [attn.qk.weight, attn.qk.bias, attn.v.weight, attn.v.bias, attn.proj.weight, attn.proj.bias]
    out = attn(x)
    ref = reference_l2_attention(x, *params, heads=3)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    upstream = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, *params], upstream)
    ref_grads = torch.autograd.grad(ref, [x, *params], upstream)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("fused", [True, False])
def test_both_attention_paths_equal_the_explicit_l2_formula(fused):
    """The SDPA path (2q, k, v with bias -||k||^2 / sqrt(d_h)) and the explicit-matmul path give the same result."""
    torch.manual_seed(1)
    qk = torch.randn(2, 3, 6, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 3, 6, 4, dtype=torch.float64, requires_grad=True)
    scale = 1 / math.sqrt(4)
    out = scaled_attention(2 * qk, qk, v, scale=scale, key_bias=-qk.square().sum(-1).unsqueeze(-2) * scale,
                           fused=fused)
    dist = (qk.unsqueeze(-2) - qk.unsqueeze(-3)).square().sum(-1)  # (B, h, N, N)
    ref = torch.softmax(-dist * scale, dim=-1) @ v
    torch.testing.assert_close(out, ref)
    upstream = torch.randn_like(out)
    for g, r in zip(torch.autograd.grad(out, [qk, v], upstream), torch.autograd.grad(ref, [qk, v], upstream),
                    strict=True):
        torch.testing.assert_close(g, r)


def test_query_and_key_come_from_one_parameter():
    attn = L2Attention(16, 2)
    names = {name for name, _ in attn.named_parameters()}
    assert names == {"qk.weight", "qk.bias", "v.weight", "v.bias", "proj.weight", "proj.bias"}
    # Tied weights make the distance of a token to itself zero, the smallest possible: with a large input scale
    # every token attends to itself, so the output tends to proj(v(x)).
    x = 50 * torch.randn(1, 5, 16)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), attn.proj(attn.v(x)), rtol=1e-4, atol=1e-3)


def test_l2_attention_with_isn_layers():
    attn = L2Attention(32, 4, linear=ISNLinear)
    out = attn(torch.randn(3, 9, 32))
    assert out.shape == (3, 9, 32) and torch.isfinite(out).all()
    assert isinstance(attn.qk, ISNLinear) and isinstance(attn.v, ISNLinear) and isinstance(attn.proj, ISNLinear)


def _jacobian_norm(module, x):
    n, dim = x.shape
    jac = torch.autograd.functional.jacobian(lambda t: module(t.unsqueeze(0)).squeeze(0), x)
    return torch.linalg.matrix_norm(jac.reshape(n * dim, n * dim), ord=2).item()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_l2_attention_jacobian_stays_bounded_while_dot_product_grows(seed):
    """Kim et al. (2021): dot-product attention is not Lipschitz, L2 attention with tied q/k is.

    The same weights (q = k tied for both) are used by both kinds; only the similarity differs. The local Jacobian's
    spectral norm, maximised over a few random inputs, is compared as the input scale grows from 1 to 32.
    """
    torch.manual_seed(seed)
    dim, heads, n = 16, 2, 8
    l2 = L2Attention(dim, heads).double()
    dot = Attention(dim, heads).double()
    dot.q.load_state_dict(l2.qk.state_dict())
    dot.k.load_state_dict(l2.qk.state_dict())
    dot.v.load_state_dict(l2.v.state_dict())
    dot.proj.load_state_dict(l2.proj.state_dict())
    inputs = [torch.randn(n, dim, dtype=torch.float64) for _ in range(8)]

    def worst(module, scales):
        return max(_jacobian_norm(module, s * x) for x in inputs for s in scales)

    small, large = (1.0,), (8.0, 16.0, 32.0)
    assert worst(l2, large) < 2.0 * worst(l2, small)  # bounded: saturates at ||W_o W_v||
    assert worst(dot, large) > 8.0 * worst(dot, small)  # grows with the input scale
