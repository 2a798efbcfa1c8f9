"""A StyleGAN2-style residual CNN discriminator with minibatch standard deviation ("ViTGAN G + CNN D")."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vitgan.config import Config
from vitgan.networks.discriminator import packed_images
from vitgan.nn import ClassProjection, MinibatchStd, check_labels

_GAIN = math.sqrt(2.0)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * _GAIN


class ResidualBlock(nn.Module):
    """conv3x3 -> lrelu -> conv3x3 -> lrelu -> 2x average-pool, plus a pooled 1x1 skip; the sum divided by sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skip(F.avg_pool2d(x, 2))
        x = F.avg_pool2d(_lrelu(self.conv1(_lrelu(self.conv0(x)))), 2)
        return (x + skip) / math.sqrt(2.0)


class CNNDiscriminator(nn.Module):
    """Residual CNN D: fromRGB, residual blocks halving the resolution down to 4x4, minibatch std, conv, 2 FC.

    Channels at resolution r are min(d_cnn_max, d_cnn_base // r); with `cond`, the projection term <embed(c), h> of
    the last hidden feature h is added to the logit (`ClassProjection`). `D(x)` (or `D(x, c)`) returns logits
    (B / d_pack,), one per pack of `d_pack` images stacked along channels (PacGAN).
    """

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg

        def ch(r: int) -> int:
            return max(1, min(cfg.d_cnn_max, cfg.d_cnn_base // r))

        self.from_rgb = nn.Conv2d(cfg.d_pack * cfg.channels, ch(cfg.resolution), 1)
        resolutions = [cfg.resolution // 2**i for i in range(int(math.log2(cfg.resolution)) - 1)]  # R, R/2, ..., 4
        self.blocks = nn.ModuleList(ResidualBlock(ch(r), ch(r // 2)) for r in resolutions[:-1])
        self.mbstd = MinibatchStd(cfg.d_mbstd_group)
        self.conv = nn.Conv2d(ch(4) + 1, ch(4), 3, padding=1)
        self.fc = nn.Linear(ch(4) * 16, ch(4))
        self.out = nn.Linear(ch(4), 1)
        self.projection = ClassProjection(cfg.cond, ch(4), centered=cfg.d_projection == "centered",
                                          gain=cfg.d_projection_gain) if cfg.cond else None

    mixes_samples = True  # the minibatch-std layer makes a sample's logit depend on its batch

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None, segments: int = 1) -> torch.Tensor:
        """Logits (B / d_pack,); with `segments` S, the batch is S batches of B / S images to the minibatch-std
        layer; with `cond`, each image's class label c (B,) adds the projection term of the last hidden feature."""
        x = packed_images(x, self.cfg)
        check_labels(c, self.cfg.cond, x.shape[0])
        h = _lrelu(self.from_rgb(x))
        for block in self.blocks:
            h = block(h)
        h = _lrelu(self.conv(self.mbstd(h, segments)))
        h = _lrelu(self.fc(h.flatten(1)))
        logits = self.out(h).squeeze(-1)
        return logits if self.projection is None else logits + self.projection(h, c)
