"""The in-memory training set and the error every data reader raises."""

from __future__ import annotations

from dataclasses import dataclass

import torch


class DataError(ValueError):
    """The training data cannot be used; the message is one line and names the file or the source."""


@dataclass
class ImageData:
    """Images (N, C, H, W) uint8, labels (N,) int64 (-1 where unknown), a short name for run folders, and the name
    of each label 0..K-1 (None when the source does not name its classes, or has no labels)."""

    images: torch.Tensor
    labels: torch.Tensor
    name: str
    classes: list[str] | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        """K, the number of classes: 0 when any image has no label (-1); else len(classes) where the names are
        known, else the largest label + 1."""
        if len(self.labels) == 0 or bool((self.labels < 0).any()):
            return 0
        return len(self.classes) if self.classes is not None else int(self.labels.max()) + 1

    def batch(self, indices: torch.Tensor, *, flip: torch.Tensor | None = None) -> torch.Tensor:
        """The images at `indices` as float in [-1, 1]; those where the boolean `flip` is true mirrored left-right."""
        x = self.images[indices].float() / 127.5 - 1
        if flip is not None:
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return x
