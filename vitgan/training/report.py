"""What a run writes, in its own folder `runs/NNNNN-<preset>-<data>/` (rank 0 only): training_options.json, log.txt
(each line also printed), stats.jsonl with losses.png and metrics.png, the sample grids, and TensorBoard events when
tensorboard is installed. Checkpoints are the Trainer's (trainer.py, checkpoint.py).

A stats.jsonl row is one tick: `time` since the run started; `sec_per_kimg`, the tick's steps alone (the status
line's img/s is 1000 over it); `img_per_sec`, the run's mean since it started (compiling and per-tick work included);
`maintenance_s`, the previous tick's end; then the means of the steps' statistics and the tick's measures."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch

from vitgan import distributed
from vitgan.distributed import World
from vitgan.fileio import atomic_write, read_jsonl
from vitgan.images import save_grid
from vitgan.training.loss import TERMS

# the status line: the loss terms, then what else a tick measures (augment_p: ADA moves it; agreement: a conditional
# G's; modes on StackedMNIST; metrics of --metrics follow)
SHOWN = (*TERMS, "logits_real", "logits_fake", "augment_p", "g_z_std", "digit_fid", "classes", "agreement", "modes",
         "modes_kl")


def new_run_dir(outdir: Path, preset: str, data_name: str) -> Path:
    """outdir/NNNNN-<preset>-<data>, NNNNN one more than the largest number already there."""
    outdir.mkdir(parents=True, exist_ok=True)
    numbers = [int(m.group(1)) for p in outdir.iterdir() if (m := re.match(r"^(\d{5})-", p.name))]
    safe = re.sub(r"[^A-Za-z0-9_.]+", "_", data_name) or "data"
    run_dir = outdir / f"{max(numbers, default=-1) + 1:05d}-{preset}-{safe}"
    run_dir.mkdir()
    return run_dir


class Report:
    """The run folder of rank 0 (`run_dir`; None on the other ranks, where nothing is written or printed)."""

    def __init__(self, run_dir: Path | None) -> None:
        self.run_dir = run_dir
        self.metric_names: list[str] = []
        self._log = open(run_dir / "log.txt", "a", buffering=1) if run_dir else None  # noqa: SIM115 - close()
        self._tb = _tensorboard(run_dir) if run_dir else None

    @classmethod
    def create(cls, outdir: Path, preset: str, data_name: str, world: World) -> tuple[Report, Path]:
        """A new run folder made by rank 0; returns this rank's Report and the folder (known to every rank)."""
        run_dir = new_run_dir(outdir, preset, data_name) if world.is_main else None
        shared = distributed.gather(run_dir, world)[0]
        return cls(run_dir), shared

    def log(self, line: str) -> None:
        """A line to stdout and log.txt."""
        if self._log is not None:
            print(line, flush=True)
            self._log.write(line + "\n")

    def options(self, options: dict[str, Any]) -> None:
        if self.run_dir is not None:
            (self.run_dir / "training_options.json").write_text(json.dumps(options, indent=2) + "\n")

    def grid(self, images: torch.Tensor, name: str, nrow: int | None = None) -> None:
        if self.run_dir is not None:
            save_grid(images, self.run_dir / name, nrow=nrow)

    def tick(self, row: dict[str, Any], images: torch.Tensor, nimg: int, eta: float, metrics: list[str]) -> None:
        """One tick's measurements (`metrics`: the names of its --metrics results in `row`): a stats.jsonl row, the
        plots, TensorBoard, and the status line, whose img/s is the tick's, as its sec/kimg."""
        if self.run_dir is None:
            return
        stats_path = self.run_dir / "stats.jsonl"
        with open(stats_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        plot_losses(stats_path, self.run_dir / "losses.png")
        self.metric_names[:] = list(dict.fromkeys(self.metric_names + metrics))
        if self.metric_names:
            plot_metrics(stats_path, self.metric_names, self.run_dir / "metrics.png")
        if self._tb is not None:
            for key, value in row.items():
                self._tb.add_scalar(f"train/{key}", value, nimg)
            self._tb.add_images("fakes", (images[:32] + 1) / 2, nimg)
        terms = "  ".join(f"{k} {row[k]:.3f}" if isinstance(row[k], float) else f"{k} {row[k]}"
                          for k in (*SHOWN, *self.metric_names) if k in row)
        rate = 1000 / max(row["sec_per_kimg"], 1e-9)  # the tick's, as sec/kimg (the run's mean: img_per_sec)
        self.log(f"tick {row['tick']:<4d} kimg {row['kimg']:<7.1f} time {format_seconds(row['time'])}  "
                 f"sec/kimg {row['sec_per_kimg']:<6.2f} img/s {rate:<6.1f} ETA {format_seconds(eta)}  {terms}")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._log is not None:
            self._log.close()


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional extra
        return None
    return SummaryWriter(str(run_dir))


def plot_losses(stats_path: Path, out: Path) -> None:
    """losses.png: the per-tick means of the loss terms against kimg; the digit FID, and StackedMNIST's modes, when
    the rows have them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_jsonl(stats_path)
    if not rows:
        return
    kimg = [r["kimg"] for r in rows]
    modes = "modes" in rows[0]
    panels = 2 + ("digit_fid" in rows[0]) + modes
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.5), squeeze=False)
    axes = axes[0]
    for ax, keys in ((axes[0], TERMS), (axes[1], ("logits_real", "logits_fake", "g_z_std"))):
        for key in keys:
            if any(key in r for r in rows):  # a run written by an older vitgan may lack a term
                ax.plot(kimg, [r.get(key, math.nan) for r in rows], label=key)
    if "digit_fid" in rows[0]:
        fid = "channel digit_fid (5k samples x 3)" if modes else "digit_fid (1k samples)"
        axes[2].plot(kimg, [r["digit_fid"] for r in rows], label=fid)
        axes[2].set_yscale("log")
        axes[2].set_title("digit FID (EMA generator)")
    if modes:
        axes[-1].plot(kimg, [r["modes"] for r in rows], label="modes (5k samples)")
        axes[-1].set_title("modes (of 1,000; 5k samples)")
    for ax in axes:
        ax.set_xlabel("kimg")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_title("loss terms (weighted)")
    axes[1].set_title("D logits, G diversity")
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)


def plot_metrics(stats_path: Path, names: list[str], out: Path) -> None:
    """metrics.png: one panel per metric against kimg (the ticks where it was measured)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_jsonl(stats_path)
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.5), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        points = [(r["kimg"], r[name]) for r in rows if name in r]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o")
        ax.set_title(name)
        ax.set_xlabel("kimg")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)


def format_seconds(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s"


