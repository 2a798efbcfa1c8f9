"""The bundled MNIST digits and `load` on a folder (every other format: test_prepare.py)."""

import numpy as np
import pytest
import torch
from PIL import Image

from vitgan.data import DataError, load, load_mnist5k


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
