"""Improved spectral normalisation: W_ISN = sigma(W_init) * W / sigma(W) (paper, Eq. 4)."""

import torch

from vitgan.nn import ISNLinear, SNLinear


def _converge(layer, steps=300):
    layer.train()
    x = torch.randn(4, layer.in_features)
    for _ in range(steps):  # one power-iteration step per training forward
        layer(x)


def _largest_singular_value(w):
    return torch.linalg.svdvals(w.detach().double())[0].item()


def test_isn_keeps_the_initial_spectral_norm():
    torch.manual_seed(0)
    layer = ISNLinear(48, 32)
    raw = layer.parametrizations.weight.original
    sigma_init = _largest_singular_value(raw)
    _converge(layer)
    assert abs(_largest_singular_value(layer.weight) - sigma_init) < 1e-3 * sigma_init
    # the effective weight is the raw weight rescaled, W * sigma(W_init) / sigma(W)
    torch.testing.assert_close(layer.weight, raw * sigma_init / _largest_singular_value(raw), rtol=1e-3, atol=1e-5)


def test_isn_after_the_raw_weight_changes():
    torch.manual_seed(1)
    layer = ISNLinear(40, 40)
    raw = layer.parametrizations.weight.original
    sigma_init = _largest_singular_value(raw)
    with torch.no_grad():
        raw.mul_(5.0).add_(torch.randn_like(raw))  # as an optimiser would, by a lot
    assert abs(_largest_singular_value(raw) - sigma_init) > 0.5 * sigma_init
    _converge(layer)
    assert abs(_largest_singular_value(layer.weight) - sigma_init) < 1e-3 * sigma_init


def test_isn_initial_norm_is_not_frozen_small():
    """Xavier init: sigma(W_init) is O(1), not ~0.45 as with the ViT default std 0.02 (SPEC.md pitfall)."""
    torch.manual_seed(2)
    layer = ISNLinear(384, 384)
    assert _largest_singular_value(layer.parametrizations.weight.original) > 1.0


def test_power_iteration_vector_is_a_buffer_updated_only_in_training():
    torch.manual_seed(3)
    layer = ISNLinear(16, 8)
    keys = [k for k in layer.state_dict() if k.endswith("_u")]
    assert keys, "the power-iteration vector must be in state_dict"
    u = layer.state_dict()[keys[0]].clone()
    layer.eval()
    layer(torch.randn(2, 16))
    torch.testing.assert_close(layer.state_dict()[keys[0]], u)
    with torch.no_grad():
        layer.parametrizations.weight.original.add_(torch.randn(8, 16))
    layer.train()
    layer(torch.randn(2, 16))
    assert not torch.allclose(layer.state_dict()[keys[0]], u)


def test_isn_state_round_trips_through_state_dict():
    torch.manual_seed(4)
    a, b = ISNLinear(12, 6), ISNLinear(12, 6)
    _converge(a, 5)
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    x = torch.randn(3, 12)
    torch.testing.assert_close(a(x), b(x))


def test_plain_sn_has_unit_spectral_norm():
    torch.manual_seed(5)
    layer = SNLinear(30, 20)
    _converge(layer)
    assert abs(_largest_singular_value(layer.weight) - 1.0) < 1e-3


def test_isn_in_training_costs_one_matrix_vector_power_step_per_layer_and_no_decomposition(monkeypatch):
    """After construction, a training forward+backward of the ViTGAN D runs no SVD/eigen/matrix norm: only the
    power iteration's matrix-vector products (one step per ISN layer per forward)."""
    from vitgan import presets
    from vitgan.networks import build_discriminator

    cfg = presets.get("mnist", d_dim=32, d_depth=1, d_heads=2, d_mlp_dim=64)
    d = build_discriminator(cfg).train()
    layers = [m for m in d.modules() if isinstance(m, ISNLinear)]

    def forbidden(*args, **kwargs):
        raise AssertionError("a matrix decomposition ran during training")

    for name in ("svd", "svdvals", "matrix_norm", "eigh", "eigvalsh", "norm"):
        monkeypatch.setattr(torch.linalg, name, forbidden)
    calls = []
    real_mv = torch.mv
    monkeypatch.setattr(torch, "mv", lambda *a, **k: calls.append(1) or real_mv(*a, **k))
    d(torch.rand(3, 1, 32, 32)).sum().backward()
    # torch's spectral_norm: u <- normalize(W v), v <- normalize(W^T u), sigma = u . (W v): three products per layer
    assert len(calls) == 3 * len(layers)


def test_sigma_reparam_is_isn_with_a_learned_gain():
    """W_hat = gamma * W / sigma(W), gamma a learned scalar starting at sigma(W_init) (Zhai et al. 2023)."""
    from vitgan.nn import SigmaReparamLinear

    torch.manual_seed(2)
    layer = SigmaReparamLinear(40, 24)
    raw = layer.parametrizations.weight.original
    gamma = dict(layer.named_parameters())["parametrizations.weight.1.scale"]
    assert abs(gamma.item() - _largest_singular_value(raw)) < 1e-5  # equal to ISN at initialisation
    layer(torch.randn(3, 40)).sum().backward()
    assert gamma.grad is not None and gamma.grad.abs() > 0  # the optimiser trains it
    with torch.no_grad():
        gamma.fill_(3.0)
    _converge(layer)
    assert abs(_largest_singular_value(layer.weight) - 3.0) < 3e-3
    torch.testing.assert_close(layer.weight, raw * 3.0 / _largest_singular_value(raw), rtol=1e-3, atol=1e-5)
