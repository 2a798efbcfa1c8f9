"""Hugging Face parquet as a source, on small files written here in the hub's layout: an image column of
`datasets.Image`'s struct {bytes, path}, an int64 ClassLabel column, and the features `datasets` records in the arrow
schema's metadata (b"huggingface": {"info": {"features": ...}})."""

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitgan.cli import main
from vitgan.data import DataError, image_shape, load, open_source
from vitgan.data.prepare import prepare

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

RNG = np.random.default_rng(0)
NAMES = ["airplane", "automobile", "bird"]
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # datasets.Image's storage


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="png")
    return buffer.getvalue()


def hub_parquet(path: Path, images: list, labels: list, *, names: list | None = NAMES, image_column: str = "img",
                row_group_size: int | None = None, extra: dict | None = None) -> Path:
    """A parquet file as `datasets` writes it (and the hub serves CIFAR-10): `img` {bytes: the PNG, path}, `label`
    int64 typed ClassLabel(names) in the schema's huggingface metadata. An image given as bytes or None is stored as
    is (a corrupt or a null row)."""
    features = {image_column: {"_type": "Image"}, "label": {"names": names, "_type": "ClassLabel"}}
    fields = [(image_column, IMAGE), ("label", pa.int64())] + [(name, pa.string()) for name in extra or {}]
    metadata = {"huggingface": json.dumps({"info": {"features": features}})} if names is not None else None
    schema = pa.schema(fields, metadata=metadata)
    column = [None if a is None else {"bytes": a if isinstance(a, bytes) else png(a), "path": f"{i}.png"}
              for i, a in enumerate(images)]
    table = pa.table({image_column: column, "label": labels, **(extra or {})}, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def rgb(count: int, side: int = 4) -> list[np.ndarray]:
    return [RNG.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(count)]


def test_a_hub_parquet_file_gives_its_pixels_labels_and_class_names_reading_row_groups(tmp_path, monkeypatch):
    images, labels = rgb(5), [2, 0, 1, 1, 0]
    file = hub_parquet(tmp_path / "train-00000-of-00001.parquet", images, labels, row_group_size=2,
                       extra={"note": ["not read"] * 5})
    asked = []
    real = pq.ParquetFile.iter_batches

    def iter_batches(self, *args, **kwargs):
        asked.append(kwargs.get("columns"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", iter_batches)
    monkeypatch.setattr(pq.ParquetFile, "read", lambda *a, **k: pytest.fail("read the whole file"))
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: pytest.fail("read the whole file"))
    source = open_source(file)
    assert (source.kind, len(source), source.classes, source.name) == ("parquet", 5, NAMES, "train-00000-of-00001")
    data = load(str(file), resolution=4, channels=3)
    np.testing.assert_array_equal(data.images.permute(0, 2, 3, 1).numpy(), np.stack(images))
    assert data.labels.tolist() == labels and data.classes == NAMES and data.num_classes == 3
    assert asked and all(columns == ["img", "label"] for columns in asked)  # only the needed columns
    assert image_shape(str(file)) == (4, 3)  # what `eval --gen` asks first


def test_a_folder_of_shards_is_read_in_name_order_train_split_only_and_prepared_with_its_classes(tmp_path):
    images = rgb(5)
    folder = tmp_path / "cifar10-hf" / "plain_text"  # the hub repo uoft-cs/cifar10's layout
    hub_parquet(folder / "train-00001-of-00002.parquet", images[3:], [1, 2])
    hub_parquet(folder / "train-00000-of-00002.parquet", images[:3], [0, 2, 1])
    hub_parquet(folder / "test-00000-of-00001.parquet", rgb(2), [0, 0])  # another split: not read
    data = load(str(folder), resolution=4, channels=3)
    np.testing.assert_array_equal(data.images.permute(0, 2, 3, 1).numpy(), np.stack(images))
    assert data.labels.tolist() == [0, 2, 1, 1, 2] and data.classes == NAMES and data.name == "plain_text"
    written = prepare(folder, tmp_path / "cifar.zip", progress=False, log=lambda line: None)
    assert (written.count, written.labelled) == (5, True)
    with zipfile.ZipFile(tmp_path / "cifar.zip") as archive:
        meta = json.loads(archive.read("dataset.json"))
    assert meta["classes"] == NAMES and [label for _, label in meta["labels"]] == [0, 2, 1, 1, 2]
    back = load(str(tmp_path / "cifar.zip"), resolution=4, channels=3)
    assert torch.equal(back.images, data.images) and torch.equal(back.labels, data.labels) and back.classes == NAMES
    repo = tmp_path / "celeba-hf"  # a hub repo whose shards are under data/
    hub_parquet(repo / "data" / "train-00000-of-00001.parquet", images[:2], [0, 1], names=None)
    assert len(load(str(repo), resolution=4, channels=3)) == 2
    hub_parquet(tmp_path / "only-tests" / "test-00000-of-00001.parquet", images[:1], [0])
    hub_parquet(tmp_path / "only-tests" / "validation-00000-of-00001.parquet", images[:1], [0])
    with pytest.raises(DataError, match=r"only-tests: holds the parquet files of several splits \(test, validation\) "
                       "and no train split"):
        open_source(tmp_path / "only-tests")


def test_train_dry_run_reads_a_parquet_file(tmp_path, capsys):
    file = hub_parquet(tmp_path / "digits.parquet", rgb(4, side=8), [0, 1, 2, 0])
    assert main(["train", "--dry-run", "--data", str(file), "--batch", "4"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["data"] == {"name": "digits", "num_images": 4, "shape": [1, 32, 32]}  # the mnist preset's shape


def test_label_columns_without_a_classlabel_and_several_classlabels(tmp_path):
    images = rgb(3)
    plain = pa.table({"image": [png(a) for a in images], "label": pa.array([4, 0, 2], pa.int32())})  # no metadata
    pq.write_table(plain, tmp_path / "plain.parquet")
    data = load(str(tmp_path / "plain.parquet"), resolution=4, channels=3)  # a binary image column
    np.testing.assert_array_equal(data.images.permute(0, 2, 3, 1).numpy(), np.stack(images))
    assert data.labels.tolist() == [4, 0, 2] and data.classes is None and data.num_classes == 5
    pq.write_table(plain.drop(["label"]), tmp_path / "unlabelled.parquet")
    data = load(str(tmp_path / "unlabelled.parquet"), resolution=4, channels=3)
    assert data.labels.tolist() == [-1] * 3 and data.classes is None and data.num_classes == 0
    features = {"img": {"_type": "Image"}, "coarse_label": {"names": ["a", "b"], "_type": "ClassLabel"},
                "fine_label": {"names": ["x", "y", "z"], "_type": "ClassLabel"}}  # CIFAR-100's: the fine labels
    schema = pa.schema([("img", IMAGE), ("coarse_label", pa.int64()), ("fine_label", pa.int64())],
                       metadata={"huggingface": json.dumps({"info": {"features": features}})})
    table = pa.table({"img": [{"bytes": png(a), "path": None} for a in images], "coarse_label": [0, 1, 1],
                      "fine_label": [2, -1, 0]}, schema=schema)  # -1: datasets' missing label
    pq.write_table(table, tmp_path / "cifar100.parquet")
    data = load(str(tmp_path / "cifar100.parquet"), resolution=4, channels=3)
    assert data.labels.tolist() == [2, -1, 0] and data.classes == ["x", "y", "z"] and data.num_classes == 0


def test_a_null_or_corrupt_image_row_is_a_bad_file_named_by_file_and_row(tmp_path, capsys):
    images = rgb(5)
    images[1], images[3] = None, png(images[3])[:40]  # a null row, a truncated PNG
    file = hub_parquet(tmp_path / "train-00000-of-00001.parquet", images, [0, 1, 2, 0, 1])
    with pytest.raises(DataError) as error:
        load(str(file), resolution=4, channels=3)
    message = str(error.value)
    assert "\n" not in message and "2 bad image file(s)" in message
    assert f"{file}[1]: no image in the row (null)" in message and f"{file}[3]: not an image" in message
    data = load(str(file), resolution=4, channels=3, skip_bad=True, progress=False)
    assert data.labels.tolist() == [0, 2, 1] and "skipped 2 bad image file(s)" in capsys.readouterr().err
    with pytest.raises(DataError, match=r"parquet\[1\]: no image in the row"):
        prepare(file, tmp_path / "out.zip", progress=False, log=lambda line: None)
    assert not (tmp_path / "out.zip").exists()
    assert prepare(file, tmp_path / "out.zip", skip_bad=True, progress=False, log=lambda line: None).count == 3


def test_parquet_errors_are_one_line_and_name_the_file(tmp_path, monkeypatch):
    no_image = tmp_path / "no-image.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "label": [0, 1]}), no_image)
    with pytest.raises(DataError, match=r"no-image.parquet: no image column .* among its columns text, label$"):
        open_source(no_image)
    out_of_range = hub_parquet(tmp_path / "range.parquet", rgb(3), [0, 3, 1])  # 3 names: labels 0..2
    with pytest.raises(DataError, match=r"range.parquet\[1\] \('label'\): label 3 is not below 3, the number of "
                       "class names$"):
        load(str(out_of_range), resolution=4, channels=3)
    (tmp_path / "garbage.parquet").write_bytes(b"not a parquet file at all")
    with pytest.raises(DataError, match=r"garbage.parquet: not a readable parquet file \(.+\)$"):
        open_source(tmp_path / "garbage.parquet")
    good = hub_parquet(tmp_path / "good.parquet", rgb(1), [0])
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if pyarrow were not installed
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DataError) as error:
        load(str(good), resolution=4, channels=3)
    assert str(error.value) == f"{good}: reading parquet needs the pyarrow package: pip install 'vitgan[parquet]'"


def test_pyarrow_is_imported_only_to_read_parquet():
    code = "import sys, vitgan.cli, vitgan.data, vitgan.data.prepare; print('pyarrow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
