"""`vitgan bench`: the speed of a preset's D, G and full training iteration, against a standard ViT and the GEMM rate.

Everything is measured in one process, one after the other, so the ratios compare like with like:
- D forward+backward (parameter gradients, as in the D step) and the same for a standard ViT of equal size: the
  discriminator's width, depth, heads, MLP width and token count, built from `nn.TransformerEncoderLayer` (pre-LN,
  GELU, no dropout) with plain patches, dot-product attention and no spectral normalisation;
- G forward+backward;
- one full training iteration (`Trainer.run_step`, no host sync: a D step with DiffAugment, bCR and lazy R1 as
  configured, a G step, the EMA update) on random images, and its images/s: the median over the repeats, so an
  ordinary iteration, not one of the costlier lazy-R1 ones (every r1_interval-th); and the mean of a whole cycle
  of r1_interval iterations, R1's included (`cycle_ms`, `cycle_images_per_s`: the rate a training run can reach);
- the model FLOPs of an ordinary iteration (matrix products, counted by `torch.utils.flop_counter`), hence its achieved
  GFLOP/s, against a 4096^3 matrix product timed in fp32 (and in autocast's bf16 or fp16 when autocast is on);
- peak memory during the training iterations (timed first, so nothing else has run yet): CUDA's peak allocation,
  or on a CPU the process's peak resident set (which includes the Python runtime, about 0.2 GB).
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from einops import rearrange
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from vitgan.config import Config
from vitgan.data import ImageData
from vitgan.networks import count_parameters
from vitgan.training.device import CompileMode, device_name, gemm_gflops, precision_name, time_ms

if TYPE_CHECKING:
    from vitgan.training.trainer import Trainer


class StandardViT(nn.Module):
    """A textbook ViT classifier head of the discriminator's size, for timing comparisons."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.patch = cfg.d_patch
        tokens = (cfg.resolution // cfg.d_patch) ** 2
        self.embed = nn.Linear(cfg.channels * cfg.d_patch**2, cfg.d_dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.d_dim))
        self.pos = nn.Parameter(torch.zeros(1, tokens + 1, cfg.d_dim))
        layer = nn.TransformerEncoderLayer(cfg.d_dim, cfg.d_heads, cfg.d_mlp_dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.d_depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.d_dim)
        self.head = nn.Linear(cfg.d_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch
        tokens = self.embed(rearrange(x, "b c (h p) (w q) -> b (h w) (c p q)", p=p, q=p))  # (B, L, dim)
        h = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1) + self.pos
        return self.head(self.norm(self.encoder(h)[:, 0])).squeeze(-1)


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _forward_backward(net: nn.Module, make_input: Callable[[], torch.Tensor], autocast: Callable) -> Callable[[], None]:
    def run() -> None:
        net.requires_grad_(True).zero_grad(set_to_none=True)
        with autocast():
            out = net(make_input()).float()
        out.sum().backward()

    return run


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def random_trainer(cfg: Config, *, preset: str, device: torch.device, amp: torch.dtype | None,
                   compile: bool = False, compile_mode: CompileMode = "default") -> Trainer:
    """A Trainer of `cfg` on random images (at least two batches, 256 at the fewest), its networks from seed 0."""
    from vitgan.training.trainer import Trainer

    torch.manual_seed(0)
    images = torch.randint(0, 256, (max(2 * cfg.batch, 256), cfg.channels, cfg.resolution, cfg.resolution),
                           dtype=torch.uint8)
    return Trainer(cfg, ImageData(images, torch.full((len(images),), -1), "random"), device, amp, preset=preset,
                   compile=compile, compile_mode=compile_mode)


def iteration_flops(trainer: Trainer) -> int:
    """The matrix-product FLOPs of one ordinary (not lazy-R1) iteration of an eager Trainer (compiled code hides
    them from the counter, which also cannot follow R1's double backward: an R1 iteration due is taken first)."""
    if trainer.cfg.r1_gamma > 0 and trainer.d_steps % trainer.cfg.r1_interval == 0:
        trainer.step()
    return count_flops(trainer.step)


def run_benchmark(cfg: Config, *, preset: str, device: torch.device, amp: torch.dtype | None, compile: bool = False,
                  repeats: int = 5) -> dict[str, object]:
    """Every figure of the module docstring, as one flat dict."""
    from vitgan.training.trainer import images_per_step

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer = random_trainer(cfg, preset=preset, device=device, amp=amp, compile=compile)
    memory_before = peak_memory_mb(device)
    step_ms = time_ms(trainer.run_step, device, warmup=3, repeats=repeats)  # first: the peak below is the iteration's
    memory_peak = peak_memory_mb(device)
    cycle = cfg.r1_interval if cfg.r1_gamma > 0 else 1  # one lazy-R1 iteration in every cycle
    cycle_ms = time_ms(lambda: [trainer.run_step() for _ in range(cycle)], device, warmup=1,
                       repeats=max(3, repeats // cycle)) / cycle
    autocast = trainer.autocast
    x = torch.rand(cfg.batch, cfg.channels, cfg.resolution, cfg.resolution, device=device) * 2 - 1
    z = torch.randn(cfg.batch, cfg.z_dim, device=device)
    vit = StandardViT(cfg).to(device).train()
    d, g = trainer.D, trainer.G
    d_ms = time_ms(_forward_backward(trainer.D_run, lambda: x, autocast), device, repeats=repeats)
    vit_run = torch.compile(vit) if compile else vit
    vit_ms = time_ms(_forward_backward(vit_run, lambda: x, autocast), device, repeats=repeats)
    g_ms = time_ms(_forward_backward(trainer.G_run, lambda: z, autocast), device, repeats=repeats)
    trainer.D_run, trainer.G_run = d, g  # FLOPs are counted on the plain modules (compiled code hides them)
    step_flops = iteration_flops(trainer)
    d_flops = count_flops(_forward_backward(d, lambda: x, autocast))
    vit_flops = count_flops(_forward_backward(vit, lambda: x, autocast))
    fp32 = gemm_gflops(device, torch.float32)
    result: dict[str, object] = {
        "preset": preset, "batch": cfg.batch, "device": device_name(device),
        "precision": precision_name(amp), "compile": compile,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "G_params": count_parameters(g), "D_params": count_parameters(d), "vit_params": count_parameters(vit),
        "d_fwd_bwd_ms": round(d_ms, 2), "vit_fwd_bwd_ms": round(vit_ms, 2), "d_vs_vit": round(d_ms / vit_ms, 3),
        "d_gflop": round(d_flops / 1e9, 2), "vit_gflop": round(vit_flops / 1e9, 2),
        "g_fwd_bwd_ms": round(g_ms, 2),
        "iteration_ms": round(step_ms, 2), "images_per_s": round(images_per_step(cfg) / step_ms * 1000, 1),
        "cycle_ms": round(cycle_ms, 2), "cycle_images_per_s": round(images_per_step(cfg) / cycle_ms * 1000, 1),
        "iteration_gflop": round(step_flops / 1e9, 2),
        "iteration_gflops_per_s": round(step_flops / step_ms / 1e6, 1),
        "gemm_fp32_gflops_per_s": round(fp32, 1),
        "iteration_vs_gemm_fp32": round(step_flops / step_ms / 1e6 / fp32, 3),
    }
    if amp is not None:
        low = gemm_gflops(device, amp)
        result[f"gemm_{precision_name(amp)}_gflops_per_s"] = round(low, 1)
        result[f"iteration_vs_gemm_{precision_name(amp)}"] = round(step_flops / step_ms / 1e6 / low, 3)
    result["memory_before_iteration_mb"] = round(memory_before, 1)  # networks, optimisers, data, runtime
    result["peak_memory_mb"] = round(memory_peak, 1)  # the above plus the iteration's activations and gradients
    result["peak_memory_kind"] = "cuda max allocated" if device.type == "cuda" else "process peak RSS"
    return result
