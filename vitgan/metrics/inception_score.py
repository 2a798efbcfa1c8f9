"""Inception Score (Salimans et al. 2016): exp E_x KL(p(y|x) || p(y)), averaged over splits."""

from __future__ import annotations

import numpy as np


def inception_score(logits: np.ndarray, *, splits: int = 10) -> tuple[float, float]:
    """Mean and standard deviation over `splits` equal parts of exp(mean_x KL(p(y|x) || p(y))), where p(y|x) is the
    softmax of the logits (N, C) and p(y) the mean of p(y|x) within the part."""
    logits = np.asarray(logits, np.float64)
    if len(logits) < splits:
        raise ValueError(f"IS with {splits} splits needs at least {splits} samples, got {len(logits)}")
    log_p = logits - logits.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))  # log softmax, stable
    scores = []
    for part in np.array_split(log_p, splits):
        log_marginal = np.log(np.exp(part).mean(axis=0))
        kl = (np.exp(part) * (part - log_marginal)).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))
