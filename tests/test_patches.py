"""Overlapping patches of the discriminator: side P + 2o, stride P, zero padding o, o = P/2."""

import pytest
import torch
import torch.nn.functional as F

from vitgan import presets
from vitgan.networks import Discriminator
from vitgan.nn import image_patches


@pytest.mark.parametrize("patch,overlap,size,channels", [(4, 2, 32, 3), (8, 4, 64, 3), (4, 0, 32, 1), (2, 1, 8, 2)])
def test_patches_equal_unfold_reference(patch, overlap, size, channels):
    x = torch.randn(2, channels, size, size)
    ref = F.unfold(x, kernel_size=patch + 2 * overlap, stride=patch, padding=overlap).transpose(1, 2)
    out = image_patches(x, patch, overlap)
    assert out.shape == (2, (size // patch) ** 2, channels * (patch + 2 * overlap) ** 2)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_patch_covers_half_a_patch_beyond_each_edge():
    patch, o = 4, 2
    x = torch.arange(16 * 16, dtype=torch.float32).reshape(1, 1, 16, 16)
    padded = torch.zeros(1, 1, 20, 20)
    padded[..., o:o + 16, o:o + 16] = x
    tokens = image_patches(x, patch, o)
    for i, j in [(0, 0), (1, 2), (3, 3)]:
        # token (i, j) covers image rows i*P - o .. i*P + P + o (exclusive), zeros outside the image
        expected = padded[0, 0, i * patch:i * patch + patch + 2 * o, j * patch:j * patch + patch + 2 * o]
        torch.testing.assert_close(tokens[0, i * 4 + j], expected.reshape(-1))


@pytest.mark.parametrize("name", presets.names())
def test_discriminator_token_count(name):
    cfg = presets.get(name)
    d = Discriminator(cfg)
    assert d.pos_embed.shape[1] == (cfg.resolution // cfg.d_patch) ** 2 + 1  # (H/P)^2 patches + the class token
    side = cfg.d_patch + 2 * (cfg.d_patch // 2)
    assert d.patch_embed.in_features == cfg.channels * side * side


def test_patch_size_must_divide_image():
    with pytest.raises(ValueError, match="patch"):
        image_patches(torch.zeros(1, 1, 10, 10), 4, 2)
