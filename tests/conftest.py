"""Fixtures shared by the test files, and hypothesis's settings profiles."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings
from hypothesis.database import DirectoryBasedExampleDatabase
from PIL import Image
from torch import nn

from vitgan.metrics import inception
from vitgan.metrics.inception import InceptionV3

# CI (CI=true) must never fail by chance: the property tests there draw the same examples on every run and keep no
# database. Elsewhere they explore (a new random draw each run) and remember every failing example in a local
# database (.hypothesis/examples, ignored by git), which replays it first on the next run until it is fixed.
EXAMPLES_DATABASE = Path(__file__).parent.parent / ".hypothesis" / "examples"
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev", database=DirectoryBasedExampleDatabase(EXAMPLES_DATABASE))
settings.load_profile("ci" if os.environ.get("CI", "").lower() == "true" else "dev")


@pytest.fixture(autouse=True)
def private_metric_cache(tmp_path_factory, monkeypatch):
    """Reference features go to a temporary folder, never to the user's ~/.cache."""
    monkeypatch.setenv("VITGAN_CACHE", str(tmp_path_factory.getbasetemp() / "vitgan-cache"))


def random_inception_weights(path, seed: int = 0) -> None:
    """A weights file in the layout of pt_inception-2015-12-05, with He-initialised random convolutions (so that the
    features carry signal through 94 layers) and random batch-norm statistics."""
    torch.manual_seed(seed)
    net = InceptionV3()
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.8, 1.2)
    torch.save(net.state_dict(), path)


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / inception.WEIGHTS_NAME
    random_inception_weights(path)
    return path


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """A folder of 12 small grayscale PNGs (32x32)."""
    root = tmp_path_factory.mktemp("digits")
    rng = np.random.default_rng(0)
    for i in range(12):
        pixels = np.zeros((32, 32), np.uint8)
        pixels[8:24, 12 + i % 4:16 + i % 4] = rng.integers(128, 256)
        Image.fromarray(pixels).save(root / f"{i:02d}.png")
    return root
