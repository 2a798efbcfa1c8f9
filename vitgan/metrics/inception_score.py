"""Inception Score (Salimans et al. 2016): exp E_x KL(p(y|x) || p(y)), averaged over splits."""

from __future__ import annotations

import numpy as np


def inception_score(logits: np.ndarray, *, splits: int = 10) -> tuple[float, float]:
    """Mean and standard deviation over `splits` parts of exp(mean_x KL(p(y|x) || p(y))), where p(y|x) is the
    softmax of the logits (N, C) and p(y) the mean of p(y|x) within the part.

    Part i holds the rows [i*N//splits, (i+1)*N//splits), as the original IS code (improved-gan), StyleGAN2-ADA and
    torch-fidelity cut them (numpy's array_split would put the remainder in the first parts instead)."""
    logits = np.asarray(logits, np.float64)
    if len(logits) < splits:
        raise ValueError(f"IS with {splits} splits needs at least {splits} samples, got {len(logits)}")
    log_p = logits - logits.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))  # log softmax, stable
    scores = []
    n = len(log_p)
    for i in range(splits):
        part = log_p[i * n // splits:(i + 1) * n // splits]
        log_marginal = np.log(np.exp(part).mean(axis=0))
        kl = (np.exp(part) * (part - log_marginal)).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))
