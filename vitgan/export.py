"""Exported generators: a folder that holds G_ema alone, to share (`vitgan export`, the Hugging Face hub).

    config.json         {"format", "vitgan_version", "cfg": the Config, "preset", "data", "kimg", "metrics", "source"}
    model.safetensors   G_ema's state dict (safetensors: loading runs no code)
    README.md           the model card: preset, data, kimg, the run's metrics, the sample grid, how to load it
    samples.png         a grid of latent seeds 0-63 (psi 1)

`cfg` is the argument `Generator.__init__` takes, so the folder is also what huggingface_hub's
`PyTorchModelHubMixin` writes and reads for `vitgan.hub.HubGenerator` (`Generator.push_to_hub`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vitgan.config import Config, ConfigError
from vitgan.fileio import atomic_write
from vitgan.training.checkpoint import CheckpointError, read_snapshot

FORMAT = "vitgan-export-v1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
GRID_NAME = "samples.png"
GRID_SEEDS = range(64)
SNAPSHOT_GLOB = "network-snapshot-*.safetensors"


def is_exported(path: str | Path) -> bool:
    """Whether `path` is a folder written by `export` (or `save_pretrained`)."""
    return (Path(path) / CONFIG_NAME).is_file()


def find_snapshot(path: str | Path) -> Path:
    """A network snapshot file as given, or the newest (most images seen) snapshot of a run folder."""
    path = Path(path)
    if path.is_dir():
        snapshots = sorted(path.glob(SNAPSHOT_GLOB))
        if not snapshots:
            raise CheckpointError(f"{path}: no {SNAPSHOT_GLOB} in this folder")
        return snapshots[-1]
    if not path.is_file():
        raise CheckpointError(f"{path}: no such snapshot file or run folder")
    return path


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a crash
    return rows


_RESULT = re.compile(r"(fid|kid|is|pr|dfid)\d+(k\d*)?(_full)?(_mean|_std|_precision|_recall)?|digit_fid|classes")


def run_metrics(snapshot: Path, kimg: float) -> dict[str, float]:
    """The metrics the run recorded for this snapshot: its tick's row of stats.jsonl (metrics during training), then
    the `vitgan eval` records of metrics.jsonl that name the snapshot (later ones win)."""
    metrics: dict[str, float] = {}
    for row in _read_jsonl(snapshot.parent / "stats.jsonl"):
        if abs(row.get("kimg", -1) - kimg) < 1e-6:
            metrics.update({k: v for k, v in row.items() if _RESULT.fullmatch(k)})
    for record in _read_jsonl(snapshot.parent / "metrics.jsonl"):
        if Path(str(record.get("snapshot", ""))).name == snapshot.name:
            metrics.update(record.get("results", {}))
    return metrics


def export(source: str | Path, out: str | Path) -> Path:
    """Write the exported folder `out` for a network snapshot or a run folder's newest snapshot; returns `out`."""
    from vitgan.networks import Generator

    snapshot = find_snapshot(source)
    cfg, states, meta = read_snapshot(snapshot)
    if "G_ema" not in states:
        raise CheckpointError(f"{snapshot}: has no G_ema to export")
    options_path = snapshot.parent / "training_options.json"
    run = json.loads(options_path.read_text()).get("run", {}) if options_path.is_file() else {}
    kimg = meta.get("cur_nimg", 0) / 1000
    generator = Generator(cfg)
    generator.load_state_dict(states["G_ema"])
    info = {"preset": run.get("preset"), "data": run.get("data"), "kimg": kimg,
            "metrics": run_metrics(snapshot, kimg), "source": snapshot.name}
    save_pretrained(generator.eval(), out, info)
    return Path(out)


def save_pretrained(generator: torch.nn.Module, out: str | Path, info: dict[str, Any] | None = None) -> None:
    """config.json, model.safetensors, samples.png and README.md of `generator` in the folder `out`, each written
    atomically (the weights before the config, so a folder with a config always has its weights)."""
    from vitgan import __version__
    from vitgan.images import save_grid
    from vitgan.sampling import generate, latents

    out = Path(out)
    info = {"preset": None, "data": None, "kimg": None, "metrics": {}, "source": None, **(info or {})}
    state = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    atomic_write(out / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp), metadata={"format": FORMAT}))
    config = {"format": FORMAT, "vitgan_version": __version__, "cfg": generator.cfg.to_dict(), **info}
    atomic_write(out / CONFIG_NAME, lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n"))
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
    return f"""---
library_name: vitgan
tags:
- gan
- vitgan
- unconditional-image-generation
pipeline_tag: unconditional-image-generation
---

# ViTGAN generator ({config.get("preset") or "custom configuration"})

The EMA generator of a [vitgan](https://arxiv.org/abs/2107.04589) run, exported from `{config.get("source")}`.

| | |
|---|---|
| preset | `{config.get("preset")}` |
| data | `{config.get("data")}` |
| images | {cfg["resolution"]}x{cfg["resolution"]}x{cfg["channels"]} |
| trained for | {"unknown" if kimg is None else f"{kimg:g} kimg"} |
| exported by | vitgan {config.get("vitgan_version")} |

## Metrics

{table}

Metric names as in StyleGAN2-ADA (see vitgan's README, "Metrics").

## Samples

![latent seeds 0-63]({GRID_NAME})

## Use

```python
import vitgan
G = vitgan.Generator.from_pretrained("THIS_FOLDER_OR_HUB_ID")   # or vitgan.load("THIS_FOLDER")
images = G(torch.randn(8, G.z_dim))                               # (8, C, H, W) in [-1, 1]
```

```bash
vitgan generate --ckpt THIS_FOLDER --seeds 0-63 --outdir out
```

## Configuration

```json
{json.dumps(cfg, indent=2)}
```
"""


def read_pretrained(folder: str | Path) -> tuple[Config, dict[str, torch.Tensor], dict[str, Any]]:
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


def load_pretrained(folder: str | Path, *, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The Generator of an exported folder, in eval mode, with `export_info` (preset, data, kimg, metrics)."""
    from vitgan.networks import Generator

    cfg, state, info = read_pretrained(folder)
    generator = Generator(cfg)
    try:
        generator.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise CheckpointError(f"{Path(folder) / WEIGHTS_NAME}: does not fit the configuration ({first})") from None
    generator.export_info = info
    return generator.to(device).eval()
