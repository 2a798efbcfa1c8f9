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
