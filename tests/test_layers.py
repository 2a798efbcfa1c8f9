"""SLN, Fourier features, the modulated INR MLP and the mapping network, against their formulas."""

import math

import torch
import torch.nn.functional as F

from vitgan import presets
from vitgan.networks import Generator
from vitgan.networks.generator import INRHead
from vitgan.nn import SLN, EqualizedLinear, FourierFeatures, ModulatedLinear, grid_coordinates


def test_sln_equals_gamma_times_layernorm_plus_beta():
    torch.manual_seed(0)
    sln = SLN(12, 5).double()
    with torch.no_grad():  # make gamma/beta non-trivial
        for p in sln.parameters():
            p.add_(torch.randn_like(p))
    h = torch.randn(3, 7, 12, dtype=torch.float64)
    w = torch.randn(3, 5, dtype=torch.float64)
    gamma = w @ sln.gamma.weight.T + sln.gamma.bias  # affine in w, (B, dim)
    beta = w @ sln.beta.weight.T + sln.beta.bias
    mu = h.mean(-1, keepdim=True)
    sigma = ((h - mu) ** 2).mean(-1, keepdim=True).add(1e-5).sqrt()  # biased variance, as LayerNorm
    expected = gamma[:, None, :] * (h - mu) / sigma + beta[:, None, :]
    torch.testing.assert_close(sln(h, w), expected)


def test_sln_starts_as_modulation_around_layernorm():
    sln = SLN(64, 32)
    assert torch.all(sln.gamma.bias == 1) and torch.all(sln.beta.bias == 0)


def test_fourier_features_shape_range_and_formula():
    torch.manual_seed(1)
    ff = FourierFeatures(2, 48)
    coords = grid_coordinates(8)
    out = ff(coords)
    assert out.shape == (64, 48)
    assert out.abs().max() <= 1.0
    torch.testing.assert_close(out, torch.sin(coords @ ff.linear.weight.T + ff.linear.bias))
    assert out.std(0).mean() > 0.3  # the features vary across the grid (frequencies of order pi)


def test_grid_coordinates_are_cell_centres_in_range():
    c = grid_coordinates(4)
    assert c.shape == (16, 2)
    torch.testing.assert_close(c[0], torch.tensor([-0.75, -0.75]))
    torch.testing.assert_close(c[5], torch.tensor([-0.25, -0.25]))  # row 1, column 1
    torch.testing.assert_close(c[3], torch.tensor([-0.75, 0.75]))  # row 0, last column: (y, x)
    assert c.min() > -1 and c.max() < 1


def _per_token_weights(layer, style):
    """Materialise each token's weight, as StyleGAN2 writes it: W'[o,i] = W[o,i] s[i], then demodulated."""
    s = style @ layer.affine.weight.T + layer.affine.bias  # (B, L, in)
    w = layer.weight[None, None] * s[:, :, None, :]  # (B, L, out, in)
    if layer.demodulate:
        w = w / torch.sqrt((w**2).sum(-1, keepdim=True) + layer.eps)
    return w


def test_modulated_linear_equals_per_token_weights():
    torch.manual_seed(2)
    for demodulate in (True, False):
        layer = ModulatedLinear(6, 5, 4, demodulate=demodulate).double()
        with torch.no_grad():
            layer.bias.normal_()
        x = torch.randn(2, 3, 10, 6, dtype=torch.float64)  # (B, L, N, in)
        style = torch.randn(2, 3, 4, dtype=torch.float64)
        weights = _per_token_weights(layer, style)
        expected = torch.einsum("blni,bloi->blno", x, weights) + layer.bias
        torch.testing.assert_close(layer(x, style), expected)


def test_inr_head_decodes_each_patch_from_its_own_embedding():
    torch.manual_seed(3)
    head = INRHead(16, 4, 3, fourier_dim=8, hidden=12).double()
    e = torch.randn(2, 5, 16, dtype=torch.float64)  # 5 patch embeddings
    out = head(e)
    assert out.shape == (2, 5, 16, 3)  # (B, L, P*P, C)
    coords = grid_coordinates(4).double()
    fourier = torch.sin(coords @ head.fourier.linear.weight.T + head.fourier.linear.bias)  # (16, 8)
    w1, w2 = _per_token_weights(head.hidden, e), _per_token_weights(head.out, e)
    for b in range(2):
        for patch in range(5):
            hidden = F.leaky_relu(fourier @ w1[b, patch].T + head.hidden.bias, 0.2) * math.sqrt(2)
            expected = hidden @ w2[b, patch].T + head.out.bias
            torch.testing.assert_close(out[b, patch], expected)
    # changing one patch's embedding changes only that patch's pixels
    e2 = e.clone()
    e2[:, 2] += 1.0
    changed = (head(e2) - out).abs().amax(dim=(2, 3))
    assert torch.all(changed[:, 2] > 0) and torch.all(changed[:, [0, 1, 3, 4]] == 0)


def test_equalized_linear_scales_by_lr_mul_over_sqrt_fan_in():
    torch.manual_seed(4)
    layer = EqualizedLinear(9, 4, lr_mul=0.01)
    x = torch.randn(3, 9)
    expected = x @ (layer.weight * 0.01 / 3.0).T + layer.bias * 0.01
    torch.testing.assert_close(layer(x), expected)


def test_generator_uses_z_from_initialisation():
    """SPEC.md: a generator whose output barely depends on z collapses; real digits have per-pixel std ~0.29."""
    torch.manual_seed(5)
    g = Generator(presets.get("mnist")).eval()
    with torch.no_grad():
        images = g(torch.randn(64, g.z_dim))
    assert images.std(dim=0).mean() > 0.1


def test_truncation_moves_w_towards_its_average():
    torch.manual_seed(6)
    g = Generator(presets.get("mnist"))
    g.train()
    g(torch.randn(256, g.z_dim))  # track w_avg
    g.eval()
    z = torch.randn(8, g.z_dim)
    with torch.no_grad():
        full, none, mean = g(z), g(z, psi=0.0), g.synthesis(g.w_avg.expand(8, -1))
    torch.testing.assert_close(none, mean)
    assert (full - none).abs().mean() > 1e-3


def test_equalized_sln_is_the_same_affine_map_with_a_run_time_gain():
    """equalized: gamma(w) = w (W_stored / sqrt(w_dim))^T + 1, W_stored ~ N(0, 1): the plain SLN's initial
    distribution (std 1/sqrt(w_dim), bias 1), with the weight stored at unit scale for Adam."""
    torch.manual_seed(0)
    sln = SLN(256, 64, equalized=True)
    w = torch.randn(5, 64)
    stored = sln.gamma.weight
    assert abs(stored.std().item() - 1) < 0.02 and torch.all(sln.gamma.bias == 1) and torch.all(sln.beta.bias == 0)
    torch.testing.assert_close(sln.gamma(w), w @ (stored / 8).T + 1)
    h = torch.randn(5, 3, 256)
    mu, sigma = h.mean(-1, keepdim=True), (h.var(-1, unbiased=False, keepdim=True) + sln.eps).sqrt()
    expected = sln.gamma(w)[:, None] * (h - mu) / sigma + sln.beta(w)[:, None]
    torch.testing.assert_close(sln(h, w), expected, rtol=1e-5, atol=1e-5)
