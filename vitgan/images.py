"""Image grids and PNG output (Pillow; no torchvision)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vitgan.fileio import atomic_write


def quantize(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) floats, clamped to [-1, 1] (a linear-output G's are unbounded) -> the same as uint8 in [0, 255]
    (rounded): the pixels a PNG would hold."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W), clamped to [-1, 1] -> (B, H, W, C) uint8 in [0, 255]."""
    return quantize(images.cpu()).permute(0, 2, 3, 1).numpy()


def grid_array(images: torch.Tensor, *, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile a batch (B, C, H, W), clamped to [-1, 1], into one (H', W', C) uint8 array, `nrow` images per row."""
    pixels = to_uint8(images)
    count, height, width, channels = pixels.shape
    nrow = nrow or math.ceil(math.sqrt(count))
    rows = math.ceil(count / nrow)
    grid = np.zeros((rows * (height + padding) + padding, nrow * (width + padding) + padding, channels), np.uint8)
    for i, image in enumerate(pixels):
        top, left = padding + (i // nrow) * (height + padding), padding + (i % nrow) * (width + padding)
        grid[top:top + height, left:left + width] = image
    return grid


def save_png(array: np.ndarray, path: str | Path) -> None:
    """Write an (H, W, C) uint8 array as PNG, atomically: a crash never leaves a truncated file at `path`."""
    path = Path(path)
    image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def save_grid(images: torch.Tensor, path: str | Path, *, nrow: int | None = None) -> None:
    save_png(grid_array(images, nrow=nrow), path)
