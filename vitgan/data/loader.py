"""`load(spec)`: the training set in memory, decoded once per run from any source `open_source` reads."""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection

import numpy as np
import torch

from vitgan.data.builtin import BUILTIN, load_builtin
from vitgan.data.dataset import DataError, ImageData
from vitgan.data.pixels import BadFiles, BadImage, decode, log_stderr, scan, to_pixels
from vitgan.data.sources import Source, open_source


def load_source(source: Source, *, resolution: int, channels: int, skip_bad: bool = False,
                progress: bool | None = None, log: Callable[[str], None] = log_stderr) -> ImageData:
    """Every image of `source`, centre-cropped and resized to `resolution` (kept as is when it already is square at
    that size), as uint8 in memory, with its label (-1 where the source has none) and the source's class names."""
    images = np.empty((len(source), resolution, resolution, channels), np.uint8)
    labels = np.full(len(source), -1, np.int64)
    bad = BadFiles(str(source.path))
    work = functools.partial(to_pixels, resolution=resolution, channels=channels, crop_size=source.crop_size)
    count = 0
    for item, pixels in scan(source, work, bad, total=len(source), progress=progress):
        images[count] = pixels
        labels[count] = -1 if item.label is None else item.label
        count += 1
    bad.settle(skip_bad=skip_bad, log=log)
    if count == 0:
        raise DataError(f"{source.path}: no images found in this {source.kind} source")
    nchw = torch.from_numpy(images[:count]).permute(0, 3, 1, 2).contiguous()
    return ImageData(nchw, torch.from_numpy(labels[:count].copy()), source.name, source.classes)


def load(spec: str, *, resolution: int, channels: int, skip_bad: bool = False,
         progress: bool | None = None, ignore: Collection[str] = ()) -> ImageData:
    """`mnist` (the bundled digits), `stacked-mnist` (StackedMNIST made of them), or any source `open_source` reads
    (a folder, a zip such as `vitgan prepare` writes, CIFAR batches, CelebA, an LSUN LMDB, parquet), checked against the
    configured image shape. A folder's or zip's files at its root named in `ignore` are left out."""
    if spec in BUILTIN:
        data = load_builtin(spec)
    else:
        data = load_source(open_source(spec, ignore), resolution=resolution, channels=channels, skip_bad=skip_bad,
                           progress=progress)
    if tuple(data.images.shape[1:]) != (channels, resolution, resolution):
        shape = "x".join(map(str, data.images.shape[1:]))
        expected = f"{channels}x{resolution}x{resolution}"
        raise DataError(f"{spec}: images are {shape} (CxHxW) but the config expects {expected}")
    return data


def image_shape(spec: str, ignore: Collection[str] = ()) -> tuple[int, int]:
    """(side, channels) that `load` keeps a source's images at: the side of its first image's centre crop, and 1 for
    a grayscale first image, else 3 (the files named in `ignore` left out, as `load` leaves them); a built-in data
    set's own."""
    if spec in BUILTIN:
        return BUILTIN[spec]
    source = open_source(spec, ignore)
    for item in source:
        try:
            if isinstance(item.data, BadImage):
                raise item.data
            image = decode(item.data)
        except BadImage as error:
            raise DataError(f"{item.name}: {error}") from None
        gray = image.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L")
        return source.crop_size or min(image.size), 1 if gray else 3
    raise DataError(f"{source.path}: no images found in this {source.kind} source")
