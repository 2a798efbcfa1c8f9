"""Class conditioning: the projection discriminator's class term, and the check of the labels a network is given."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vitgan.nn.spectral import LinearFactory, XavierLinear


def check_labels(c: torch.Tensor | None, classes: int, batch: int, what: str = "c") -> None:
    """Refuse labels that do not fit a network of `classes` classes (0: unconditional, which takes none) and a batch
    of `batch`: one line naming `what`. Only shapes are checked (no sync): the values are checked where labels
    enter (the data's by the Trainer, `--class` by the command line)."""
    if not classes:
        if c is not None:
            raise ValueError(f"{what}: this network is unconditional (cond 0) and takes no class labels")
        return
    if c is None:
        raise ValueError(f"{what}: this network is conditional on {classes} classes: give a label per image")
    if c.shape != (batch,) or c.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{what}: expected integer labels of shape ({batch},), got {c.dtype} {tuple(c.shape)}")


class ClassProjection(nn.Module):
    """The projection discriminator's class term (Miyato and Koyama 2018, Eq. 3): <embed(c), h>, per sample, for D's
    final feature h (B, dim) and labels c (B,). The embedding is a bias-free linear layer of the one-hot label (its
    column c is class c's embedding) built by `linear`, so it has D's normalisation (ISN for the ViT D: the embedding
    matrix's spectral norm held at its initial value, so the Lipschitz bound still holds) and its Xavier
    initialisation (as SNGAN's code, GlorotUniform)."""

    def __init__(self, classes: int, dim: int, linear: LinearFactory = XavierLinear, *, centered: bool = False,
                 gain: float = 1.0) -> None:
        super().__init__()
        self.classes, self.centered, self.gain = classes, centered, gain
        self.embed = linear(classes, dim, bias=False)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """gain * <E[:, c], h>; centered: gain * <E[:, c] - mean_k E[:, k], h> (the one-hot label less 1 / classes)."""
        label = F.one_hot(c, self.classes).to(h.dtype)
        if self.centered:
            label = label - 1.0 / self.classes
        return (self.embed(label) * h).sum(dim=-1) * self.gain
