"""The Inception-v3 graph of 2015-12-05 that FID, KID, IS and precision/recall are defined with, in plain PyTorch.

This is the TensorFlow `classify_image_graph_def.pb` network of 2015-12-05 (the one of the original FID and IS code),
laid out so that the standard PyTorch port of its weights, `pt_inception-2015-12-05-6726825d.pth` (the file that
pytorch-fid, torch-fidelity and torchmetrics load), loads as it is. It differs from torchvision's Inception-v3 in the
ways that graph does: average pools that do not count padding, a max pool in the last block's pooling branch, 1008
classes. No torchvision is needed (it does not work beside the CPU wheel this project is developed with).

Input protocol, as in the TF graph: uint8 RGB images (grayscale repeated to 3 channels), resized to 299x299 by
TF1-style bilinear interpolation (`align_corners=False`, no half-pixel offset, no antialias) on the 0..255 values,
then (x - 128) / 128. Outputs: the 2048-d average-pool features (`pool_3`, for FID, KID and precision/recall) and the
1008-way logits without the bias (`logits_unbiased`, for IS, as the original IS code multiplies the pool features by
the softmax weights only).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vitgan.errors import first_line
from vitgan.fileio import sha256_file  # noqa: F401 - also used as inception.sha256_file

WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_NAME}"
WEIGHTS_SHA256_PREFIX = "6726825d"  # torch.hub convention: the file name ends with its sha256's first hex digits
WEIGHTS_ENV = "VITGAN_INCEPTION"
RESOLUTION = 299
FEATURES = 2048
CLASSES = 1008


class InceptionError(ValueError):
    """The Inception weights cannot be found or loaded; the message is one line and says how to get them."""


class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3, inference statistics), ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    """The TF graph's 3x3 'SAME' average pool: padding is not counted in the mean."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg_pool(x)),
        ], dim=1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], dim=1)


class InceptionC(nn.Module):
    """Factorised 7x7 convolutions at 17x17."""

    def __init__(self, cin: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dbl = x
        for i in range(1, 6):
            dbl = getattr(self, f"branch7x7dbl_{i}")(dbl)
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            dbl,
            self.branch_pool(_avg_pool(x)),
        ], dim=1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], dim=1)


class InceptionE(nn.Module):
    """Expanded filter bank at 8x8. The graph's first such block (Mixed_7b) average-pools its pooling branch, the
    second (Mixed_7c) max-pools it: `max_pool` selects the latter."""

    def __init__(self, cin: int, *, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(b3), self.branch3x3_2b(b3),
            self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl),
            self.branch_pool(pooled),
        ], dim=1)


def tf1_resize_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of float32 (B, C, H, W) to size x size, bit for bit as TF1's ResizeBilinear with
    align_corners=False (tensorflow/core/kernels/image/resize_bilinear_op.cc, the legacy scaler).

    As that kernel, in float32: scale = in / out (a float32 division); output pixel i samples the input at
    float32(i) * scale (no half-pixel offset); its taps are floor and min(floor + 1, in - 1), weighted by the
    fractional part. Each output value is interpolated along x first (the top and the bottom row), then along y:
    top + (bottom - top) * y_lerp. Positions in float64 instead differ by up to 6e-3 grey levels at 512 -> 299.
    """

    def taps(n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scale = torch.tensor(n_in, dtype=torch.float32) / torch.tensor(size, dtype=torch.float32)
        src = torch.arange(size, dtype=torch.float32) * scale  # (size,) float32 sample positions
        low = src.floor()
        frac = (src - low).to(x.device)
        low = low.long().clamp(max=n_in - 1)
        return low.to(x.device), (low + 1).clamp(max=n_in - 1).to(x.device), frac

    y0, y1, fy = taps(x.shape[2])
    x0, x1, fx = taps(x.shape[3])
    top, bottom = x[:, :, y0], x[:, :, y1]  # (B, C, size, W): the rows above and below each output row
    top = top[..., x0] + (top[..., x1] - top[..., x0]) * fx  # along x, (B, C, size, size)
    bottom = bottom[..., x0] + (bottom[..., x1] - bottom[..., x0]) * fx
    return top + (bottom - top) * fy[:, None]  # then along y


class InceptionV3(nn.Module):
    """FID's Inception-v3: uint8-valued images (B, 1 or 3, H, W) -> (pool features (B, 2048), logits (B, 1008))."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(FEATURES, CLASSES)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[1] != 3:
            raise ValueError(f"Inception takes 1 or 3 channels, got {x.shape[1]}")
        x = ((tf1_resize_bilinear(x, RESOLUTION) - 128) / 128).contiguous(memory_format=torch.channels_last)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (B, 64, 147, 147)
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # (B, 192, 71, 71)
        x = F.max_pool2d(x, 3, stride=2)  # (B, 192, 35, 35)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        pool = x.mean(dim=(2, 3))  # (B, 2048): the graph's 8x8 average pool, pool_3
        return pool, pool @ self.fc.weight.T  # logits without the bias, as the IS code computes them


def _hub_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_NAME


def weights_path(path: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """The Inception weights file: `path`, else $VITGAN_INCEPTION, else the torch hub cache (downloaded there with a
    checksum check when missing and `download` is true)."""
    how = (f"download {WEIGHTS_URL} and pass --inception PATH (or set {WEIGHTS_ENV}), or place it at {_hub_path()}")
    given = path or os.environ.get(WEIGHTS_ENV)
    if given:
        given = Path(given).expanduser()
        if not given.is_file():
            raise InceptionError(f"{given}: Inception weights file not found; {how}")
        return given
    cached = _hub_path()
    if cached.is_file():
        return cached
    if not download:
        raise InceptionError(f"Inception weights not found; {how}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:  # torch.hub writes to a temporary file, checks the sha256 prefix, then renames
        torch.hub.download_url_to_file(WEIGHTS_URL, str(cached), hash_prefix=WEIGHTS_SHA256_PREFIX)
    except Exception as error:  # noqa: BLE001 - no network, HTTP errors, a bad checksum: all end the same way
        raise InceptionError(f"Inception weights not found and the download failed ({first_line(error)}); "
                             f"{how}") from None
    return cached


def load_inception(path: str | os.PathLike | None = None, *, device: torch.device | str = "cpu",
                   download: bool = True) -> InceptionV3:
    """The Inception network with the weights of `weights_path(path)`, in eval mode; loading never runs code."""
    file = weights_path(path, download=download)
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - corrupt file, pickle with code, wrong format
        raise InceptionError(f"{file}: not a readable Inception weights file ({type(error).__name__})") from None
    net = InceptionV3()
    if not isinstance(state, dict):
        raise InceptionError(f"{file}: expected a state dict, got {type(state).__name__}")
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError:  # a tensor of the wrong shape
        raise InceptionError(f"{file}: tensor shapes differ from the 2015-12-05 Inception graph") from None
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        first = (missing or unexpected)[0]
        raise InceptionError(f"{file}: does not match the 2015-12-05 Inception graph ({len(missing)} missing and "
                             f"{len(unexpected)} unexpected tensors, e.g. {first})")
    # channels-last convolutions: about 1.5x faster on CPU, the same numbers up to float round-off
    return net.eval().requires_grad_(False).to(device, memory_format=torch.channels_last)
