"""Latents from seeds, and generating images from a trained generator."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from vitgan.config import ConfigError
from vitgan.images import grid_array, save_grid, save_png, to_uint8

GRID_NAME = "grid.png"  # every seed's image on one sheet
INTERPOLATION_NAME = "interpolation.png"  # one row of frames per pair of consecutive seeds
SHEETS = (GRID_NAME, INTERPOLATION_NAME)  # what write_images writes besides the samples (`eval --gen` skips them)


def parse_seeds(text: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            seeds.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ConfigError(f"seeds: cannot read {text!r}; use a list like 0-63 or 1,5,9") from None
    if not seeds or min(seeds) < 0:
        raise ConfigError(f"seeds: {text!r} gives no non-negative seed")
    return seeds


def check_psi(psi: float) -> None:
    """Refuse a truncation psi that is not a finite number: NaN or inf would turn every w, and every image, to NaN
    (written as black PNGs)."""
    try:
        finite = math.isfinite(float(psi))
    except (TypeError, ValueError):
        finite = False
    if not finite:
        raise ConfigError(f"psi: the truncation must be a finite number (1 = none), got {psi!r}")


def latents(seeds: Sequence[int], z_dim: int) -> torch.Tensor:
    """One z per seed, each from its own torch.Generator: a seed gives the same z whatever the batch it is in."""
    return torch.stack([torch.randn(z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


@torch.no_grad()
def generate(generator: nn.Module, z: torch.Tensor, *, psi: float = 1.0, batch: int = 32) -> torch.Tensor:
    """Images (N, C, H, W) for latents z (N, z_dim), computed `batch` at a time on G's device: G's raw output,
    in [-1, 1] with `g_output` tanh, unbounded with linear (every preset's); the PNG writers clamp to [-1, 1]."""
    check_psi(psi)
    device = next(generator.parameters()).device
    out = [generator(z[i:i + batch].to(device), psi=psi).float().cpu() for i in range(0, len(z), batch)]
    return torch.cat(out)


@torch.no_grad()
def interpolate(generator: nn.Module, seeds: Sequence[int], *, steps: int = 8, psi: float = 1.0) -> torch.Tensor:
    """For each consecutive pair of seeds, `steps` images along the straight line between their w vectors."""
    check_psi(psi)
    device = next(generator.parameters()).device
    w = generator.map(latents(seeds, generator.z_dim).to(device), psi)
    t = torch.linspace(0, 1, steps, device=device)[None, :, None]
    path = w[:-1, None].lerp(w[1:, None], t).reshape(-1, w.shape[1])  # (pairs * steps, w_dim)
    return torch.cat([generator.synthesis(path[i:i + 64]).float().cpu() for i in range(0, len(path), 64)])


def write_images(generator: nn.Module, seeds: Sequence[int], outdir: Path, *, psi: float = 1.0, batch: int = 32,
                 interpolation_steps: int = 0) -> list[Path]:
    """seedNNNN.png per seed and grid.png; with interpolation_steps, interpolation.png (one row per seed pair).
    Nothing is written when an argument is bad (`generate` refuses a non-finite psi before any file)."""
    images = generate(generator, latents(seeds, generator.z_dim), psi=psi, batch=batch)
    written = []
    for seed, pixels in zip(seeds, to_uint8(images), strict=True):
        path = outdir / f"seed{seed:04d}.png"
        save_png(pixels, path)
        written.append(path)
    save_grid(images, outdir / GRID_NAME)
    written.append(outdir / GRID_NAME)
    if interpolation_steps and len(seeds) > 1:
        frames = interpolate(generator, seeds, steps=interpolation_steps, psi=psi)
        save_png(grid_array(frames, nrow=interpolation_steps), outdir / INTERPOLATION_NAME)
        written.append(outdir / INTERPOLATION_NAME)
    return written
