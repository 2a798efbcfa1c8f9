"""Digit FID: a fast, offline FID for 32x32 MNIST digits, with a small classifier shipped in the package.

The classifier (three conv blocks, global average pooling, a linear layer; 140k parameters) is trained on the bundled
5,000 digits by `benchmarks/train_digit_classifier.py`, which prints its held-out accuracy; its weights ship as
`vitgan/metrics/digit_classifier.safetensors`. Its 128-d pooled features replace Inception's in the Frechet
distance: digit-FID numbers are comparable with each other, not with Inception FIDs in papers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from vitgan.data import ImageData
from vitgan.images import quantize
from vitgan.metrics.frechet import feature_statistics, frechet_distance

WEIGHTS = Path(__file__).with_name("digit_classifier.safetensors")
CONFIDENT = 0.5  # a sample counts for a digit when its probability is at least this (99% of real digits pass; the
# classifier is label-smoothed)


class DigitClassifier(nn.Module):
    """(B, 1, 32, 32) in [-1, 1] -> 10 logits; `features` gives the 128-d pooled features."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList([
            nn.Conv2d(1, 32, 3, padding=1), nn.Conv2d(32, 32, 3, padding=1),
            nn.Conv2d(32, 64, 3, padding=1), nn.Conv2d(64, 64, 3, padding=1),
            nn.Conv2d(64, 128, 3, padding=1),
        ])
        self.fc = nn.Linear(128, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)  # oneDNN's faster CPU layout; features agree to round-off
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            if i in (1, 3):
                x = F.max_pool2d(x, 2)
        return x.mean(dim=(2, 3))  # (B, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def load_classifier(path: str | Path = WEIGHTS) -> DigitClassifier:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: digit classifier weights missing; run benchmarks/train_digit_classifier.py")
    net = DigitClassifier()
    net.load_state_dict(load_file(str(path)))
    return net.to(memory_format=torch.channels_last).eval()


@torch.no_grad()
def classify(net: DigitClassifier, images: torch.Tensor, batch: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, 128), class probabilities (N, 10)) for images (N, 1, 32, 32), uint8 or float in [-1, 1].

    Float images are first quantised as a PNG would hold them (clipped to [-1, 1], rounded to 256 levels), as
    StyleGAN's metrics do: a generator is scored on the pixels its users see (a linear output's values beyond
    [-1, 1] are clipped there), and the per-tick, `vitgan ablate` and `vitgan eval` measures agree.
    """
    feats, probs = [], []
    for i in range(0, len(images), batch):
        chunk = images[i:i + batch]
        pixels = chunk if chunk.dtype == torch.uint8 else quantize(chunk)
        f = net.features(pixels.float() / 127.5 - 1)
        feats.append(f)
        probs.append(net.fc(f).softmax(dim=1))
    return torch.cat(feats).double().numpy(), torch.cat(probs).double().numpy()


class DigitFID:
    """Digit FID against reference images (their statistics computed once), and class coverage of the samples.

    `classes`: how many of the 10 digits hold at least 2% of the samples among those classified with probability
    >= 0.5; `rarest_class`: the smallest such share (0.1 for perfectly balanced samples).
    """

    def __init__(self, reference: torch.Tensor, net: DigitClassifier | None = None) -> None:
        self.net = net or load_classifier()
        self.mu, self.sigma = feature_statistics(classify(self.net, reference)[0])

    @classmethod
    def of(cls, data: ImageData, net: DigitClassifier | None = None) -> DigitFID:
        """Against every image of a dataset (the bundled digits, or any 1x32x32 set)."""
        return cls(data.batch(torch.arange(len(data))), net)

    def __call__(self, images: torch.Tensor) -> dict[str, float]:
        return self.score(*classify(self.net, images))

    def score(self, feats: np.ndarray, probs: np.ndarray) -> dict[str, float]:
        """The measures of samples from their features and class probabilities (`classify`, in any order)."""
        n = len(feats)
        mu, sigma = feature_statistics(feats)
        confident = probs.max(axis=1) >= CONFIDENT
        counts = np.bincount(probs.argmax(axis=1)[confident], minlength=10)
        return {
            "digit_fid": frechet_distance(mu, sigma, self.mu, self.sigma),
            "classes": int((counts >= 0.02 * n).sum()),  # classes holding >= 2% of all samples, confidently
            "confident": float(confident.mean()),
            "rarest_class": float(counts.min() / n),
        }


def class_agreement(predicted: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Class agreement of a conditional generator's samples: the share of them whose class under the classifier
    (`predicted`, e.g. the digit classifier's argmax) is the label they were generated for (`labels`), overall
    (`agreement`) and in the class where it is lowest (`agreement_worst`, over the labels present): that class
    (`worst_class`) and what its samples were most often taken for instead (`worst_drawn_as`; itself when all agree)."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    if predicted.shape != labels.shape or not len(labels):
        raise ValueError(f"class agreement: {predicted.shape} predictions for {labels.shape} labels")
    hit = predicted == labels
    by_class = agreement_by_class(predicted, labels)
    worst = min(by_class, key=lambda k: (by_class[k], k))
    wrong = predicted[(labels == worst) & ~hit]
    drawn_as = int(np.bincount(wrong).argmax()) if len(wrong) else worst
    return {"agreement": float(hit.mean()), "agreement_worst": by_class[worst], "worst_class": worst,
            "worst_drawn_as": drawn_as}


def agreement_by_class(predicted: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    """The class agreement within each label present: {label: share of its samples classified as it}."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    return {int(k): float((predicted[labels == k] == k).mean()) for k in np.unique(labels)}
