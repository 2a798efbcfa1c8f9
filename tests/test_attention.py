"""L2-distance attention against the paper's formula, computed independently in float64."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

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


def reference_qk_norm_attention(x, attn, kind):
    """QK-norm (Dehghani et al. 2023) by plain torch ops: project, split the heads, LayerNorm over d_h with the
    module's gain and bias, then softmax(-||q_i - k_j||^2 / sqrt(d_h)) v (L2, q = k) or softmax(q k^T / sqrt(d_h)) v."""
    batch, n, dim = x.shape
    heads, d_h = attn.num_heads, attn.head_dim

    def heads_of(layer):
        return F.linear(x, layer.weight, layer.bias).reshape(batch, n, heads, d_h).transpose(1, 2)  # (B, h, N, d_h)

    def norm(t, ln):
        return F.layer_norm(t, (d_h,), ln.weight, ln.bias, ln.eps)

    v = heads_of(attn.v)
    if kind == "l2":
        q = k = norm(heads_of(attn.qk), attn.qk_norm)
        weights = torch.softmax(-torch.cdist(q, k).square() / math.sqrt(d_h), dim=-1)
    else:
        q, k = norm(heads_of(attn.q), attn.q_norm), norm(heads_of(attn.k), attn.k_norm)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d_h), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(batch, n, dim)
    return F.linear(out, attn.proj.weight, attn.proj.bias)


def _qk_norm_attention(kind, dim=24, heads=3):
    attn = (L2Attention if kind == "l2" else Attention)(dim, heads, qk_norm=True).double()
    with torch.no_grad():  # a gain and bias away from LayerNorm's 1 and 0, so that the test sees them used
        for module in attn.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.3)
    return attn


@pytest.mark.parametrize("kind", ["l2", "dot"])
def test_qk_norm_matches_formula_outputs_and_gradients(kind):
    torch.manual_seed(2)
    attn = _qk_norm_attention(kind)
    norms = [m for m in attn.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == (1 if kind == "l2" else 2) and all(m.normalized_shape == (8,) for m in norms)
    x = torch.randn(2, 7, 24, dtype=torch.float64, requires_grad=True)
    out, ref = attn(x), reference_qk_norm_attention(x, attn, kind)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    params = [x, *attn.parameters()]
    upstream = torch.randn_like(out)
    for g, r in zip(torch.autograd.grad(out, params, upstream), torch.autograd.grad(ref, params, upstream),
                    strict=True):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-9)


def test_qk_norm_keeps_l2_query_and_key_tied():
    """One LayerNorm on the one projection: the normalised query and key are the same vectors, so a token's distance
    to itself stays 0, the smallest; with a large LayerNorm gain every token attends to itself alone."""
    torch.manual_seed(3)
    attn = L2Attention(16, 2, qk_norm=True).double()
    names = {name for name, _ in attn.named_parameters()}
    assert names == {"qk.weight", "qk.bias", "qk_norm.weight", "qk_norm.bias", "v.weight", "v.bias", "proj.weight",
                     "proj.bias"}
    x = torch.randn(1, 5, 16, dtype=torch.float64)
    with torch.no_grad():
        attn.qk_norm.weight.fill_(20.0)
        attn.qk_norm.bias.normal_()  # the tie makes the bias cancel in q_i - k_j
        torch.testing.assert_close(attn(x), attn.proj(attn.v(x)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["l2", "dot"])
def test_qk_norm_bounds_the_logits_whatever_the_input_scale(kind):
    """With bias-free projections the layer is then homogeneous: attn(c x) = c attn(x) for c = 1e3, the attention
    weights unchanged up to LayerNorm's eps (1e-5 against per-head variances of ~0.1 at scale 1); without QK-norm
    the logits grow with c^2 and the weights saturate."""
    torch.manual_seed(4)
    x = torch.randn(2, 9, 24, dtype=torch.float64)
    change = {}
    for qk_norm in (True, False):
        torch.manual_seed(5)
        attn = (L2Attention if kind == "l2" else Attention)(24, 3, qk_norm=qk_norm).double()
        with torch.no_grad():
            for layer in attn.modules():
                if isinstance(layer, nn.Linear):
                    layer.bias.zero_()
            change[qk_norm] = (attn(1e3 * x) / 1e3 - attn(x)).abs().max().item()
    assert change[True] < 1e-4 and change[False] > 0.1, change


@pytest.mark.parametrize("cls", [Attention, L2Attention])
def test_without_qk_norm_the_attention_has_no_norm_and_no_new_parameter(cls):
    attn = cls(16, 2)
    assert not any(isinstance(m, nn.LayerNorm) for m in attn.modules())
    assert not any("norm" in name for name, _ in attn.named_parameters())


def test_l2_attention_never_takes_the_fused_kernel(monkeypatch):
    """On a GPU in bf16, SDPA's fused kernels take L2 attention's key bias in bf16, and the cifar10 preset's G turned
    NaN within 16 steps there (benchmarks/results/gpu-NVIDIA-H200/2026-11-26/nan-probe.jsonl); L2 attention runs on
    explicit products on every device. Dot-product attention keeps SDPA where it is fused (here forced, as on a
    GPU)."""
    import torch.nn.functional as F

    from vitgan.nn import attention

    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    monkeypatch.setitem(attention.scaled_attention.__kwdefaults__, "fused", True)  # as on a GPU
    x = torch.randn(2, 5, 16)
    attention.L2Attention(16, 2)(x)
    assert calls == []
    attention.Attention(16, 2)(x)
    assert calls == [1]
