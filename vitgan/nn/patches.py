"""Cutting images into (overlapping) patches for the ViT discriminator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange


def image_patches(x: torch.Tensor, patch: int, overlap: int = 0) -> torch.Tensor:
    """Patches of side patch + 2*overlap taken with stride `patch`, the image zero-padded by `overlap`.

    (B, C, H, W) -> (B, (H/patch)*(W/patch), C*(patch+2*overlap)^2), tokens in row-major order, each patch flattened
    channel-first (C, kh, kw), as `F.unfold` orders it. With overlap = patch/2 this is the paper's overlapping
    patches: the token grid is the same as with plain patches, and each patch sees half a patch beyond every edge.
    """
    _, _, height, width = x.shape
    if height % patch or width % patch:
        raise ValueError(f"patch: {patch} does not divide the image size {height}x{width}")
    side = patch + 2 * overlap
    padded = F.pad(x, (overlap,) * 4) if overlap else x
    cells = padded.unfold(2, side, patch).unfold(3, side, patch)  # (B, C, H/P, W/P, side, side)
    return rearrange(cells, "b c gh gw kh kw -> b (gh gw) (c kh kw)")
