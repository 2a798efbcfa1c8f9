"""The in-memory training set and the error every data reader raises."""

from __future__ import annotations

from dataclasses import dataclass

import torch


class DataError(ValueError):
    """The training data cannot be used; the message is one line and names the file or the source."""


@dataclass
class ImageData:
    """Images (N, C, H, W) uint8, labels (N,) int64 (-1 where unknown), and a short name for run folders."""

    images: torch.Tensor
    labels: torch.Tensor
    name: str

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, indices: torch.Tensor, *, flip: torch.Tensor | None = None) -> torch.Tensor:
        """The images at `indices` as float in [-1, 1]; those where the boolean `flip` is true mirrored left-right."""
        x = self.images[indices].float() / 127.5 - 1
        if flip is not None:
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return x
