"""Modes of StackedMNIST: how many of its 1,000 digit triples a generator's images cover, and the KL divergence of
their distribution from the data's, uniform (docs/metrics.md, "Modes (StackedMNIST)").

The protocol of Metz et al. 2017 (Unrolled GAN), Srivastava et al. 2017 (VEEGAN) and Lin et al. 2018 (PacGAN,
Sec. 5), whose two columns R3GAN (Huang et al. 2024, Table 2) reports too: each channel of an RGB image is classified
on its own, here by the shipped digit classifier (digits.py), its class the argmax (no confidence threshold); the
image's mode is 100 c_R + 10 c_G + c_B. `modes` counts the modes with at least one sample; `kl` is
KL(p_gen || p_data) = sum over the modes with p_gen > 0 of p_gen log(p_gen / (1/1000)), natural log, p_data uniform.
`confidence`, the classifier's mean top probability over channels and samples, says how legible the digits are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vitgan.config import ConfigError
from vitgan.images import quantize
from vitgan.metrics.digits import DigitClassifier, DigitFID, classify, load_classifier

MODES = 1000  # 10 digits in each of 3 channels
PLACES = np.array([100, 10, 1])  # a mode's decimal digits: R, G, B


def channel_digits(images: torch.Tensor) -> torch.Tensor:
    """Each channel of (N, 3, 32, 32) or (N, 3, 28, 28) images (uint8, or float in [-1, 1], quantised as a PNG
    would hold them) as a (3N, 1, 32, 32) uint8 digit, sample by sample (R, G, B); 28x28 zero-padded by 2, as the
    data is. Other shapes raise ConfigError naming the shape."""
    if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) not in ((32, 32), (28, 28)):
        shape = "x".join(map(str, images.shape[1:]))
        raise ConfigError(f"metrics: modes needs 3-channel 32x32 (or 28x28) images, got {shape}")
    pixels = images if images.dtype == torch.uint8 else quantize(images)
    if pixels.shape[-1] == 28:
        pixels = F.pad(pixels, (2, 2, 2, 2))
    return pixels.reshape(-1, 1, 32, 32)


def mode_histogram(probs: np.ndarray) -> np.ndarray:
    """The samples in each of the 1,000 modes (1000,), from the class probabilities (N, 3, 10) of each sample's R,
    G and B channels: its mode is 100 c_R + 10 c_G + c_B, each c the argmax."""
    return np.bincount(mode_of(probs), minlength=MODES)


def mode_of(probs: np.ndarray) -> np.ndarray:
    """Each sample's mode, 100 R + 10 G + B of its channels' most probable digits, from probabilities (N, 3, 10)."""
    return probs.argmax(axis=2) @ PLACES


def score_modes(counts: np.ndarray) -> dict[str, Any]:
    """`modes`: the modes with at least one sample; `kl`: KL(p_gen || uniform) = sum over p_gen > 0 of
    p_gen ln(p_gen / (1/1000)), from the samples in each mode (`mode_histogram`)."""
    p = counts[counts > 0] / counts.sum()
    return {"modes": int((counts > 0).sum()), "kl": float((p * np.log(p * MODES)).sum())}


def mode_measures(probs: np.ndarray) -> dict[str, Any]:
    """`modes`, `kl` (`score_modes`) and `confidence` (the mean top probability over channels and samples) of the
    channels' class probabilities (N, 3, 10)."""
    return {**score_modes(mode_histogram(probs)), "confidence": float(probs.max(axis=2).mean())}


class ModeCounter:
    """The measures of StackedMNIST images with the digit classifier: `counter(images)` -> modes, kl, confidence."""

    def __init__(self, net: DigitClassifier | None = None) -> None:
        self.net = net or load_classifier()

    def probabilities(self, images: torch.Tensor) -> np.ndarray:
        """The class probabilities (N, 3, 10) of each channel of the images (`channel_digits`)."""
        return classify(self.net, channel_digits(images))[1].reshape(len(images), 3, 10)

    def __call__(self, images: torch.Tensor) -> dict[str, Any]:
        return mode_measures(self.probabilities(images))


def stacked_scores(digit_fid: DigitFID, feats: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """The modes, kl and confidence of stacks (`mode_measures`), and the digit measures (`DigitFID.score`) of all
    their channels as digits, from the features (3N, 128) and probabilities (3N, 10) of `classify` of
    `channel_digits` (one classifier pass for both)."""
    return {**mode_measures(probs.reshape(-1, 3, probs.shape[1])), **digit_fid.score(feats, probs)}


def stacked_measures(digit_fid: DigitFID, images: torch.Tensor) -> dict[str, Any]:
    """`stacked_scores` of StackedMNIST images (N, 3, 32, 32), uint8 or float in [-1, 1], classified with
    `digit_fid`'s classifier."""
    return stacked_scores(digit_fid, *classify(digit_fid.net, channel_digits(images)))
