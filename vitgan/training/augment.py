"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to real and fake images before D.

Pure functions chosen by a policy string, e.g. `diff_augment(x, "color,translation,cutout,scale", p=0.8)`. Each
named op is applied to each sample independently with probability p; its random parameters are drawn from
`generator` (a torch.Generator, so runs and resumes are reproducible; or a `Draws`, for one shard of a batch split
over ranks). Gradients pass through every op.
Regions an op leaves uncovered (translation, cutout, zoom-out) are filled with 0, the middle of [-1, 1], as in the
reference DiffAugment.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from vitgan.config import parse_policy


class Draws:
    """Random numbers for rows [start, start + n) of a batch of `total` samples (default: the whole batch of n).

    Each draw is made for all `total` rows from `generator` and the shard's rows are kept, so a sample gets the same
    numbers however the batch is split over ranks: a batch of 2B on one process equals two shards of B.
    """

    def __init__(self, generator: torch.Generator | None = None, *, start: int = 0, total: int | None = None) -> None:
        self.generator, self.start, self.total = generator, start, total

    def _rows(self, t: torch.Tensor, n: int) -> torch.Tensor:
        return t[self.start:self.start + n]

    def rand(self, n: int, *tail: int) -> torch.Tensor:
        return self._rows(torch.rand((self.total or n, *tail), generator=self.generator), n)

    def randn(self, n: int, *tail: int) -> torch.Tensor:
        return self._rows(torch.randn((self.total or n, *tail), generator=self.generator), n)

    def randint(self, low: int, high: int, n: int) -> torch.Tensor:
        return self._rows(torch.randint(low, high, (self.total or n,), generator=self.generator), n)


Randomness = torch.Generator | Draws | None  # where an op's random parameters come from (None: torch's global RNG)


def as_draws(generator: Randomness) -> Draws:
    return generator if isinstance(generator, Draws) else Draws(generator)


def _uniform(shape: tuple[int, ...], generator: Randomness, like: torch.Tensor) -> torch.Tensor:
    return as_draws(generator).rand(*shape).to(device=like.device, dtype=like.dtype)


def color(x: torch.Tensor, generator: Randomness = None) -> torch.Tensor:
    """Brightness (+U(-0.5, 0.5)), saturation (x U(0, 2) around the channel mean), contrast (x U(0.5, 1.5))."""
    b = x.shape[0]
    x = x + (_uniform((b, 1, 1, 1), generator, x) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_uniform((b, 1, 1, 1), generator, x) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform((b, 1, 1, 1), generator, x) + 0.5) + mean


def shift(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Translate each sample by integer pixels (dy[i], dx[i]), filling with 0: out[i, :, y, x] = x[i, :, y-dy, x-dx]."""
    b, _, h, w = x.shape
    ys = torch.arange(h, device=x.device)[None, :] - dy.to(x.device)[:, None]  # (B, H): source rows
    xs = torch.arange(w, device=x.device)[None, :] - dx.to(x.device)[:, None]  # (B, W)
    inside = ((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :]  # (B, H, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    moved = x[batch, :, ys.clamp(0, h - 1)[:, :, None], xs.clamp(0, w - 1)[:, None, :]]  # (B, H, W, C)
    return moved.permute(0, 3, 1, 2) * inside[:, None].to(x.dtype)


def translation(x: torch.Tensor, generator: Randomness = None, ratio: float = 0.125) -> torch.Tensor:
    """Shift by up to `ratio` of the image size in each direction (integers, uniform), zero fill."""
    b, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    draws = as_draws(generator)
    dy, dx = draws.randint(-sy, sy + 1, b), draws.randint(-sx, sx + 1, b)
    return shift(x, dy, dx)


def cutout(x: torch.Tensor, generator: Randomness = None, ratio: float = 0.5) -> torch.Tensor:
    """Zero a square of side `ratio` of the image, centred anywhere in the image (clipped at the border)."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    draws = as_draws(generator)
    cy = draws.randint(0, h + (1 - ch % 2), b).to(x.device)
    cx = draws.randint(0, w + (1 - cw % 2), b).to(x.device)
    ys = torch.arange(h, device=x.device)[None, :] - (cy[:, None] - ch // 2)  # (B, H): row inside the square
    xs = torch.arange(w, device=x.device)[None, :] - (cx[:, None] - cw // 2)
    inside = ((ys >= 0) & (ys < ch))[:, :, None] & ((xs >= 0) & (xs < cw))[:, None, :]  # (B, H, W)
    return x * (~inside)[:, None].to(x.dtype)


def scale(x: torch.Tensor, generator: Randomness = None, std: float = 0.2) -> torch.Tensor:
    """Isotropic zoom by 2^N(0, std^2) about the centre (bilinear), zero fill; as in ADA's geometric scaling."""
    b = x.shape[0]
    factor = torch.exp2(as_draws(generator).randn(b) * std).to(device=x.device, dtype=x.dtype)
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / factor  # output pixel (u, v) samples input at (u, v) / factor
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# the ops Config's `augment` may name (config.AUGMENT_OPS, the same names in the same order: tests/test_augment.py)
AUGMENTS: dict[str, Callable[..., torch.Tensor]] = {
    "color": color,
    "translation": translation,
    "cutout": cutout,
    "scale": scale,
}


def diff_augment(x: torch.Tensor, policy: str, p: float = 0.8,
                 generator: Randomness = None) -> torch.Tensor:
    """Apply each op of `policy` in order, to each sample independently with probability p."""
    draws = as_draws(generator)
    for name in parse_policy(policy):
        if p <= 0:
            break
        chosen = (draws.rand(x.shape[0]) < p).to(x.device)
        augmented = AUGMENTS[name](x, draws)
        x = torch.where(chosen[:, None, None, None], augmented, x)
    return x
