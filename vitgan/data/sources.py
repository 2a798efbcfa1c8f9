"""Readers for datasets in their published on-disk formats; each yields `Item`s (name, bytes or pixels, label).

`open_source(path)` recognises:
- a folder of images (recursive, sorted by path; png, jpg, jpeg, webp, bmp; other files are ignored, and so are
  the files at its root named in `ignore`), with labels from a `dataset.json` at its root when there is one
  (StyleGAN2-ADA's format, with vitgan's optional "classes" list of names), or, asked for
  (`FolderSource.label_by_folder`), from its class sub-folders;
- a zip of images (the same, members sorted by name) -- `vitgan prepare`'s output is one;
- CIFAR-10 / CIFAR-100 python batches: the `cifar-10-batches-py` / `cifar-100-python` folder or the .tar.gz as
  published; the training split (data_batch_1..5, or `train`), with labels (CIFAR-100: the fine labels) and the
  class names of `batches.meta` / `meta`;
- CelebA's `img_align_celeba` folder or zip: a folder/zip whose images get CelebA's 108x108 centre crop;
- an LSUN LMDB export (a folder with data.mdb, keys -> encoded images), read with the `lmdb` package;
- Hugging Face parquet (a `.parquet` file, or a folder of shards), read with the `pyarrow` package.

A source's `classes` names its labels 0..K-1, where it knows them (else None).
"""

from __future__ import annotations

import json
import pickle
import re
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
CIFAR_BATCHES = {  # kind: (the meta file, the training batches, their labels' key, the meta's key of the names)
    "cifar10": ("batches.meta", [f"data_batch_{i}" for i in range(1, 6)], b"labels", b"label_names"),
    "cifar100": ("meta", ["train"], b"fine_labels", b"fine_label_names"),
}
# Parquet: the integer columns taken as labels when the schema's metadata names no ClassLabel (and the preferred
# ones among several ClassLabels); the shard names of the Hugging Face hub, `train-00000-of-00004.parquet`.
PARQUET_LABELS = ("label", "labels", "fine_label")
PARQUET_SHARD = re.compile(r"(?P<split>[^-]+)-\d+-of-\d+(-[0-9a-f]+)?\.parquet")
PARQUET_BATCH = 256  # rows decoded from a row group at a time


class Source(ABC):
    """A dataset on disk: `len()` images, iterated as Items in a fixed order."""

    kind = "images"
    crop_size: int | None = None  # the centre crop's side (None: the short side)
    classes: list[str] | None = None  # the names of the labels 0..K-1 (None: unknown, or no labels)

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.resolve().name
        for suffix in (".tar.gz", ".tgz", ".tar", ".zip", ".parquet"):
            self.name = self.name.removesuffix(suffix)

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __iter__(self) -> Iterator[Item]: ...

    def __str__(self) -> str:
        return f"{self.path} ({self.kind})"


def check_labels(labels: Collection[int], classes: list[str], where: str) -> None:
    """A one-line DataError naming `where` unless every label is one of the classes, 0..len(classes)-1."""
    wrong = [label for label in labels if not 0 <= label < len(classes)]
    if wrong:
        raise DataError(f"{where}: label {wrong[0]} is not below {len(classes)}, the number of class names")


def _dataset_json(text: bytes | str, where: str) -> tuple[dict[str, int], list[str] | None]:
    """StyleGAN2-ADA's dataset.json, {"labels": [[relative path, label], ...]} or {"labels": null}, with vitgan's
    optional "classes": [name of label 0, name of label 1, ...]: (the labels by path, the class names or None)."""
    try:
        meta = json.loads(text)
        labels = {str(name): int(label) for name, label in meta.get("labels") or []}
    except (ValueError, TypeError, AttributeError) as error:
        raise DataError(f"{where}: not a dataset.json with [name, label] pairs ({error})") from None
    classes = meta.get("classes")
    if classes is not None:
        if not isinstance(classes, list) or not all(isinstance(name, str) for name in classes):
            raise DataError(f"{where}: \"classes\" must be a list of class names (strings), got {classes!r:.60}")
        check_labels(labels.values(), classes, where)
    return labels, classes


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
        self.labels, self.classes = _dataset_json(meta.read_bytes(), str(meta)) if meta.is_file() else ({}, None)

    def label_by_folder(self) -> None:
        """Label each image by its first-level sub-folder (ImageNet's `train/n01440764/*.JPEG`, or `cat/*.png`):
        the classes are the sorted names of the sub-folders that hold images, and an image's label is the index of
        its own; dataset.json's labels are set aside. An image directly in the folder is a DataError."""
        at_root = [rel for rel in self.files if "/" not in rel]
        if at_root:
            raise DataError(f"{self.path / at_root[0]}: is not in a class sub-folder (labels from class folders "
                            "need every image below one)")
        self.classes = sorted({rel.split("/", 1)[0] for rel in self.files})
        index = {name: label for label, name in enumerate(self.classes)}
        self.labels = {rel: index[rel.split("/", 1)[0]] for rel in self.files}

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
        self.labels, self.classes = _dataset_json(meta, f"{path}:dataset.json") if meta is not None else ({}, None)

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


def _unpickle(data: bytes, where: str, what: str) -> Any:
    import io

    try:
        return _BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as error:  # a malformed or hostile pickle: any failure means this file is unusable
        raise DataError(f"{where}: not a CIFAR python {what} ({error})") from None


def read_cifar_names(data: bytes, where: str, names_key: bytes) -> list[str]:
    """The class names of a CIFAR meta file (`batches.meta`: b'label_names'; CIFAR-100's `meta`:
    b'fine_label_names'), the name of label i at i."""
    meta = _unpickle(data, where, "meta file")
    names = meta.get(names_key) if isinstance(meta, dict) else None
    if not isinstance(names, list) or not all(isinstance(name, bytes | str) for name in names):
        raise DataError(f"{where}: expected the class names as a list under {names_key!r}")
    return [name.decode(errors="replace") if isinstance(name, bytes) else name for name in names]


def read_cifar_batch(data: bytes, where: str, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR python batch: (N, 32, 32, 3) uint8 pixels and (N,) labels. The pickle holds b'data', (N, 3072)
    uint8 rows of three 32x32 row-major planes R, G, B, and the labels as a list under `label_key`."""
    batch = _unpickle(data, where, "batch")
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataError(f"{where}: expected the keys b'data' and {label_key!r}, found {keys}")
    pixels, labels = np.asarray(batch[b"data"]), np.asarray(batch[label_key], dtype=np.int64)
    if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != 3072 or len(labels) != len(pixels):
        raise DataError(f"{where}: b'data' is {pixels.dtype} {pixels.shape} with {len(labels)} labels, expected "
                        "uint8 (N, 3072) with N labels")
    return pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels  # planes -> (N, H, W, C)


class CifarSource(Source):
    """The training split of CIFAR-10 (data_batch_1..5, 50,000 images) or CIFAR-100 (`train`, 50,000) with labels
    and their class names, from the published folder or .tar.gz."""

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(path)
        self.kind = kind
        meta, files, label_key, names_key = CIFAR_BATCHES[kind]
        found = self._read([meta, *files])
        where = {f: f"{path}:{f}" if path.is_file() else str(path / f) for f in [meta, *files]}
        self.classes = read_cifar_names(found[meta], where[meta], names_key)
        parts = [read_cifar_batch(found[f], where[f], label_key) for f in files]
        for f, (_, labels) in zip(files, parts, strict=True):
            check_labels(labels.tolist(), self.classes, f"{where[f]} (class names: {meta})")
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


def _pyarrow_parquet(where: Path) -> Any:
    """pyarrow.parquet, imported only when a parquet source is read; without pyarrow, a one-line DataError."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{where}: reading parquet needs the pyarrow package: pip install 'vitgan[parquet]'") from None
    return pq


def parquet_shards(path: Path) -> list[Path]:
    """The parquet files a folder stands for, sorted by name: its `*.parquet` files, or, when it has none, those of
    its `data/` subfolder (a hub repo's layout); where they are the hub's shards of several splits
    (`train-00000-of-00002.parquet`, `test-00000-of-00001.parquet`), only the train split's. [] when there are
    none."""
    files = sorted(p for p in path.glob("*.parquet") if p.is_file())
    if not files and (path / "data").is_dir():
        files = sorted(p for p in (path / "data").glob("*.parquet") if p.is_file())
    split = {f: m["split"] if (m := PARQUET_SHARD.fullmatch(f.name)) else None for f in files}
    splits = sorted({name for name in split.values() if name is not None})
    if len(splits) > 1:
        if "train" not in splits:
            raise DataError(f"{path}: holds the parquet files of several splits ({', '.join(splits)}) and no train "
                            "split; give one file")
        files = [f for f in files if split[f] == "train"]
    return files


def _huggingface_features(schema: Any, where: Path) -> dict[str, Any]:
    """The features `datasets` records in a parquet file's arrow schema: the metadata key b"huggingface" holds
    JSON {"info": {"features": {column: {"_type": "ClassLabel", "names": [...]}, ...}}} ({} when absent)."""
    text = (schema.metadata or {}).get(b"huggingface")
    if text is None:
        return {}
    try:
        features = json.loads(text).get("info", {}).get("features") or {}
    except (ValueError, AttributeError) as error:
        message = f"{where}: the schema's huggingface metadata is not the JSON `datasets` writes ({error})"
        raise DataError(message) from None
    return features if isinstance(features, dict) else {}


def parquet_columns(schema: Any, where: Path) -> tuple[str, str | None, list[str] | None]:
    """(the image column, the label column or None, the class names or None) of a parquet file's arrow schema.
    The image: the first column of the struct {bytes, path} `datasets.Image` stores (the encoded file in bytes),
    else the first binary column. The label: the integer column typed ClassLabel in the huggingface metadata (its
    names are the classes; of several, one named as in PARQUET_LABELS first), else an integer column named as in
    PARQUET_LABELS, else none."""
    import pyarrow as pa

    def binary(kind: Any) -> bool:
        return pa.types.is_binary(kind) or pa.types.is_large_binary(kind)

    def encoded(kind: Any) -> bool:
        return pa.types.is_struct(kind) and any(kind.field(i).name == "bytes" and binary(kind.field(i).type)
                                                for i in range(kind.num_fields))

    images = [f.name for f in schema if encoded(f.type)] or [f.name for f in schema if binary(f.type)]
    if not images:
        raise DataError(f"{where}: no image column (a struct of bytes and path as datasets.Image stores, or a binary "
                        f"column) among its columns {', '.join(schema.names)}")
    features = _huggingface_features(schema, where)
    integers = [f.name for f in schema if pa.types.is_integer(f.type)]
    typed = [name for name in integers if isinstance(features.get(name), dict)
             and features[name].get("_type") == "ClassLabel"]
    if typed:
        label = next((name for name in PARQUET_LABELS if name in typed), typed[0])
        names = features[label].get("names")
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise DataError(f"{where}: the ClassLabel {label!r} of its huggingface metadata has no list of names")
        return images[0], label, names
    return images[0], next((name for name in PARQUET_LABELS if name in integers), None), None


class ParquetSource(Source):
    """Hugging Face parquet (as the hub serves data sets and `datasets` writes them): one file, or the shards of a
    folder (`parquet_shards`), in order, row by row; the columns and class names of `parquet_columns`, which every
    shard must share. Read lazily: a batch of rows of one row group at a time, only the image and label columns."""

    kind = "parquet"

    def __init__(self, path: Path, files: list[Path]) -> None:
        super().__init__(path)
        self.files = files
        self.rows: list[int] = []
        for file in files:
            schema, rows = self._open(file, lambda pf: (pf.schema_arrow, pf.metadata.num_rows))
            columns = parquet_columns(schema, file)
            if file == files[0]:
                self.image, self.label, self.classes = columns
            elif columns != (self.image, self.label, self.classes):
                raise DataError(f"{file}: its image column, label column or class names differ from {files[0]}'s")
            self.rows.append(rows)

    def _open(self, file: Path, use: Any) -> Any:
        pq = _pyarrow_parquet(file)
        try:
            with open(file, "rb") as f:
                return use(pq.ParquetFile(f))
        except Exception as error:  # pyarrow's ArrowInvalid, OSError, ...: the file is unusable
            raise DataError(f"{file}: not a readable parquet file ({_first_line(error)})") from None

    def __len__(self) -> int:
        return sum(self.rows)

    def __iter__(self) -> Iterator[Item]:
        pq = _pyarrow_parquet(self.path)
        columns = [self.image] + ([self.label] if self.label else [])
        for file in self.files:
            with open(file, "rb") as f:
                batches = pq.ParquetFile(f).iter_batches(batch_size=PARQUET_BATCH, columns=columns)
                row = 0
                while True:
                    try:
                        batch = next(batches, None)
                    except Exception as error:  # a corrupt page or row group
                        raise DataError(f"{file}: cannot read rows from {row} on ({_first_line(error)})") from None
                    if batch is None:
                        break
                    images = batch.column(self.image).to_pylist()
                    labels = batch.column(self.label).to_pylist() if self.label else [None] * len(images)
                    for value, label in zip(images, labels, strict=True):
                        yield Item(f"{file}[{row}]", _parquet_image(value), self._label(label, f"{file}[{row}]"))
                        row += 1

    def _label(self, label: int | None, where: str) -> int | None:
        if label is None or label < 0:  # `datasets` stores -1 for a missing ClassLabel
            return None
        if self.classes is not None:
            check_labels([label], self.classes, f"{where} ({self.label!r})")
        return label


def _first_line(error: Exception) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]


def _parquet_image(value: Any) -> bytes | BadImage:
    """The encoded image of one row: the struct's bytes, or a binary value; BadImage when there is none."""
    if isinstance(value, dict):
        if value.get("bytes") is None:
            path = value.get("path")
            return BadImage(f"no image bytes in the row (only the path {path!r}, not read)" if path
                            else "no image in the row (null)")
        value = value["bytes"]
    return BadImage("no image in the row (null)") if value is None else value


def _celeba(source: Source) -> Source:
    """CelebA's aligned images, read as a folder or zip, with CelebA's centre crop."""
    source.kind, source.crop_size = "celeba", CELEBA_CROP
    return source


def _cifar_kind(names: set[str]) -> str | None:
    for kind, (meta, files, *_) in CIFAR_BATCHES.items():
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
        if shards := parquet_shards(path):
            return ParquetSource(path, shards)
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
        if path.suffix.lower() == ".parquet":
            return ParquetSource(path, [path])
        raise DataError(f"{path}: not a dataset (expected a folder, a .zip, a CIFAR .tar.gz, a .parquet or an LMDB "
                        "folder)")
    raise DataError(f"{spec}: no such file or folder (use 'mnist', 'stacked-mnist', a folder, a .zip, a CIFAR .tar.gz, "
                    "a .parquet or an LMDB)")
