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


def check_class(label: int | None, generator: nn.Module) -> None:
    """Refuse a class that `generator` cannot draw: any class for an unconditional one (cond 0), one outside
    0..cond-1 for a conditional one, and no class for a conditional one: one line."""
    classes = getattr(generator, "cond", 0)
    if label is None:
        if classes:
            raise ConfigError(f"class: this generator is conditional on {classes} classes: choose one with --class "
                              f"(0-{classes - 1}) or draw one row per class with --class-grid")
        return
    if not classes:
        raise ConfigError("class: this generator is unconditional (it was trained without --cond); leave --class out")
    if not 0 <= label < classes:
        raise ConfigError(f"class: {label} is out of range: this generator has classes 0-{classes - 1}")


CLASS_SHEET_SEEDS = range(8)  # a conditional G's sample sheets (per tick, an export's): these seeds across,
CLASS_SHEET_ROWS = 16  # one row for each of its first classes, at most this many


def class_sheet(z_dim: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, labels) of a conditional G's sample sheet: CLASS_SHEET_SEEDS across, one row per class (the first
    CLASS_SHEET_ROWS)."""
    return class_rows(CLASS_SHEET_SEEDS, z_dim, min(classes, CLASS_SHEET_ROWS))


def class_rows(seeds: Sequence[int], z_dim: int, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A grid with one row per class 0..rows-1 and one column per seed (the same z down a column): (z, labels)."""
    z = latents(seeds, z_dim).repeat(rows, 1)
    return z, torch.arange(rows).repeat_interleave(len(seeds))


LABEL_SEED = 3_000_000  # the seed of `label_draws`: the labels a conditional G is measured with


def label_draws(labels: torch.Tensor, count: int, seed: int = LABEL_SEED) -> torch.Tensor:
    """`count` labels for a conditional G's samples that follow the data's label distribution: those of training
    images drawn uniformly (with replacement) with `seed`, from the data's `labels` (N,). The first k of a larger
    draw are the draw of k, so sample i has the same label however many are drawn."""
    index = torch.randint(len(labels), (count,), generator=torch.Generator().manual_seed(seed))
    return labels[index]


def latents(seeds: Sequence[int], z_dim: int) -> torch.Tensor:
    """One z per seed, each from its own torch.Generator: a seed gives the same z whatever the batch it is in."""
    return torch.stack([torch.randn(z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


@torch.no_grad()
def generate(generator: nn.Module, z: torch.Tensor, c: torch.Tensor | None = None, *, psi: float = 1.0,
             batch: int = 32) -> torch.Tensor:
    """Images (N, C, H, W) for latents z (N, z_dim) (and a conditional G's class labels c (N,)), computed `batch`
    at a time on G's device: G's raw output, in [-1, 1] with `g_output` tanh, unbounded with linear (every
    preset's); the PNG writers clamp to [-1, 1]."""
    check_psi(psi)
    device = next(generator.parameters()).device

    def run(i: int) -> torch.Tensor:
        labels = () if c is None else (c[i:i + batch].to(device),)
        return generator(z[i:i + batch].to(device), *labels, psi=psi).float().cpu()

    return torch.cat([run(i) for i in range(0, len(z), batch)])


@torch.no_grad()
def interpolate(generator: nn.Module, seeds: Sequence[int], *, steps: int = 8, psi: float = 1.0,
                label: int | None = None) -> torch.Tensor:
    """For each consecutive pair of seeds, `steps` images along the straight line between their w vectors (a
    conditional G's of class `label`)."""
    check_psi(psi)
    device = next(generator.parameters()).device
    c = None if label is None else torch.full((len(seeds),), label, device=device)
    w = generator.map(latents(seeds, generator.z_dim).to(device), c, psi)
    t = torch.linspace(0, 1, steps, device=device)[None, :, None]
    path = w[:-1, None].lerp(w[1:, None], t).reshape(-1, w.shape[1])  # (pairs * steps, w_dim)
    return torch.cat([generator.synthesis(path[i:i + 64]).float().cpu() for i in range(0, len(path), 64)])


def write_images(generator: nn.Module, seeds: Sequence[int], outdir: Path, *, psi: float = 1.0, batch: int = 32,
                 interpolation_steps: int = 0, label: int | None = None, class_grid: bool = False) -> list[Path]:
    """seedNNNN.png per seed and grid.png; with interpolation_steps, interpolation.png (one row per seed pair). A
    conditional G draws class `label` (then seedNNNN-classK.png), or with `class_grid` one row per class and one
    column per seed (classK-seedNNNN.png). Nothing is written when an argument is bad (a non-finite psi, a class
    the generator cannot draw)."""
    check_psi(psi)
    if not class_grid:
        check_class(label, generator)
    elif label is not None or not getattr(generator, "cond", 0):
        raise ConfigError("class-grid: draws every class of a conditional generator" + (
            ", not with --class" if label is not None else "; this one is unconditional (trained without --cond)"))
    if class_grid:
        z, c = class_rows(seeds, generator.z_dim, generator.cond)
        names = [f"class{k}-seed{s:04d}.png" for k in range(generator.cond) for s in seeds]
    else:
        z = latents(seeds, generator.z_dim)
        c = None if label is None else torch.full((len(seeds),), label)
        names = [f"seed{s:04d}.png" if label is None else f"seed{s:04d}-class{label}.png" for s in seeds]
    images = generate(generator, z, c, psi=psi, batch=batch)
    written = []
    for name, pixels in zip(names, to_uint8(images), strict=True):
        save_png(pixels, outdir / name)
        written.append(outdir / name)
    save_grid(images, outdir / GRID_NAME, nrow=len(seeds) if class_grid else None)
    written.append(outdir / GRID_NAME)
    if interpolation_steps and len(seeds) > 1 and not class_grid:
        frames = interpolate(generator, seeds, steps=interpolation_steps, psi=psi, label=label)
        save_png(grid_array(frames, nrow=interpolation_steps), outdir / INTERPOLATION_NAME)
        written.append(outdir / INTERPOLATION_NAME)
    return written
