"""Kernel Inception Distance (Binkowski et al. 2018): an unbiased MMD^2 estimate with a cubic polynomial kernel."""

from __future__ import annotations

import numpy as np


def kernel_inception_distance(real: np.ndarray, fake: np.ndarray, *, num_subsets: int = 100,
                              max_subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Mean and standard deviation over random subsets of the unbiased MMD^2 between feature sets (N, D).

    Kernel k(x, y) = (x.y / D + 1)^3. Per subset of m real and m generated features (m = min(sizes,
    max_subset_size), drawn without replacement):
    MMD^2 = sum_{i != j} [k(x_i, x_j) + k(y_i, y_j)] / (m (m - 1)) - 2 sum_{i, j} k(x_i, y_j) / m^2.
    """
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    dim = real.shape[1]
    m = min(len(real), len(fake), max_subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(real)} real and {len(fake)} generated")
    rng = np.random.default_rng(seed)
    estimates = np.empty(num_subsets)
    for s in range(num_subsets):
        x = fake[rng.choice(len(fake), m, replace=False)]
        y = real[rng.choice(len(real), m, replace=False)]
        within = (x @ x.T / dim + 1) ** 3 + (y @ y.T / dim + 1) ** 3
        across = (x @ y.T / dim + 1) ** 3
        estimates[s] = (within.sum() - np.trace(within)) / (m * (m - 1)) - 2 * across.sum() / m**2
    return float(estimates.mean()), float(estimates.std())
