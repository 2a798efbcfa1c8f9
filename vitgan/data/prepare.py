"""`vitgan prepare`: any source `open_source` reads, or a built-in data set (`mnist`, `stacked-mnist`), written as
one uncompressed zip of PNGs plus dataset.json.

The layout is StyleGAN2-ADA's: images `00000/img00000000.png`, 1,000 per folder, in the source's order; dataset.json
`{"labels": [["00000/img00000000.png", 6], ...]}`, or `{"labels": null}` when the source has no labels, and, where the
source names its classes, vitgan's `"classes": [name of label 0, ...]` beside them. The labels are the source's own
(`labels="source"`), or a folder's class sub-folders (`labels="folders"`). The output is
deterministic (sorted input, fixed zip timestamps and attributes, PNGs written with the same settings), so two runs
give byte-identical zips, and it is written to a temporary file beside DEST that is renamed only when complete.
"""

from __future__ import annotations

import functools
import io
import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vitgan.data.builtin import BUILTIN, load_builtin
from vitgan.data.dataset import DataError
from vitgan.data.pixels import CROPS, BadFiles, BadImage, Item, log_stderr, scan, to_pixels
from vitgan.data.sources import FolderSource, Source, open_source
from vitgan.fileio import atomic_write

PNG_COMPRESS_LEVEL = 1  # zlib level 1: far smaller than 0 (stored), as small as 6 on photos, and fast (README)
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # every member's timestamp, for byte-identical output
LABELS = ("source", "folders")  # where the labels come from: the source's own, or a folder's class sub-folders


@dataclass
class Prepared:
    """What `prepare` wrote."""

    path: Path
    count: int
    size: tuple[int, int]  # (width, height)
    channels: int
    labelled: bool
    skipped: int


def encode_png(pixels: np.ndarray) -> bytes:
    """(H, W, C) uint8 as PNG bytes, always with the same settings."""
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).save(
        buffer, format="png", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


class BuiltinSource(Source):
    """A built-in data set (BUILTIN) as a source: its images in their order, with their labels."""

    kind = "built-in"

    def __init__(self, name: str) -> None:
        super().__init__(Path(name))
        self.data = load_builtin(name)
        self.classes = self.data.classes

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[Item]:
        pixels = self.data.images.permute(0, 2, 3, 1).numpy()  # (N, H, W, C), as decoded pixels are
        for index, (image, label) in enumerate(zip(pixels, self.data.labels.tolist(), strict=True)):
            yield Item(f"{self.name}[{index}]", image[..., 0] if image.shape[2] == 1 else image, label)


def _member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = 3
    info.external_attr = 0o644 << 16
    return info


def _work(data: bytes | np.ndarray, **options) -> tuple[tuple[int, ...], bytes]:
    pixels = to_pixels(data, **options)
    return pixels.shape, encode_png(pixels)


def check_options(dest: Path, resolution: int | None, crop: str, channels: int, max_images: int | None,
                  labels: str = "source") -> None:
    if dest.suffix.lower() != ".zip":
        raise DataError(f"{dest}: the destination must be a .zip file")
    if resolution is not None and resolution < 1:
        raise DataError(f"resolution: must be positive, got {resolution}")
    if crop not in CROPS:
        raise DataError(f"crop: {crop!r} is not one of {', '.join(CROPS)}")
    if channels not in (1, 3):
        raise DataError(f"channels: must be 1 or 3, got {channels}")
    if max_images is not None and max_images < 1:
        raise DataError(f"max_images: must be positive, got {max_images}")
    if labels not in LABELS:
        raise DataError(f"labels: {labels!r} is not one of {', '.join(LABELS)}")


def open_prepare_source(src: str | Path, labels: str = "source") -> Source:
    """The source `prepare` reads: a built-in data set or `open_source`'s; with labels "folders", a folder labelled
    by its class sub-folders (`FolderSource.label_by_folder`)."""
    source = BuiltinSource(str(src)) if str(src) in BUILTIN else open_source(src)
    if labels == "folders":
        if not isinstance(source, FolderSource):
            raise DataError(f"{source.path}: labels from class folders need a folder of images, not a {source.kind} "
                            "source (use --labels source)")
        source.label_by_folder()
    return source


def prepare(src: str | Path, dest: str | Path, *, resolution: int | None = None, crop: str = "center",
            channels: int = 3, max_images: int | None = None, skip_bad: bool = False, labels: str = "source",
            progress: bool | None = True, log: Callable[[str], None] = log_stderr) -> Prepared:
    """Write `src` (a source, or the name of a built-in data set) to the zip `dest`: each image cropped (`center`:
    the centred square, CelebA's 108x108 for CelebA; `none`: non-square images are bad files), resized to
    `resolution` (None: all images must share one size), converted to `channels`; the first `max_images` good images;
    labelled as the source labels them (`labels` "source"), or, of a folder, by each image's first-level sub-folder
    (`labels` "folders"). Bad files are reported; without `skip_bad`, any bad file raises DataError and no DEST is
    written."""
    dest = Path(dest)
    check_options(dest, resolution, crop, channels, max_images, labels)
    source = open_prepare_source(src, labels)
    if len(source) == 0:
        raise DataError(f"{source.path}: no images found in this {source.kind} source")
    work = functools.partial(_work, resolution=resolution, channels=channels, crop=crop, crop_size=source.crop_size)
    bad = BadFiles(str(source.path))
    total = min(len(source), max_images or len(source))
    written: list[tuple[str, int | None, str]] = []  # (name in the zip, label, name in the source)
    first: dict[str, tuple[int, ...]] = {}

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
            for item, (shape, png) in scan(source, work, bad, total=total, progress=progress):
                reference = first.setdefault("shape", shape)
                if shape != reference:  # only without --resolution: every image must keep the first one's size
                    size, want = f"{shape[1]}x{shape[0]}", f"{reference[1]}x{reference[0]}"
                    bad.add(item.name, str(BadImage(f"is {size}, the first image is {want} (use --resolution)")))
                    continue
                if bad.found and not skip_bad:
                    continue  # keep scanning so that the report lists every bad file; nothing more is written
                name = f"{len(written) // 1000:05d}/img{len(written):08d}.png"
                archive.writestr(_member(name), png)
                written.append((name, item.label, item.name))
                if len(written) == max_images:
                    break
            bad.settle(skip_bad=skip_bad, log=log)
            if not written:
                raise DataError(f"{source.path}: no usable images")
            meta: dict[str, object] = {"labels": _labels(written, source.path)}
            if meta["labels"] is not None and source.classes is not None:
                meta["classes"] = source.classes
            archive.writestr(_member("dataset.json"), json.dumps(meta))

    atomic_write(dest, write)
    height, width, _ = first["shape"]
    labelled = written[0][1] is not None
    result = Prepared(dest, len(written), (width, height), channels, labelled, len(bad))
    classes = f" in {len(source.classes)} classes" if labelled and source.classes is not None else ""
    log(f"wrote {result.count} images ({width}x{height}, {channels} channel(s)"
        f"{', labelled' + classes if result.labelled else ''}) to {dest}")
    return result


def _labels(written: list[tuple[str, int | None, str]], where: Path) -> list[list] | None:
    """dataset.json's labels: all of them, or None when the source has none."""
    missing = [original for _, label, original in written if label is None]
    if len(missing) == len(written):
        return None
    if missing:
        raise DataError(f"{where}: {len(missing)} of {len(written)} images have no label (first: {missing[0]}); "
                        "label all or none in dataset.json")
    return [[name, label] for name, label, _ in written]
