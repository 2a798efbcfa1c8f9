"""Data-parallel training with torch.distributed, launched by torchrun: one process per device.

Every rank holds the full networks and optimisers and draws the same global batch (the same data order, latents and
augmentation parameters, from generators seeded by the run seed); each takes its own shard of it, and after the
backward pass the gradients are averaged over the ranks with one all-reduce per network, so every rank takes the
same optimiser step and the parameters stay identical, as with DistributedDataParallel. The averaging is done here
rather than by wrapping the networks in `DistributedDataParallel` because the D step's lazy R1 is a double backward
and G and D alternate which parameters need gradients, which DDP's bucketed hooks do not support; the collective
is the same all-reduce DDP uses. NCCL serves GPUs, gloo CPUs.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """True under torchrun (or any launcher that sets WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str, *, timeout_s: float = 600) -> tuple[World, str]:
    """Join the process group when launched by torchrun; returns (World, the device this rank should use).

    `timeout_s` bounds every collective: a rank that dies makes the others fail with an error after at most that
    long (torchrun itself stops the whole job as soon as one worker exits with an error).
    """
    if not launched():
        return World(), device
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return World(rank, size, local_rank), device


def shutdown(*, clean: bool = True) -> None:
    """Leave the process group. After a clean finish every rank first waits at a barrier, so that none tears down its
    connections (and exits) while another still communicates: a gloo rank whose peer vanished mid-collective or whose
    worker threads were never joined dies with SIGABRT ("terminate called without an active exception") instead of
    exiting. Then the group is destroyed, which joins its worker threads while the interpreter is fully alive. After
    an error (`clean=False`) the barrier is skipped: the other ranks may never reach it."""
    if not dist.is_initialized():
        return
    try:
        if clean:
            dist.barrier()
    finally:
        dist.destroy_process_group()


def exit_now(code: int) -> None:
    """End this rank's process with `code` at once, after `shutdown`: output flushed, the interpreter's finalisation
    skipped. A collective backend's worker thread that outlives the group and still drops a tensor during
    finalisation must take the GIL, which then ends the thread from inside C++ and aborts the whole process (SIGABRT,
    "terminate called without an active exception"; pytorch/pytorch#179291): a finished rank would report a failure
    to its launcher. Only for a process that is a rank and has nothing left to do."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def broadcast_module(module: nn.Module, world: World) -> None:
    """Copy rank 0's parameters and buffers to every rank (as DDP does when it wraps a module)."""
    if world.size == 1:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor, src=0)


def average_gradients(module: nn.Module, world: World) -> None:
    """Replace each gradient of `module` by its mean over the ranks (one flattened all-reduce)."""
    if world.size == 1:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= world.size
    for g, part in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
        g.copy_(part.view_as(g))


def average_buffers(module: nn.Module, world: World) -> None:
    """Replace each floating-point buffer of `module` by its mean over the ranks: for running statistics that each
    rank updates from its own samples by an affine rule (the generator's w_avg), this equals the whole batch's."""
    if world.size == 1:
        return
    for buffer in module.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer /= world.size


def mean_over_ranks(values: dict[str, torch.Tensor], world: World) -> dict[str, torch.Tensor]:
    """The mean of each scalar tensor over the ranks (the same keys on every rank), on the tensors' device: one
    collective, no host sync."""
    if world.size == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.stack([values[k].reshape(()).to(torch.float64) for k in keys])
    dist.all_reduce(t)
    return {k: v / world.size for k, v in zip(keys, t.unbind(), strict=True)}


def gather(obj: Any, world: World) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    if world.size == 1:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool, world: World) -> bool:
    """True on every rank when `flag` is true on at least one (so that all ranks take the same branch)."""
    if world.size == 1:
        return flag
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()
