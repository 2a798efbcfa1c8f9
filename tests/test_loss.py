"""Loss terms against their formulas, on fixed tensors."""

import math

import torch

from vitgan import presets
from vitgan.training.loss import consistency_penalty, d_logistic_loss, g_nonsaturating_loss, r1_penalty
from vitgan.training.trainer import ema_beta


def _sigmoid(v):
    return 1 / (1 + math.exp(-v))


def test_logistic_losses():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    expected_d = -(math.log(_sigmoid(2.0)) + math.log(_sigmoid(-1.0))) / 2 - (
        math.log(1 - _sigmoid(0.5)) + math.log(1 - _sigmoid(-3.0))) / 2
    assert abs(d_logistic_loss(real, fake).item() - expected_d) < 1e-6
    expected_g = -(math.log(_sigmoid(0.5)) + math.log(_sigmoid(-3.0))) / 2
    assert abs(g_nonsaturating_loss(fake).item() - expected_g) < 1e-6


def test_bcr_is_mean_squared_logit_difference():
    logits, shifted = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.0, -1.0, 2.5])
    assert abs(consistency_penalty(logits, shifted).item() - (1 + 1 + 4) / 3) < 1e-6


def test_r1_of_a_linear_and_a_quadratic_critic():
    w = torch.randn(1, 2, 3, 3)
    x = torch.randn(4, 2, 3, 3)
    # grad_x = w for every sample
    assert abs(r1_penalty(lambda x: (x * w).sum(dim=(1, 2, 3)), x).item() - w.square().sum().item()) < 1e-4
    expected = (2 * x).square().sum(dim=(1, 2, 3)).mean()  # grad_x of sum(x^2) = 2x
    assert abs(r1_penalty(lambda x: x.square().sum(dim=(1, 2, 3)), x).item() - expected.item()) < 1e-4


def test_r1_keeps_the_cross_sample_terms_of_a_critic_that_mixes_its_batch():
    """As autograd.grad(D(x).sum(), x): a logit that depends on the batch (minibatch std) passes its share of the
    gradient to the other samples."""
    x = torch.randn(3, 1, 2, 2)
    critic = lambda x: x.sum(dim=(1, 2, 3)) * x.mean()  # noqa: E731 - sum_i s_i * m, m the batch mean
    s = x.sum(dim=(1, 2, 3))
    grad = s.sum() / x.numel() + x.mean()  # d/dx_ij of sum_i s_i * m = m + (sum_i s_i) / numel, the same everywhere
    expected = (grad.expand_as(s) ** 2 * 4).mean()  # 4 pixels per sample
    assert abs(r1_penalty(critic, x).item() - expected.item()) < 1e-5


def test_r1_of_a_pacgan_critic_is_the_mean_over_packs_of_the_packs_squared_gradient_norm():
    """With one logit per pack of 2 images, E over D's inputs (the packs) of ||grad D||^2, the norm over the pack's
    images: here D(pack) = a . x1 + 3 * b . x2, so every pack's squared norm is |a|^2 + 9 |b|^2."""
    a, b = torch.randn(1, 1, 2, 2), torch.randn(1, 1, 2, 2)
    critic = lambda x: (x[0::2] * a).sum(dim=(1, 2, 3)) + 3 * (x[1::2] * b).sum(dim=(1, 2, 3))  # noqa: E731
    x = torch.randn(6, 1, 2, 2)
    expected = a.square().sum() + 9 * b.square().sum()
    assert abs(r1_penalty(critic, x).item() - expected.item()) < 1e-4


def test_r1_is_differentiable_for_the_discriminator():
    w = torch.randn(3, requires_grad=True)
    x = torch.randn(5, 3, 1, 1)
    penalty = r1_penalty(lambda x: ((x.squeeze() * w) ** 2).sum(1), x)
    penalty.backward()
    expected = (2 * x.squeeze() * w.detach() ** 2).square().sum(1).mean()  # grad_x = 2 w^2 x
    assert abs(penalty.item() - expected.item()) < 1e-5
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_ema_half_life():
    cfg = presets.get("mnist", ema_kimg=10.0, batch=32, ema_rampup=0.0)
    beta = ema_beta(cfg, 1_000_000)
    assert abs(beta ** (10_000 / 32) - 0.5) < 1e-9  # after ema_kimg thousand images the old weight is halved
    ramped = presets.get("mnist", ema_kimg=10.0, batch=32, ema_rampup=0.05)
    # at 20k images the half-life is min(10k, 0.05 * 20k) = 1k images
    assert abs(ema_beta(ramped, 20_000) ** (1_000 / 32) - 0.5) < 1e-9
