"""Readers for datasets in their published on-disk formats; each yields `Item`s (name, bytes or pixels, label).

`open_source(path)` recognises:
- a folder of images (recursive, sorted by path; png, jpg, jpeg, webp, bmp; other files are ignored, and so are
  the files at its root named in `ignore`), with labels from a `dataset.json` at its root when there is one
  (StyleGAN2-ADA's format);
- a zip of images (the same, members sorted by name) -- `vitgan prepare`'s output is one;
- CIFAR-10 / CIFAR-100 python batches: the `cifar-10-batches-py` / `cifar-100-python` folder or the .tar.gz as
  published; the training split (data_batch_1..5, or `train`), with labels (CIFAR-100: the fine labels);
- CelebA's `img_align_celeba` folder or zip: a folder/zip whose images get CelebA's 108x108 centre crop;
- an LSUN LMDB export (a folder with data.mdb, keys -> encoded images), read with the `lmdb` package.
"""

from __future__ import annotations

import json
import pickle
import tarfile
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vitgan.data.dataset import DataError
from vitgan.data.pixels import BadImage, Item

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
# CelebA's aligned images are 178x218; the centred 108x108 square holds the face from brows to chin. It is the crop
# of the DCGAN-era 64x64 CelebA protocol (carpedm20/DCGAN-tensorflow: --input_height=108 --crop, then resized to
# 64), the one most 64x64 CelebA GAN code inherits (the ViTGAN paper does not state its own). 140x140 (tensorpack's
# DCGAN-CelebA --crop-size 140) keeps more hair and background.
CELEBA_CROP = 108
CELEBA_NAME = "img_align_celeba"
CIFAR_BATCHES = {
    "cifar10": ("batches.meta", [f"data_batch_{i}" for i in range(1, 6)], b"labels"),
    "cifar100": ("meta", ["train"], b"fine_labels"),
}


class Source(ABC):
    """A dataset on disk: `len()` images, iterated as Items in a fixed order."""

    kind = "images"
    crop_size: int | None = None  # the centre crop's side (None: the short side)

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.resolve().name
        for suffix in (".tar.gz", ".tgz", ".tar", ".zip"):
            self.name = self.name.removesuffix(suffix)

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __iter__(self) -> Iterator[Item]: ...

    def __str__(self) -> str:
        return f"{self.path} ({self.kind})"


def _labels_json(text: bytes | str, where: str) -> dict[str, int]:
    """StyleGAN2-ADA's dataset.json: {"labels": [[relative path, label], ...]} or {"labels": null}."""
    try:
        labels = json.loads(text).get("labels")
        return {str(name): int(label) for name, label in labels or []}
    except (ValueError, TypeError, AttributeError) as error:
        raise DataError(f"{where}: not a dataset.json with [name, label] pairs ({error})") from None


class FolderSource(Source):
    """Every image under a folder, recursively, sorted by relative path; but not the files at its root named in
    `ignore` (e.g. the sheets `vitgan generate` writes beside its samples)."""

    kind = "folder"

    def __init__(self, path: Path, ignore: Collection[str] = ()) -> None:
        super().__init__(path)
        skipped = set(ignore)
        self.files = sorted(rel for rel in (p.relative_to(path).as_posix() for p in path.rglob("*")
                                            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
                            if rel not in skipped)
        meta = path / "dataset.json"
        self.labels = _labels_json(meta.read_bytes(), str(meta)) if meta.is_file() else {}

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[Item]:
        for rel in self.files:
            file = self.path / rel
            try:
                data: bytes | BadImage = file.read_bytes()
            except OSError as error:
                data = BadImage(f"cannot read ({error.strerror or error})")
            yield Item(str(file), data, self.labels.get(rel))


class ZipSource(Source):
    """Every image in a zip, sorted by member name, but not the members at its root named in `ignore`; labels from
    a dataset.json at the zip's root."""

    kind = "zip"

    def __init__(self, path: Path, ignore: Collection[str] = ()) -> None:
        super().__init__(path)
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                meta = archive.read("dataset.json") if "dataset.json" in names else None
        except (OSError, zipfile.BadZipFile) as error:
            raise DataError(f"{path}: not a readable zip ({error})") from None
        if any(Path(n).name == "data.mdb" for n in names):
            raise DataError(f"{path}: holds an LMDB export; unzip it and give the folder with data.mdb")
        skipped = set(ignore)
        self.members = sorted(n for n in names if Path(n).suffix.lower() in IMAGE_SUFFIXES and not n.endswith("/")
                              and not n.startswith("__MACOSX/") and n not in skipped)
        self.labels = _labels_json(meta, f"{path}:dataset.json") if meta is not None else {}

    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self) -> Iterator[Item]:
        with zipfile.ZipFile(self.path) as archive:
            for member in self.members:
                try:
                    data: bytes | BadImage = archive.read(member)
                except (OSError, zipfile.BadZipFile, EOFError, ValueError) as error:  # CRC, zlib, truncated member
                    data = BadImage(f"cannot read from the zip ({error})")
                yield Item(f"{self.path}:{member}", data, self.labels.get(member))


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles only builtin containers and numpy arrays: a pickle can otherwise run any code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}:
            return np.ndarray.__reduce__(np.empty(0))[0]  # numpy's own _reconstruct, wherever numpy keeps it
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        if (module, name) == ("_codecs", "encode"):  # how protocol-2 pickles from Python 3 store bytes
            import codecs

            return codecs.encode
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_cifar_batch(data: bytes, where: str, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR python batch: (N, 32, 32, 3) uint8 pixels and (N,) labels. The pickle holds b'data', (N, 3072)
    uint8 rows of three 32x32 row-major planes R, G, B, and the labels as a list under `label_key`."""
    import io

    try:
        batch = _BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as error:  # a malformed or hostile pickle: any failure means this file is unusable
        raise DataError(f"{where}: not a CIFAR python batch ({error})") from None
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataError(f"{where}: expected the keys b'data' and {label_key!r}, found {keys}")
    pixels, labels = np.asarray(batch[b"data"]), np.asarray(batch[label_key], dtype=np.int64)
    if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != 3072 or len(labels) != len(pixels):
        raise DataError(f"{where}: b'data' is {pixels.dtype} {pixels.shape} with {len(labels)} labels, expected "
                        "uint8 (N, 3072) with N labels")
    return pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels  # planes -> (N, H, W, C)


class CifarSource(Source):
    """The training split of CIFAR-10 (data_batch_1..5, 50,000 images) or CIFAR-100 (`train`, 50,000) with labels,
    from the published folder or .tar.gz."""

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(path)
        self.kind = kind
        _, files, label_key = CIFAR_BATCHES[kind]
        found = self._read(files)
        parts = [read_cifar_batch(found[f], f"{path}:{f}" if path.is_file() else str(path / f), label_key)
                 for f in files]
        self.files = [f for f, (_, labels) in zip(files, parts, strict=True) for _ in range(len(labels))]
        self.pixels = np.concatenate([p for p, _ in parts])
        self.labels = np.concatenate([labels for _, labels in parts])

    def _read(self, files: list[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        if self.path.is_dir():
            found = {f: (self.path / f).read_bytes() for f in files if (self.path / f).is_file()}
        else:
            try:
                with tarfile.open(self.path, "r:*") as tar:
                    for member in tar:
                        name = Path(member.name).name
                        if member.isfile() and name in files:
                            found[name] = tar.extractfile(member).read()  # type: ignore[union-attr]
            except (OSError, tarfile.TarError, EOFError) as error:
                raise DataError(f"{self.path}: not a readable .tar.gz ({error})") from None
        missing = [f for f in files if f not in found]
        if missing:
            raise DataError(f"{self.path}: {self.kind} batch {missing[0]} is missing")
        return found

    def __len__(self) -> int:
        return len(self.pixels)

    def __iter__(self) -> Iterator[Item]:
        seen: dict[str, int] = {}
        for file, pixels, label in zip(self.files, self.pixels, self.labels, strict=True):
            index = seen[file] = seen.get(file, -1) + 1
            yield Item(f"{self.path}:{file}[{index}]", pixels, int(label))


class LmdbSource(Source):
    """An LSUN LMDB export (keys -> encoded image bytes, usually WebP or JPEG), in key order."""

    kind = "lsun"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.env = self._open()
        self.count = self.env.stat()["entries"]

    def _open(self) -> Any:
        try:
            import lmdb
        except ImportError:
            raise DataError(f"{self.path}: reading an LMDB export needs the lmdb package: pip install lmdb") from None
        try:
            return lmdb.open(str(self.path), readonly=True, lock=False, readahead=False, subdir=True)
        except lmdb.Error as error:
            raise DataError(f"{self.path}: not a readable LMDB ({error})") from None

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Item]:
        with self.env.begin(buffers=False) as txn:
            for key, value in txn.cursor():
                yield Item(f"{self.path}:{key.decode(errors='backslashreplace')}", bytes(value))


def _celeba(source: Source) -> Source:
    """CelebA's aligned images, read as a folder or zip, with CelebA's centre crop."""
    source.kind, source.crop_size = "celeba", CELEBA_CROP
    return source


def _cifar_kind(names: set[str]) -> str | None:
    for kind, (meta, files, _) in CIFAR_BATCHES.items():
        if meta in names and files[0] in names:
            return kind
    return None


def open_source(spec: str | Path, ignore: Collection[str] = ()) -> Source:
    """The reader for a path; raises DataError when it is none of the formats above. A folder or zip leaves out the
    files at its root named in `ignore`."""
    path = Path(spec)
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        if "data.mdb" in names:
            return LmdbSource(path)
        if kind := _cifar_kind(names):
            return CifarSource(path, kind)
        folder = FolderSource(path, ignore)
        return _celeba(folder) if path.name == CELEBA_NAME else folder
    if path.is_file():
        if path.name == "data.mdb":
            return LmdbSource(path.parent)
        if path.name.endswith((".tar.gz", ".tgz", ".tar")):
            try:
                with tarfile.open(path, "r:*") as tar:
                    kind = _cifar_kind({Path(n).name for n in tar.getnames()})
            except (OSError, tarfile.TarError, EOFError) as error:
                raise DataError(f"{path}: not a readable tar archive ({error})") from None
            if kind is None:
                raise DataError(f"{path}: not a CIFAR-10/100 python archive (no batches.meta or meta inside)")
            return CifarSource(path, kind)
        if path.suffix.lower() == ".zip":
            source = ZipSource(path, ignore)
            if path.stem == CELEBA_NAME or (source.members and all(m.startswith(CELEBA_NAME + "/")
                                                                   for m in source.members)):
                return _celeba(source)
            return source
        raise DataError(f"{path}: not a dataset (expected a folder, a .zip, a CIFAR .tar.gz or an LMDB folder)")
    raise DataError(f"{spec}: no such file or folder (use 'mnist', 'stacked-mnist', a folder, a .zip, a CIFAR .tar.gz "
                    "or an LMDB)")
