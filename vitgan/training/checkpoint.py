"""Checkpoints of two kinds, both loadable without executing code.

- Network snapshot (`network-snapshot-NNNNNNNNN.safetensors`, N = images seen): the weights of G_ema, G and D as
  safetensors, with the Config as JSON in the file's metadata. `vitgan.load(path)` (pretrained.py) rebuilds the EMA
  generator from it.
- Training state (`training-state-NNNNNNNNN.pt`): everything `--resume` needs (G, D, G_ema, both optimisers, the
  data order, the image counter, the tick, and the RNG states of torch, numpy and python), saved by `torch.save`
  with tensors and plain Python values only, and read back with `torch.load(weights_only=True)`.

Every file is written to a temporary name, flushed to disk and renamed, so a crash never leaves a half-written
checkpoint in place of a good one. Beside each checkpoint a sidecar `<name>.sha256` (the format of `sha256sum`, so
`sha256sum -c` checks it too) holds the sha256 of the complete file; it is written *before* the checkpoint is renamed
into place, so a checkpoint in place always has its checksum (a kill in between leaves only a sidecar, which is
ignored). Loading recomputes it: a mismatch is a damaged file. A file without a sidecar (written by an older vitgan
or copied alone) loads as "unverified", with a warning where it is chosen automatically. A state whose tensors hold
NaN or inf is never written. `find_resume` picks what `--resume` continues from, falling back past damaged states.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import re
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from vitgan.config import Config, ConfigError
from vitgan.errors import first_line
from vitgan.fileio import atomic_write, sha256_file, stale_temporaries

FORMAT = "vitgan-snapshot-v1"
STATE_FORMAT = "vitgan-training-state-v2"  # v2: the per-sample generator's state ("sample_rng"), for any rank count
SNAPSHOT_GLOB = "network-snapshot-*.safetensors"
STATE_GLOB = "training-state-*.pt"
CHECKSUM_SUFFIX = ".sha256"


class CheckpointError(ValueError):
    """A checkpoint cannot be read or written; the message is one line and names the file."""


# --- file names: N is the number of images seen, so names sort by progress ---
def snapshot_name(nimg: int) -> str:
    return f"network-snapshot-{nimg:09d}.safetensors"


def state_name(nimg: int) -> str:
    return f"training-state-{nimg:09d}.pt"


def snapshots(folder: Path) -> list[Path]:
    """The network snapshots of one run folder, oldest first."""
    return sorted(Path(folder).glob(SNAPSHOT_GLOB))


def newest_snapshot(path: str | Path) -> Path:
    """A network snapshot file as given, or the newest (most images seen) snapshot of a run folder."""
    path = Path(path)
    if path.is_dir():
        found = snapshots(path)
        if not found:
            raise CheckpointError(f"{path}: no {SNAPSHOT_GLOB} in this folder")
        return found[-1]
    if not path.is_file():
        raise CheckpointError(f"{path}: no such snapshot file or run folder")
    return path


# --- checksums ---
def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def verify(path: Path) -> bool | None:
    """True if the file matches its sha256 sidecar, False if it does not, None if it has no (readable) sidecar."""
    try:
        expected = checksum_path(path).read_text().split()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    return sha256_file(path) == expected


def _write_checked(path: Path, write: Callable[[Path], None]) -> None:
    """atomic_write with a sha256 sidecar written before the rename; an OSError (a full disk) is a CheckpointError
    that names the file, and leaves the previous checkpoints as they were."""

    def record_checksum(tmp: Path) -> None:
        line = f"{sha256_file(tmp)}  {path.name}\n"
        atomic_write(checksum_path(path), lambda side: side.write_text(line))

    try:
        atomic_write(path, write, before_replace=record_checksum)
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else str(error)
        if error.errno == errno.ENOSPC:
            reason = "no space left on device"
        raise CheckpointError(f"{path}: cannot write the checkpoint: {reason} (nothing was replaced; the previous "
                              "checkpoints are intact)") from None


def assert_finite(tree: Any, what: Path | str, prefix: str = "") -> None:
    """Raise FloatingPointError naming the first tensor of a (nested dict/list) state that holds NaN or inf."""
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point() and not bool(torch.isfinite(tree).all()):
            raise FloatingPointError(f"{prefix or 'tensor'} holds NaN or inf; not writing {what}")
    elif isinstance(tree, dict):
        for key, value in tree.items():
            assert_finite(value, what, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            assert_finite(value, what, f"{prefix}[{index}]")


def save_snapshot(path: Path, cfg: Config, networks: dict[str, nn.Module], meta: dict[str, Any]) -> None:
    tensors = {
        f"{name}.{key}": value.detach().cpu().contiguous()
        for name, net in networks.items()
        for key, value in net.state_dict().items()
    }
    assert_finite(tensors, path)
    metadata = {"format": FORMAT, "config": json.dumps(cfg.to_dict()), "meta": json.dumps(meta)}
    _write_checked(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def read_snapshot(path: str | Path) -> tuple[Config, dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """(config, {network name: state_dict}, meta) of a network snapshot."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such snapshot file")
    _check_sum(path)
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


def _check_sum(path: Path) -> bool:
    """True if verified, False if the file has no checksum; raises CheckpointError on a mismatch."""
    verified = verify(path)
    if verified is False:
        raise CheckpointError(f"{path}: damaged: its sha256 differs from {checksum_path(path).name} (the file changed "
                              "after it was written)")
    return verified is True


def save_training_state(path: Path, state: dict[str, Any]) -> None:
    """Write a training state (never one holding NaN or inf) with its checksum sidecar."""
    assert_finite({key: state[key] for key in ("G", "D", "G_ema", "opt_g", "opt_d") if key in state}, path)
    _write_checked(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read a training state with `torch.load(weights_only=True)` (no code runs), after checking its checksum."""
    return _load_training_state(Path(path))[0]


def _load_training_state(path: Path) -> tuple[dict[str, Any], bool]:
    """(state, verified): verified is False for a file without a checksum sidecar."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such training-state file")
    verified = _check_sum(path)
    if not zipfile.is_zipfile(path):  # what torch.save writes: random bytes or a truncated file are not one
        raise CheckpointError(f"{path}: not a vitgan training state (not a file written by torch.save)")
    try:
        with warnings.catch_warnings():  # torch warns about odd pickle protocols of damaged files: the error says it
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL (\S+)", str(error))
        if not found:  # a damaged pickle, not one that asks for code
            raise CheckpointError(f"{path}: not a loadable vitgan training state ({first_line(error)})") from None
        raise CheckpointError(f"{path}: refused: its pickle calls {found.group(1)}, which a training state never "
                              "contains (not loaded, nothing was run; the file may be malicious)") from None
    except Exception as error:  # torch raises many types for a truncated or foreign file
        raise CheckpointError(f"{path}: not a loadable vitgan training state ({first_line(error)})") from None
    found = state.get("format") if isinstance(state, dict) else None
    if found != STATE_FORMAT:
        if isinstance(found, str) and found.startswith("vitgan-training-state-"):
            raise CheckpointError(f"{path}: a training state of format {found!r}, which this vitgan cannot resume "
                                  f"(it writes and reads {STATE_FORMAT!r})")
        raise CheckpointError(f"{path}: not a vitgan training state (no format {STATE_FORMAT!r})")
    return state, verified


# --- which training states exist, and which one to resume from ---
def training_states(folder: Path) -> list[Path]:
    """The training states of one run folder, newest (most images seen) first."""
    return sorted(folder.glob(STATE_GLOB), reverse=True)


def prune_training_states(folder: Path, keep: int) -> None:
    """Delete all but the newest `keep` training states (each before its sidecar) and orphaned sidecars."""
    for old in training_states(folder)[keep:]:
        old.unlink(missing_ok=True)
        checksum_path(old).unlink(missing_ok=True)
    for sidecar in folder.glob(STATE_GLOB + CHECKSUM_SUFFIX):
        if not sidecar.with_suffix("").exists():
            sidecar.unlink(missing_ok=True)


def _run_folders(outdir: Path) -> list[Path]:
    """outdir's run folders NNNNN-*, newest (highest number) first."""
    if not outdir.is_dir():
        return []
    runs = [p for p in outdir.iterdir() if p.is_dir() and re.match(r"^\d{5}-", p.name)]
    return sorted(runs, key=lambda p: int(p.name[:5]), reverse=True)


def find_resume(spec: str, outdir: str | Path, say: Callable[[str], None]) -> tuple[Path, dict[str, Any]] | None:
    """The training state that `--resume SPEC` continues from, loaded: (path, state).

    - a file: that file; a damaged one is an error.
    - a run folder: its newest training state that loads and verifies, falling back to older ones.
    - `auto`: the same over every run folder in `outdir`, newest run first (the highest run number, then the most
      images seen); None when `outdir` holds no training state at all (a fresh start).
    A damaged candidate is skipped with a warning; so is one without a checksum while a verified one remains.
    Temporary files left by killed writes are removed. What was chosen, skipped or removed is told to `say`.
    """
    if spec == "auto":
        folders = _run_folders(Path(outdir))
    elif Path(spec).is_dir():
        folders = [Path(spec)]
    else:
        state, verified = _load_training_state(Path(spec))
        say(f"resuming from {spec} ({'sha256 verified' if verified else 'unverified: no checksum file'})")
        return Path(spec), state
    for folder in folders:
        for tmp in stale_temporaries(folder):
            say(f"removing {tmp}, a partial file left by an interrupted write")
            tmp.unlink(missing_ok=True)
    candidates = [state for folder in folders for state in training_states(folder)]
    if not candidates:
        if spec == "auto":
            say(f"resume auto: no training state in {outdir}; starting a new run")
            return None
        raise CheckpointError(f"{spec}: no {STATE_GLOB} in this folder")
    unverified: tuple[Path, dict[str, Any]] | None = None
    for path in candidates:
        try:
            state, verified = _load_training_state(path)
        except CheckpointError as error:
            say(f"warning: skipping a damaged training state: {error}")
            continue
        if verified:
            say(f"resuming from {path} (sha256 verified)")
            return path, state
        say(f"warning: {path} has no {CHECKSUM_SUFFIX} checksum; looking for a verified one")
        unverified = unverified or (path, state)
    if unverified is not None:
        say(f"warning: resuming from {unverified[0]} unverified (no verified training state found)")
        return unverified
    raise CheckpointError(f"{spec}: none of the {len(candidates)} training states loads (all damaged)")
