"""DiffAugment ops: shapes, gradients, identity at p = 0, and what each op does to pixels."""

import pytest
import torch

from vitgan.config import AUGMENT_OPS
from vitgan.training.augment import AUGMENTS, cutout, diff_augment, parse_policy, shift


@pytest.mark.parametrize("name", list(AUGMENTS))
def test_op_keeps_shape_and_passes_gradients(name):
    x = torch.randn(6, 3, 16, 16, requires_grad=True)
    y = AUGMENTS[name](x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_identity_at_probability_zero():
    x = torch.randn(5, 1, 8, 8, requires_grad=True)
    y = diff_augment(x, "color,translation,cutout,scale", p=0.0)
    assert torch.equal(y, x)
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_probability_is_per_sample():
    torch.manual_seed(0)
    x = torch.randn(2000, 1, 4, 4)
    y = diff_augment(x, "color", p=0.3)
    changed = (y - x).abs().amax(dim=(1, 2, 3)) > 0
    assert abs(changed.float().mean().item() - 0.3) < 0.04


def test_shift_moves_pixels_and_fills_zero():
    x = torch.arange(1, 17, dtype=torch.float32).reshape(1, 1, 4, 4)
    y = shift(x, torch.tensor([1]), torch.tensor([-2]))  # down 1, left 2
    expected = torch.tensor([[0, 0, 0, 0], [3, 4, 0, 0], [7, 8, 0, 0], [11, 12, 0, 0]], dtype=torch.float32)
    assert torch.equal(y[0, 0], expected)


def test_cutout_zeroes_a_square_of_the_given_ratio():
    x = torch.ones(200, 1, 16, 16)
    y = cutout(x, torch.Generator().manual_seed(1), ratio=0.5)
    zeros = (y == 0).sum(dim=(1, 2, 3))
    assert zeros.max() == 64  # an 8x8 square when it lies inside the image
    assert zeros.min() > 0 and (zeros < 64).any()  # and clipped at the border


def test_color_is_brightness_saturation_contrast():
    """A gray (one-channel) image: saturation is the identity, so y = (x + b - m) * c + m with m the mean of x + b."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 1, 5, 5)
    y = AUGMENTS["color"](x, g)
    g = torch.Generator().manual_seed(3)
    b = torch.rand(4, 1, 1, 1, generator=g) - 0.5
    torch.rand(4, 1, 1, 1, generator=g)  # saturation factor, no effect on one channel
    c = torch.rand(4, 1, 1, 1, generator=g) + 0.5
    shifted = x + b
    m = shifted.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(y, (shifted - m) * c + m)


def test_policy_parsing():
    assert parse_policy("color, translation") == ["color", "translation"]
    assert parse_policy("") == []
    with pytest.raises(ValueError, match="unknown augmentation 'flip'"):
        parse_policy("color,flip")
    assert tuple(AUGMENTS) == AUGMENT_OPS  # the ops Config accepts are exactly the ops implemented
