"""The one home for loading and sharing a trained generator.

`load` takes a network snapshot, a run folder (its newest snapshot), an exported folder, or a Hugging Face hub id.
`export` (`vitgan export`), `save_pretrained` and `push_to_hub` write the exported folder, which holds G_ema alone:

    config.json         {"format", "vitgan_version", "cfg": the Config, "preset", "data", "kimg", "metrics", "source"}
    model.safetensors   G_ema's state dict (safetensors: loading runs no code)
    README.md           the model card: preset, data, kimg, the run's metrics, the sample grid, how to load it
    samples.png         a grid of latent seeds 0-63 (psi 1)

The hub needs huggingface_hub (the `hub` extra: `pip install 'vitgan[hub]'`), imported only when a hub id is used.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from vitgan._version import __version__
from vitgan.config import Config, ConfigError
from vitgan.errors import first_line
from vitgan.fileio import atomic_write, read_jsonl
from vitgan.networks import Generator, build_discriminator
from vitgan.training.checkpoint import CheckpointError, newest_snapshot, read_snapshot

FORMAT = "vitgan-export-v1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
GRID_NAME = "samples.png"
EXPORT_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME, GRID_NAME)  # all an export writes, and nothing else
GRID_SEEDS = range(64)
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # user/name


# --- loading ---
def load(name: str | os.PathLike, *, network: str = "G_ema", device: str | torch.device = "cpu",
         revision: str | None = None, token: str | None = None) -> nn.Module:
    """A trained network in eval mode: G_ema (or G, or D) of a network snapshot or of a run folder's newest snapshot;
    G_ema of an exported folder or of a hub repository `user/name` (`revision`, `token`: huggingface_hub's)."""
    path = Path(name)
    if is_exported(path) or (not path.exists() and HUB_ID.fullmatch(str(name))):
        if network != "G_ema":
            raise CheckpointError(f"{name}: an exported generator holds G_ema only, not {network!r}")
        folder = path if path.exists() else download(str(name), revision=revision, token=token)
        cfg, state, info = read_exported(folder)
        generator = build(cfg, state, folder / WEIGHTS_NAME)
        generator.export_info = info
        generator.classes = info.get("classes")
        return generator.to(device)
    if not path.exists():
        raise CheckpointError(f"{name}: no such snapshot file, run folder or exported folder")
    snapshot = newest_snapshot(path)
    cfg, states, meta = read_snapshot(snapshot)
    if network not in states:
        raise CheckpointError(f"{snapshot}: has no network {network!r} (it has {', '.join(states)})")
    net = build(cfg, states[network], snapshot, network=network)
    net.export_info = snapshot_info(snapshot, meta)  # what `push_to_hub` and `save_pretrained` record with it
    if network != "D":
        net.classes = meta.get("classes")
    return net.to(device)


def build(cfg: Config, state: dict[str, torch.Tensor], where: Path, *, network: str = "G_ema") -> nn.Module:
    """The network `network` of `cfg` with the weights `state` (read from `where`), in eval mode."""
    net = build_discriminator(cfg) if network == "D" else Generator(cfg)
    try:
        net.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"{where}: does not fit the configuration ({first_line(error)})") from None
    return net.eval()


def is_exported(path: str | Path) -> bool:
    """Whether `path` is a folder written by `export` (or `save_pretrained`)."""
    return (Path(path) / CONFIG_NAME).is_file()


def read_exported(folder: str | Path) -> tuple[Config, dict[str, torch.Tensor], dict[str, Any]]:
    """(config, G_ema state dict, the rest of config.json) of an exported folder."""
    folder = Path(folder)
    config_path, weights = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    try:
        config = json.loads(config_path.read_text())
        cfg = Config.from_dict(config["cfg"])
    except FileNotFoundError:
        raise CheckpointError(f"{config_path}: missing (not an exported vitgan folder)") from None
    except (json.JSONDecodeError, KeyError, TypeError, ConfigError) as error:
        raise CheckpointError(f"{config_path}: not a vitgan export configuration ({error})") from None
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({error})") from None
    return cfg, state, {k: v for k, v in config.items() if k != "cfg"}


def describe(path: str | Path) -> tuple[Config, dict[str, Any], Path]:
    """(config, {preset, data, kimg, metrics, source}, the folder that holds it) of a snapshot, a run folder's newest
    snapshot, or an exported folder, without building the network."""
    path = Path(path)
    if is_exported(path):
        cfg, _, info = read_exported(path)
        return cfg, {"preset": None, "data": None, "kimg": None, "metrics": {}, "source": None, **info}, path
    snapshot = newest_snapshot(path)
    cfg, _, meta = read_snapshot(snapshot)
    return cfg, snapshot_info(snapshot, meta), snapshot.parent


def snapshot_info(snapshot: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """{preset, data, kimg, metrics, source} of a snapshot, from its metadata and its run folder's records."""
    options = snapshot.parent / "training_options.json"
    try:
        run = json.loads(options.read_text()).get("run", {}) if options.is_file() else {}
    except (json.JSONDecodeError, AttributeError):
        run = {}
    kimg = meta.get("cur_nimg", 0) / 1000
    classes = {"classes": meta["classes"]} if meta.get("classes") else {}
    return {"preset": run.get("preset"), "data": run.get("data"), "kimg": kimg,
            "metrics": run_metrics(snapshot, kimg), "source": snapshot.name, **classes}


_RESULT = re.compile(r"(fid|kid|is|pr|dfid|modes)\d+(k\d*)?(_full)?(_mean|_std|_precision|_recall|_kl|_confidence|"
                     r"_agreement|_agreement_worst)?|digit_fid|classes|modes|modes_kl|agreement|agreement_worst")


def run_metrics(snapshot: Path, kimg: float) -> dict[str, float]:
    """The metrics the run recorded for this snapshot: its tick's row of stats.jsonl (metrics during training), then
    the `vitgan eval` records of metrics.jsonl that name the snapshot (later ones win)."""
    metrics: dict[str, float] = {}
    for row in read_jsonl(snapshot.parent / "stats.jsonl"):
        if abs(row.get("kimg", -1) - kimg) < 1e-6:
            metrics.update({k: v for k, v in row.items() if _RESULT.fullmatch(k)})
    for record in read_jsonl(snapshot.parent / "metrics.jsonl"):
        if Path(str(record.get("snapshot", ""))).name == snapshot.name:
            metrics.update(record.get("results", {}))
    return metrics


# --- writing the exported folder ---
def export(source: str | Path, out: str | Path, *, force: bool = False) -> Path:
    """Write the exported folder `out` for a network snapshot or a run folder's newest snapshot; returns `out`."""
    snapshot = newest_snapshot(source)
    cfg, states, meta = read_snapshot(snapshot)
    if "G_ema" not in states:
        raise CheckpointError(f"{snapshot}: has no G_ema to export")
    save_pretrained(build(cfg, states["G_ema"], snapshot), out, snapshot_info(snapshot, meta), force=force)
    return Path(out)


def check_target(out: Path, *, force: bool = False) -> None:
    """Refuse to write an export into a folder that holds other things, unless `force`: an earlier export (its
    files are replaced) or an empty or new folder is fine. Files that are not an export's are never touched."""
    if not out.exists() or force:
        return
    if not out.is_dir():
        raise CheckpointError(f"{out}: exists and is not a folder")
    try:
        earlier = json.loads((out / CONFIG_NAME).read_text()).get("format") == FORMAT
    except (OSError, json.JSONDecodeError, AttributeError):
        earlier = False
    if any(out.iterdir()) and not earlier:
        raise CheckpointError(f"{out}: not empty and not an earlier vitgan export (choose another --out, or --force "
                              f"to write {', '.join(EXPORT_FILES)} into it, replacing files of those names)")


def save_pretrained(generator: nn.Module, out: str | Path, info: dict[str, Any] | None = None, *,
                    force: bool = False) -> None:
    """config.json, model.safetensors, samples.png and README.md of `generator` in the folder `out`, each written
    atomically (the weights before the config, so a folder with a config always has its weights)."""
    from vitgan.images import save_grid
    from vitgan.sampling import CLASS_SHEET_SEEDS, class_sheet, generate, latents

    out = Path(out)
    check_target(out, force=force)
    info = {"preset": None, "data": None, "kimg": None, "metrics": {}, "source": None,
            **{k: v for k, v in (info or {}).items() if k not in ("format", "vitgan_version")}}  # written anew below
    state = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    atomic_write(out / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp), metadata={"format": FORMAT}))
    if getattr(generator, "classes", None):
        info["classes"] = list(generator.classes)
    config = {"format": FORMAT, "vitgan_version": __version__, "cfg": generator.cfg.to_dict(), **info}
    atomic_write(out / CONFIG_NAME, lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n"))
    if generator.cfg.cond:  # one row per class
        z, c = class_sheet(generator.z_dim, generator.cfg.cond)
        save_grid(generate(generator, z, c), out / GRID_NAME, nrow=len(CLASS_SHEET_SEEDS))
    else:
        save_grid(generate(generator, latents(GRID_SEEDS, generator.z_dim)), out / GRID_NAME, nrow=8)
    atomic_write(out / CARD_NAME, lambda tmp: tmp.write_text(model_card(config)))


def model_card(config: dict[str, Any]) -> str:
    """The README.md of an exported folder (Hugging Face model card, with its YAML header)."""
    cfg = config["cfg"]
    metrics = config.get("metrics") or {}
    rows = "\n".join(f"| `{k}` | {v:.6g} |" if isinstance(v, float) else f"| `{k}` | {v} |"
                     for k, v in sorted(metrics.items()))
    table = f"| metric | value |\n|---|---|\n{rows}" if metrics else "No metric was recorded for this snapshot."
    kimg = config.get("kimg")
    output = ("in [-1, 1] (tanh)" if cfg.get("g_output") == "tanh" else
              "unbounded (linear output); clamp to [-1, 1] to view them, as vitgan's image writers do")
    classes = config.get("classes") or [str(k) for k in range(cfg.get("cond", 0))]
    kind = "class-conditional" if cfg.get("cond") else "unconditional"
    sample = ("G(torch.randn(8, G.z_dim), torch.full((8,), 0))  # class 0" if cfg.get("cond")
              else "G(torch.randn(8, G.z_dim))")
    shown = ", ".join(f"{k}: {name}" for k, name in enumerate(classes[:20])) + (", ..." if len(classes) > 20 else "")
    return f"""---
library_name: vitgan
tags:
- gan
- vitgan
- {kind}-image-generation
{"" if cfg.get("cond") else "pipeline_tag: unconditional-image-generation"}
---

# ViTGAN generator ({config.get("preset") or "custom configuration"})

The EMA generator of a [vitgan](https://arxiv.org/abs/2107.04589) run, exported from `{config.get("source")}`.

| | |
|---|---|
| preset | `{config.get("preset")}` |
| data | `{config.get("data")}` |
| images | {cfg["resolution"]}x{cfg["resolution"]}x{cfg["channels"]} |
| trained for | {"unknown" if kimg is None else f"{kimg:g} kimg"} |
| classes | {f"{len(classes)} ({shown})" if cfg.get("cond") else "none (unconditional)"} |
| exported by | vitgan {config.get("vitgan_version")} |

## Metrics

{table}

Metric names as in StyleGAN2-ADA (see vitgan's docs/metrics.md).

## Samples

![{"one row per class, latent seeds 0-7" if cfg.get("cond") else "latent seeds 0-63"}]({GRID_NAME})

## Use

```python
import torch
import vitgan

G = vitgan.load("THIS_FOLDER_OR_HUB_ID")
with torch.no_grad():
    images = {sample}  # (8, C, H, W); pixel values {output}
```

```bash
vitgan generate --ckpt THIS_FOLDER --seeds 0-63 --outdir out{" --class 0" if cfg.get("cond") else ""}
```

## Configuration

```json
{json.dumps(cfg, indent=2)}
```
"""


# --- the Hugging Face hub ---
def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:  # the message says how to get it
        raise ImportError("the Hugging Face hub needs huggingface_hub: pip install 'vitgan[hub]'") from None
    return huggingface_hub


def download(repo_id: str, *, revision: str | None = None, token: str | None = None) -> Path:
    """The local folder of a hub repository's config.json and model.safetensors (from the hub cache when there)."""
    hub = _hub()
    try:
        return Path(hub.snapshot_download(repo_id, revision=revision, token=token,
                                          allow_patterns=[CONFIG_NAME, WEIGHTS_NAME]))
    except Exception as error:  # noqa: BLE001 - no network, no such repository, a bad id: one line
        raise CheckpointError(f"{repo_id}: not a local path, and not downloadable from the Hugging Face hub "
                              f"({first_line(error)})") from None


def push_to_hub(generator: nn.Module, repo_id: str, *, private: bool | None = None, token: str | None = None,
                commit_message: str = "Upload a vitgan generator") -> str:
    """Upload `generator` as an exported folder (with its `export_info`, if loaded from one) to the hub repository
    `repo_id`, created if needed; returns the repository's URL."""
    api = _hub().HfApi(token=token)
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        save_pretrained(generator, folder, getattr(generator, "export_info", None))
        api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)
    return str(url)
