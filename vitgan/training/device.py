"""Which device and which autocast precision a command runs on (`--device`, `--precision`)."""

from __future__ import annotations

import torch

from vitgan.config import ConfigError


def resolve_device(name: str) -> torch.device:
    """The torch device for `auto`, `cpu`, `cuda` or `cuda:N`; on CUDA, fp32 matrix products may use TF32."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device: cannot use {name!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {name!r} requested but CUDA is not available")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `fp32`, `bf16` or `auto` (bf16 where the hardware has bf16 matrix units), or None for
    plain fp32."""
    if name == "fp32":
        return None
    if name == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
