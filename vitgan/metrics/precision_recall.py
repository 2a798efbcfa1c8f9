"""Improved precision and recall (Kynkaanniemi et al. 2019) from k-nearest-neighbour balls in feature space."""

from __future__ import annotations

import numpy as np
import torch


def _knn_radii(features: torch.Tensor, k: int, block: int) -> torch.Tensor:
    """Distance from each feature to its k-th nearest other feature of the same set."""
    radii = []
    for start in range(0, len(features), block):
        d = torch.cdist(features[start:start + block], features)  # (b, N); the point itself is at distance 0
        radii.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def _coverage(queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor, block: int) -> float:
    """The fraction of queries inside at least one ball (support_i, radii_i)."""
    inside = []
    for start in range(0, len(queries), block):
        d = torch.cdist(queries[start:start + block], support)  # (b, M)
        inside.append((d <= radii[None]).any(dim=1))
    return torch.cat(inside).double().mean().item()


def precision_recall(real: np.ndarray, fake: np.ndarray, *, k: int = 3, block: int = 1000) -> tuple[float, float]:
    """Precision: the fraction of generated features within the k-NN ball of some real feature.
    Recall: the fraction of real features within the k-NN ball of some generated feature."""
    real_t = torch.as_tensor(np.asarray(real, np.float32))
    fake_t = torch.as_tensor(np.asarray(fake, np.float32))
    if min(len(real_t), len(fake_t)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples per set")
    precision = _coverage(fake_t, real_t, _knn_radii(real_t, k, block), block)
    recall = _coverage(real_t, fake_t, _knn_radii(fake_t, k, block), block)
    return precision, recall
