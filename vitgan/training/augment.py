"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to real and fake images before D.

Pure functions chosen by a policy string, e.g. `diff_augment(x, "color,translation,cutout:0.3", p=0.8)`. Each
named op is applied to each sample independently with its own probability (`cutout:0.3`) or p; its random
parameters are drawn from `generator` (a torch.Generator, so runs and resumes are reproducible; or a `Draws`, for one
shard of a batch split over ranks). Gradients pass through every op.
Regions an op leaves uncovered (translation, cutout, zoom-out) are filled with 0, the middle of [-1, 1], as in the
reference DiffAugment (`fill="zero"`), or from the image itself (`reflect`, `edge`): on black-background digits a
zero fill is a grey band that real images never have.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from vitgan.config import parse_policy
from vitgan.training.device import to_device


class Draws:
    """Random numbers for rows [start, start + n) of a batch of `total` samples (default: the whole batch of n), on
    `device` (default: the host's).

    Each draw is made for all `total` rows from `generator` (a host generator) and the shard's rows are kept, so a
    sample gets the same numbers however the batch is split over ranks and whichever device it trains on: a batch of
    2B on one process equals two shards of B. They reach `device` without a host sync (`to_device`).
    """

    def __init__(self, generator: torch.Generator | None = None, *, start: int = 0, total: int | None = None,
                 device: torch.device | None = None) -> None:
        self.generator, self.start, self.total, self.device = generator, start, total, device

    def _rows(self, t: torch.Tensor, n: int) -> torch.Tensor:
        return to_device(t[self.start:self.start + n], self.device)

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


Fill = Literal["zero", "reflect", "edge"]


def brightness(x: torch.Tensor, generator: Randomness = None) -> torch.Tensor:
    """x + U(-0.5, 0.5) per sample."""
    return x + (_uniform((x.shape[0], 1, 1, 1), generator, x) - 0.5)


def saturation(x: torch.Tensor, generator: Randomness = None) -> torch.Tensor:
    """(x - m) * U(0, 2) + m per sample, m the mean over the channels of each pixel (identity on one channel)."""
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_uniform((x.shape[0], 1, 1, 1), generator, x) * 2) + mean


def contrast(x: torch.Tensor, generator: Randomness = None) -> torch.Tensor:
    """(x - m) * U(0.5, 1.5) + m per sample, m the mean of the whole image."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform((x.shape[0], 1, 1, 1), generator, x) + 0.5) + mean


def color(x: torch.Tensor, generator: Randomness = None) -> torch.Tensor:
    """Brightness, saturation and contrast together, as one op (the reference DiffAugment's `color`)."""
    return contrast(saturation(brightness(x, generator), generator), generator)


def xflip(x: torch.Tensor, generator: Randomness = None) -> torch.Tensor:
    """Mirror left-right (chosen per sample by the op's probability, like every op)."""
    return x.flip(-1)


def _source_index(index: torch.Tensor, size: int, fill: Fill) -> tuple[torch.Tensor, torch.Tensor]:
    """Where an output pixel reads from when `index` may fall outside [0, size): the in-range index to read and
    whether the read is kept (False: the pixel is filled with 0). `reflect` mirrors about the edge pixel, without
    repeating it (as F.pad's "reflect"); `edge` repeats the edge pixel."""
    inside = (index >= 0) & (index < size)
    if fill == "reflect":
        period = max(2 * (size - 1), 1)
        index = index % period  # in [0, period): the mirrored pattern repeats every 2 (size - 1) pixels
        index = torch.where(index < size, index, period - index)
        return index, torch.ones_like(inside)
    return index.clamp(0, size - 1), inside if fill == "zero" else torch.ones_like(inside)


def shift(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, fill: Fill = "zero") -> torch.Tensor:
    """Translate each sample by integer pixels: out[i, :, y, x] = x[i, :, y-dy[i], x-dx[i]]; what comes in from
    outside the image is 0 (`zero`), the mirror image (`reflect`) or the edge pixel repeated (`edge`)."""
    b, _, h, w = x.shape
    ys, keep_y = _source_index(torch.arange(h, device=x.device)[None, :] - dy.to(x.device)[:, None], h, fill)
    xs, keep_x = _source_index(torch.arange(w, device=x.device)[None, :] - dx.to(x.device)[:, None], w, fill)
    batch = torch.arange(b, device=x.device)[:, None, None]
    moved = x[batch, :, ys[:, :, None], xs[:, None, :]]  # (B, H, W, C)
    keep = keep_y[:, :, None] & keep_x[:, None, :]  # (B, H, W)
    return moved.permute(0, 3, 1, 2) * keep[:, None].to(x.dtype)


def translation(x: torch.Tensor, generator: Randomness = None, ratio: float = 0.125, fill: Fill = "zero"
                ) -> torch.Tensor:
    """Shift by up to `ratio` of the image size in each direction (integers, uniform)."""
    b, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    draws = as_draws(generator)
    dy, dx = draws.randint(-sy, sy + 1, b), draws.randint(-sx, sx + 1, b)
    return shift(x, dy, dx, fill)


def border_mean(x: torch.Tensor) -> torch.Tensor:
    """Each image's mean over its one-pixel border, per channel: (B, C, 1, 1) (the background, on digits -1)."""
    total = x[..., 0, :].sum(-1) + x[..., -1, :].sum(-1) + x[..., 1:-1, 0].sum(-1) + x[..., 1:-1, -1].sum(-1)
    count = 2 * x.shape[-1] + 2 * (x.shape[-2] - 2)
    return (total / count)[..., None, None]


def cutout(x: torch.Tensor, generator: Randomness = None, ratio: float = 0.5, fill: Fill = "zero") -> torch.Tensor:
    """Erase a square of side `ratio` of the image, centred anywhere in the image (clipped at the border): with 0
    (`zero`), or with the image's border mean (`reflect`, `edge`: the background the geometric ops bring in)."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    draws = as_draws(generator)
    cy = draws.randint(0, h + (1 - ch % 2), b).to(x.device)
    cx = draws.randint(0, w + (1 - cw % 2), b).to(x.device)
    ys = torch.arange(h, device=x.device)[None, :] - (cy[:, None] - ch // 2)  # (B, H): row inside the square
    xs = torch.arange(w, device=x.device)[None, :] - (cx[:, None] - cw // 2)
    inside = ((ys >= 0) & (ys < ch))[:, :, None] & ((xs >= 0) & (xs < cw))[:, None, :]  # (B, H, W)
    if fill == "zero":
        return x * (~inside)[:, None].to(x.dtype)
    return torch.where(inside[:, None], border_mean(x), x)


def scale(x: torch.Tensor, generator: Randomness = None, std: float = 0.2, fill: Fill = "zero") -> torch.Tensor:
    """Isotropic zoom by 2^N(0, std^2) about the centre (bilinear), as in ADA's geometric scaling; a zoom-out fills
    with 0, the mirror image or the edge pixels (grid_sample's zeros, reflection, border)."""
    b = x.shape[0]
    factor = torch.exp2(as_draws(generator).randn(b) * std).to(device=x.device, dtype=x.dtype)
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / factor  # output pixel (u, v) samples input at (u, v) / factor
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    padding = {"zero": "zeros", "reflect": "reflection", "edge": "border"}[fill]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


# the ops Config's `augment` may name (config.AUGMENT_OPS, the same names in the same order: tests/test_augment.py)
AUGMENTS: dict[str, Callable[..., torch.Tensor]] = {
    "color": color,
    "brightness": brightness,
    "saturation": saturation,
    "contrast": contrast,
    "translation": translation,
    "xflip": xflip,
    "cutout": cutout,
    "scale": scale,
}
FILLED = {"translation", "cutout", "scale"}  # the ops that take a `fill`


def diff_augment(x: torch.Tensor, policy: str, p: float = 0.8, generator: Randomness = None,
                 fill: Fill = "zero") -> torch.Tensor:
    """Apply each op of `policy` in order, to each sample independently with its probability (`op:p` in the policy,
    else `p`); translation, cutout and scale fill with `fill`."""
    draws = as_draws(generator)
    for name, op_p in parse_policy(policy):
        op_p = p if op_p is None else op_p
        if op_p <= 0:
            continue
        chosen = (draws.rand(x.shape[0]) < op_p).to(x.device)
        op = AUGMENTS[name]
        augmented = op(x, draws, fill=fill) if name in FILLED else op(x, draws)
        x = torch.where(chosen[:, None, None, None], augmented, x)
    return x
