"""DiffAugment ops: shapes, gradients, identity at p = 0, and what each op does to pixels."""

import pytest
import torch
import torch.nn.functional as F

from vitgan.config import AUGMENT_OPS
from vitgan.training.augment import AUGMENTS, border_mean, cutout, diff_augment, parse_policy, shift


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
    assert parse_policy("color, translation") == [("color", None), ("translation", None)]
    assert parse_policy("color,cutout:0.3") == [("color", None), ("cutout", 0.3)]
    assert parse_policy("") == []
    with pytest.raises(ValueError, match="unknown augmentation 'flip'"):
        parse_policy("color,flip")
    assert tuple(AUGMENTS) == AUGMENT_OPS  # the ops Config accepts are exactly the ops implemented
    with pytest.raises(ValueError, match=r"'cutout:1.5': the probability must be in \[0, 1\]"):
        parse_policy("cutout:1.5")
    with pytest.raises(ValueError, match="'cutout:x': the probability after ':' must be a number"):
        parse_policy("cutout:x")


def _changed(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (y - x).abs().amax(dim=(1, 2, 3)) > 0


def test_an_op_with_its_own_probability_ignores_the_policy_wide_one():
    torch.manual_seed(0)
    x = torch.rand(4000, 1, 8, 8) + 1  # no pixel is 0, so every cutout changes the image
    assert abs(_changed(x, diff_augment(x, "cutout:0.3", p=0.9)).float().mean().item() - 0.3) < 0.03
    assert abs(_changed(x, diff_augment(x, "cutout", p=0.9)).float().mean().item() - 0.9) < 0.03


def test_colour_sub_ops_each_toss_their_own_coin():
    """`color` is one coin for brightness, saturation and contrast together (untouched with probability 1 - p); the
    three as separate ops each toss their own (all three skipped with probability (1 - p)^3), as the authors' code."""
    torch.manual_seed(0)
    x = torch.randn(20000, 3, 4, 4)
    untouched_one = (~_changed(x, diff_augment(x, "color", p=0.5))).float().mean().item()
    untouched_three = (~_changed(x, diff_augment(x, "brightness,saturation,contrast", p=0.5))).float().mean().item()
    assert abs(untouched_one - 0.5) < 0.02 and abs(untouched_three - 0.125) < 0.015


def test_color_is_the_three_sub_ops_in_order():
    x = torch.randn(4, 3, 5, 5)
    g = torch.Generator().manual_seed(2)
    expected = AUGMENTS["contrast"](AUGMENTS["saturation"](AUGMENTS["brightness"](x, g), g), g)
    torch.testing.assert_close(AUGMENTS["color"](x, torch.Generator().manual_seed(2)), expected)


def test_xflip_mirrors_left_right():
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    assert torch.equal(AUGMENTS["xflip"](x), torch.tensor([[[[2.0, 1, 0], [5, 4, 3]]]]))


@pytest.mark.parametrize(("fill", "pad_mode"), [("reflect", "reflect"), ("edge", "replicate")])
@pytest.mark.parametrize(("dy", "dx"), [(1, -2), (-3, 3), (0, 4)])
def test_shift_fills_from_the_image_as_padding_does(fill, pad_mode, dy, dx):
    """out[y, x] = in[y - dy, x - dx] read from the image padded by F.pad's reflect / replicate modes."""
    x = torch.randn(1, 2, 6, 7)
    padded = F.pad(x, (4, 4, 4, 4), mode=pad_mode)
    expected = padded[..., 4 - dy:4 - dy + 6, 4 - dx:4 - dx + 7]
    assert torch.equal(shift(x, torch.tensor([dy]), torch.tensor([dx]), fill), expected)


def test_border_mean_and_cutout_fill():
    x = torch.zeros(1, 1, 4, 5)
    x[..., 0, :] = 1.0  # top row of 5 ones; the border has 2 * 5 + 2 * 2 = 14 pixels
    torch.testing.assert_close(border_mean(x), torch.full((1, 1, 1, 1), 5 / 14))
    digits = -torch.ones(50, 1, 16, 16)
    digits[:, :, 4:12, 4:12] = 1.0  # a white stroke on black
    erased = cutout(digits, torch.Generator().manual_seed(0), fill="edge")
    assert set(erased.unique().tolist()) <= {-1.0, 1.0}  # erased with the black background, not grey 0
    assert (erased != digits).any()
    assert (cutout(digits, torch.Generator().manual_seed(0)) == 0).any()  # the default zero fill
