"""Which device and which autocast precision a command runs on (`--device`, `--precision`), and the machine's
matrix-product rate that a run's speed is read against."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from typing import Literal

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


# torch.compile's modes that `--compile-mode` may name (reduce-overhead: CUDA graphs, on CUDA only)
CompileMode = Literal["default", "max-autotune-no-cudagraphs", "reduce-overhead"]


def to_device(t: torch.Tensor, device: torch.device | None) -> torch.Tensor:
    """A host tensor on `device` without a host sync: on CUDA through pinned memory with a non-blocking copy (a
    pageable one waits for every kernel queued before it), elsewhere a plain copy; None leaves it where it is."""
    if device is None or t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def auto_precision(device_type: str, has_bf16: bool) -> torch.dtype | None:
    """`--precision auto`: bf16 where the hardware has bf16 matrix units, else fp16 (with a gradient scaler) on CUDA,
    else None (plain fp32)."""
    if has_bf16:
        return torch.bfloat16
    return torch.float16 if device_type == "cuda" else None


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `fp32` (None: plain fp32), `bf16`, `fp16` or `auto` (`auto_precision`)."""
    if name != "auto":
        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
    if device.type == "cuda":  # not counting emulated bf16 (pre-Ampere GPUs), which is slower than fp16
        return auto_precision("cuda", torch.cuda.is_bf16_supported(including_emulation=False))
    return auto_precision(device.type, torch.ops.mkldnn._is_mkldnn_bf16_supported())


def has_amx() -> bool:
    """Whether this CPU has AMX tiles (Intel's matrix units; torch's own probe, absent from older builds)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe is not None and probe())


def precision_name(amp: torch.dtype | None) -> str:
    """The `--precision` name of an autocast dtype (None: fp32), for logs and records."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp, "fp32")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA; elsewhere there is none)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], object], device: torch.device, *, warmup: int = 2, repeats: int = 5) -> float:
    """Median wall-clock milliseconds of fn() after `warmup` calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def gemm_gflops(device: torch.device, dtype: torch.dtype, n: int = 4096) -> float:
    """The rate of one large square matrix product (2 n^3 FLOPs) in `dtype`. Its operands come from a generator of
    its own: a run that measures it at start (a resumed one too) leaves the global random state untouched."""
    generator = torch.Generator(device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=generator).to(dtype)
    b = torch.randn(n, n, device=device, generator=generator).to(dtype)
    return 2 * n**3 / time_ms(lambda: a @ b, device, warmup=1, repeats=3) / 1e6


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model with the thread count, for logs and records."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model} ({torch.get_num_threads()} threads)"
