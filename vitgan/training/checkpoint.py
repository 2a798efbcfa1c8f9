"""Checkpoints of two kinds, both loadable without executing code.

- Network snapshot (`network-snapshot-NNNNNNNNN.safetensors`, N = images seen): the weights of G_ema, G and D as
  safetensors, with the Config as JSON in the file's metadata. `vitgan.load(path)` rebuilds the EMA generator from it.
- Training state (`training-state-NNNNNNNNN.pt`): everything `--resume` needs (G, D, G_ema, both optimisers, the
  data order, the image counter, the tick, and the RNG states of torch, numpy and python), saved by `torch.save`
  with tensors and plain Python values only, and read back with `torch.load(weights_only=True)`.

Every file is written to a temporary name, flushed to disk and renamed, so a crash never leaves a half-written
checkpoint in place of a good one.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from vitgan.config import Config, ConfigError
from vitgan.fileio import atomic_write

FORMAT = "vitgan-snapshot-v1"


class CheckpointError(ValueError):
    """A checkpoint cannot be read; the message is one line and names the file."""


def save_snapshot(path: Path, cfg: Config, networks: dict[str, nn.Module], meta: dict[str, Any]) -> None:
    tensors = {
        f"{name}.{key}": value.detach().cpu().contiguous()
        for name, net in networks.items()
        for key, value in net.state_dict().items()
    }
    metadata = {"format": FORMAT, "config": json.dumps(cfg.to_dict()), "meta": json.dumps(meta)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def read_snapshot(path: str | Path) -> tuple[Config, dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """(config, {network name: state_dict}, meta) of a network snapshot."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such snapshot file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors snapshot ({error})") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a vitgan network snapshot (format {metadata.get('format')!r})")
    try:
        cfg = Config.from_dict(json.loads(metadata["config"]))
    except (KeyError, json.JSONDecodeError, TypeError, ConfigError) as error:
        raise CheckpointError(f"{path}: invalid configuration in the snapshot ({error})") from None
    states: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, _, rest = key.partition(".")
        states.setdefault(name, {})[rest] = value
    return cfg, states, json.loads(metadata.get("meta", "{}"))


def load(path: str | Path, *, network: str = "G_ema", device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a network (G_ema by default; also G or D) from a network snapshot, in eval mode. No pickle involved."""
    from vitgan.networks import Generator, build_discriminator

    cfg, states, _ = read_snapshot(path)
    if network not in states:
        raise CheckpointError(f"{path}: has no network {network!r} (it has {', '.join(states)})")
    net = build_discriminator(cfg) if network == "D" else Generator(cfg)
    net.load_state_dict(states[network])
    return net.to(device).eval()


def rng_state() -> dict[str, Any]:
    """The RNG states of torch (CPU), numpy and python, as tensors and plain values (safe for weights_only)."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_kind, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_gauss],
        "python": [py_version, list(py_internal), py_gauss],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_py = state["python"]
    random.setstate((version, tuple(internal), gauss_py))


def save_training_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such training-state file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a bad or unsafe pickle
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: not a loadable vitgan training state ({first_line})") from None
