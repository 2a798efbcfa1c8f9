"""From a file's bytes (or a decoded array) to square uint8 pixels: decode, convert the mode, crop, resize.

Every source goes through `to_pixels`, so a folder, a zip, CIFAR batches, CelebA and LSUN are all treated alike:
- mode: 16-bit grayscale is scaled to 8 bits (v / 257, rounded); palette images are expanded; an alpha channel is
  composited over black (the colour is multiplied by alpha / 255, rounded); then converted to L (channels=1) or RGB
  (channels=3; grayscale repeated).
- crop `center`: the centred square of side `crop_size` (default: the short side), the top-left corner at
  ((W - s) // 2, (H - s) // 2) as in StyleGAN2-ADA's dataset_tool; crop `none`: a non-square image is a bad file.
- resize to `resolution` x `resolution` with PIL's LANCZOS filter, only when the size differs (so an image already
  at the resolution is kept pixel for pixel).
"""

from __future__ import annotations

import io
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from vitgan.data.dataset import DataError

CROPS = ("center", "none")
T = TypeVar("T")


class BadImage(Exception):
    """One input file cannot be used; the message is the reason, without the file name."""


def decode(data: bytes | np.ndarray) -> Image.Image:
    """A PIL image from encoded bytes, or from an (H, W) / (H, W, 3) uint8 array (CIFAR's decoded pixels)."""
    if isinstance(data, np.ndarray):
        return Image.fromarray(data)
    if len(data) == 0:
        raise BadImage("empty file (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except UnidentifiedImageError:
        raise BadImage("not an image (no known image format)") from None
    except Exception as error:  # any decoder failure (OSError, SyntaxError, bomb, struct.error) is this file's fault
        message = str(error) or type(error).__name__
        raise BadImage(f"not a readable image ({message})") from None
    return image


def convert(image: Image.Image, channels: int) -> np.ndarray:
    """(H, W, channels) uint8 from any PIL mode: 16-bit scaled, palette expanded, alpha composited over black."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit (or 32-bit int) grayscale: 0..65535 -> 0..255
        wide = np.asarray(image).astype(np.float64)
        image = Image.fromarray(np.clip(np.rint(wide / 257), 0, 255).astype(np.uint8))
    elif image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = np.asarray(image.convert("RGBA")).astype(np.uint32)
        rgb = (rgba[..., :3] * rgba[..., 3:] + 127) // 255  # over black: round(colour * alpha / 255)
        image = Image.fromarray(rgb.astype(np.uint8))
    array = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    return array.reshape(*array.shape[:2], channels)


def crop_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """The centred square of side `size`: (left, top, right, bottom)."""
    left, top = (width - size) // 2, (height - size) // 2
    return left, top, left + size, top + size


def to_pixels(data: bytes | np.ndarray, *, resolution: int | None, channels: int, crop: str = "center",
              crop_size: int | None = None) -> np.ndarray:
    """(R, R, channels) uint8: decoded, cropped (see the module docstring) and resized to `resolution` (None:
    keep the size). Raises BadImage with the reason."""
    image = decode(data)
    width, height = image.size
    if crop == "center":
        size = crop_size or min(width, height)
        if size > min(width, height):
            raise BadImage(f"is {width}x{height}, smaller than the {size}x{size} crop")
        if (width, height) != (size, size):
            image = image.crop(crop_box(width, height, size))
    elif width != height:
        raise BadImage(f"is {width}x{height}, not square (use --crop center)")
    if resolution is not None and image.size != (resolution, resolution):
        image = image.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return convert(image, channels)


@dataclass
class Item:
    """One image of a source: a name for reports (a path, an archive member, a key), its data, its label."""

    name: str
    data: bytes | np.ndarray | BadImage  # BadImage: the source could not even read the bytes
    label: int | None = None


def decode_items(items: Iterable[Item], work: Callable[[bytes | np.ndarray], T], *,
                 workers: int | None = None) -> Iterator[tuple[Item, T | BadImage]]:
    """(item, work(item.data)) in the input order, or (item, BadImage) for a bad one; `work` runs on a thread pool
    (PIL's decoders and resampling release the GIL), with a bounded number of items in flight."""
    workers = workers or min(8, os.cpu_count() or 1)
    pending: deque[tuple[Item, Future]] = deque()

    def result(item: Item, future: Future) -> tuple[Item, T | BadImage]:
        try:
            return item, future.result()
        except BadImage as bad:
            return item, bad

    with ThreadPoolExecutor(workers) as pool:
        try:
            for item in items:
                if isinstance(item.data, BadImage):
                    failed: Future = Future()
                    failed.set_exception(item.data)
                    pending.append((item, failed))
                else:
                    pending.append((item, pool.submit(work, item.data)))
                if len(pending) >= 64 * workers:
                    yield result(*pending.popleft())
            while pending:
                yield result(*pending.popleft())
        finally:  # stopped early (max_images, an error, Ctrl-C): drop what has not started
            for _, future in pending:
                future.cancel()


@dataclass
class BadFiles:
    """The bad files of one pass over a source, each with its reason."""

    source: str
    found: list[tuple[str, str]] = field(default_factory=list)

    def add(self, name: str, reason: str) -> None:
        self.found.append((name, reason))

    def __len__(self) -> int:
        return len(self.found)

    def lines(self) -> list[str]:
        """The report: one line per bad file."""
        return [f"{name}: {reason}" for name, reason in self.found]

    def summary(self) -> str:
        """One line: the count and the first files."""
        shown = "; ".join(self.lines()[:3])
        more = f"; and {len(self) - 3} more" if len(self) > 3 else ""
        return f"{self.source}: {len(self)} bad image file(s): {shown}{more} (--skip-bad skips them)"

    def settle(self, *, skip_bad: bool, log: Callable[[str], None]) -> None:
        """Report every bad file through `log`; then raise DataError (one line), or with `skip_bad` log the count."""
        if not self.found:
            return
        for line in self.lines():
            log(f"bad image: {line}")
        if not skip_bad:
            raise DataError(self.summary())
        log(f"skipped {len(self)} bad image file(s) of {self.source}")


def log_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def scan(items: Iterable[Item], work: Callable[[bytes | np.ndarray], T], bad: BadFiles, *, total: int,
         progress: bool | None = None) -> Iterator[tuple[Item, T]]:
    """The good items with work(item.data), in order, under a progress bar on stderr (progress None: only on a
    terminal); each bad one is recorded in `bad`."""
    from tqdm import tqdm

    with tqdm(total=total, desc=bad.source, unit="img", file=sys.stderr, dynamic_ncols=True, mininterval=0.5,
              disable=None if progress is None else not progress) as bar:
        for item, result in decode_items(items, work):
            bar.update()
            if isinstance(result, BadImage):
                bad.add(item.name, str(result))
            else:
                yield item, result
