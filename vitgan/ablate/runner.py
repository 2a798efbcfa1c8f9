"""Running `vitgan ablate`'s sweep: one `vitgan train` process per (variant, seed), `--jobs` at a time with
`--threads` CPU threads each, under `<outdir>/runs/<variant>-seed<N>/`. A run finished earlier (it has a network
snapshot) is reused, and so is a run stopped earlier by a NaN or inf (its message kept in the DIVERGED file), when
its saved configuration is the one the sweep asks of the variant (else a one-line error names the fields); a run
whose folder is gone (another machine, a clean clone) but whose record the report keeps is taken as recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vitgan import presets
from vitgan.ablate.variants import RUN_SWITCHES, Variant
from vitgan.config import Config, ConfigError
from vitgan.errors import EXIT_DIVERGED
from vitgan.fileio import atomic_write
from vitgan.training.checkpoint import SNAPSHOT_GLOB

DIVERGED = "diverged.txt"  # in a run's folder: the message of the NaN or inf that stopped it


def command(variant: Variant, seed: int, args: Any, outdir: Path) -> list[str]:
    """The `vitgan train` command line of one run: the ablation's preset, data, length and seed, the variant's
    overrides and then the sweep's own (`--set`)."""
    line = [sys.executable, "-m", "vitgan", "train", "--preset", args.preset, "--data", args.data, "--seed",
            str(seed), "--kimg", str(args.kimg), "--tick", str(args.tick), "--outdir", str(outdir),
            "--snap", "1000000", *(["--compile"] if args.compile else []),
            *(["--minutes", str(args.minutes)] if args.minutes else [])]
    for key, value in {**variant.overrides, **dict(args.override)}.items():
        if key in RUN_SWITCHES:  # a switch of `vitgan train`, not a Config value
            line += [f"--{key}"] if value == "true" else []
        else:
            line += [f"--{key.replace('_', '-')}", value]
    return line



def _run_folder(outdir: Path) -> Path:
    return sorted(p for p in outdir.iterdir() if p.is_dir())[-1]


def _earlier(variant: Variant, seed: int, outdir: Path, args: Any) -> dict[str, Any] | None:
    """The result of a run finished or diverged in an earlier sweep, None if it is still to train. A folder that
    trained another configuration or length than this sweep asks of the variant (a preset or a variant changed since,
    or another --kimg) is refused with a one-line error rather than taken for this variant's run."""
    finished, diverged = bool(list(outdir.glob(f"*/{SNAPSHOT_GLOB}"))), (outdir / DIVERGED).exists()
    if not (finished or diverged):
        return None
    run = _run_folder(outdir)
    _check_trained_as_asked(variant, args, run)
    if finished:  # finished earlier: reuse it
        return {"variant": variant, "seed": seed, "run": run}
    # diverged earlier: the same seed diverges again
    return {"variant": variant, "seed": seed, "run": run, "diverged": (outdir / DIVERGED).read_text().strip()}


def _check_trained_as_asked(variant: Variant, args: Any, run: Path) -> None:
    """Raise ConfigError naming the run folder and the fields where its saved configuration differs from the
    preset with the variant's and the sweep's overrides at --kimg (a folder without training_options.json, from
    before it was written, is taken as it is)."""
    options = run / "training_options.json"
    if not options.exists():
        return
    saved = {**Config().to_dict(), **json.loads(options.read_text())["config"]}  # a field added since: its default
    overrides = {**variant.overrides, **dict(args.override)}
    fields = {k: Config.parse_value(k, v) for k, v in overrides.items() if k not in RUN_SWITCHES}
    expected = presets.get(args.preset, kimg=float(args.kimg), **fields).to_dict()
    for key in RUN_SWITCHES & overrides.keys():  # --cond: the class count the data gave, when on
        if overrides[key] == "true":
            expected[key] = saved.get(key) or "on"
    differ = sorted(k for k in expected.keys() | saved.keys() if expected.get(k) != saved.get(k))
    if differ:
        shown = ", ".join(f"{k} {saved.get(k)!r} (asked: {expected.get(k)!r})" for k in differ[:4])
        raise ConfigError(f"ablate: {run} trained another configuration than {variant.name} asks: {shown}"
                          f"{' ...' if len(differ) > 4 else ''}; move it away or choose another --outdir")


def _start(variant: Variant, seed: int, args: Any, outdir: Path, env: dict[str, str]) -> subprocess.Popen:
    outdir.mkdir(parents=True, exist_ok=True)
    log = open(outdir / "console.txt", "w")  # noqa: SIM115 - closed when the run ends
    return subprocess.Popen(command(variant, seed, args, outdir), stdout=log, stderr=subprocess.STDOUT, env=env)


def _finished(proc: subprocess.Popen, variant: Variant, seed: int, outdir: Path) -> dict[str, Any] | None:
    """The result of a run whose process ended (said on the console), None if it failed other than by diverging."""
    tail = " ".join((outdir / "console.txt").read_text().strip().splitlines()[-1:])
    if proc.returncode == EXIT_DIVERGED:  # a NaN or inf: a result of the variant, reported as such
        message = tail.removeprefix("vitgan: error: ")
        atomic_write(outdir / DIVERGED, lambda tmp: Path(tmp).write_text(message + "\n"))
        print(f"ablate: {variant.name} seed {seed} diverged: {tail}", flush=True)
        return {"variant": variant, "seed": seed, "run": _run_folder(outdir), "diverged": message}
    if proc.returncode != 0:
        print(f"ablate: {variant.name} seed {seed} failed: {tail}", flush=True)
        return None
    print(f"ablate: finished {variant.name} seed {seed}", flush=True)
    return {"variant": variant, "seed": seed, "run": _run_folder(outdir)}


def _recorded(variant: Variant, seed: int, args: Any, records: dict[tuple[str, int], dict[str, Any]]
              ) -> dict[str, Any] | None:
    """The record of this (variant, seed) from an earlier sweep of the same overrides and length, if any: a run that
    diverged, or one that trained at least `args.kimg` (or stopped at its --minutes cap)."""
    record = records.get((variant.name, seed))
    if record is None or record.get("overrides") != variant.overrides:
        return None
    done = record.get("diverged") or record.get("kimg", 0) >= args.kimg - 1e-9 or args.minutes
    return record if done else None


def run_all(variants: list[Variant], seeds: list[int], args: Any, root: Path,
            records: dict[tuple[str, int], dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Train every (variant, seed) not already finished under root/runs/, `args.jobs` at a time. A run stopped by a
    NaN or inf (`vitgan train`'s exit status EXIT_DIVERGED) is a result with its "diverged" message, kept in its
    folder's DIVERGED file so that a later sweep reuses it; a run that failed otherwise is left out, said on the
    console. A (variant, seed) without a run folder whose record is in `records` (the report's, by variant name and
    seed) is not trained again: its result carries that "record"."""
    queue = [(v, s) for v in variants for s in seeds]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    running: list[tuple[subprocess.Popen, Variant, int, Path]] = []
    done: list[dict[str, Any]] = []
    started = time.time()
    while queue or running:
        while queue and len(running) < args.jobs:
            variant, seed = queue.pop(0)
            outdir = root / "runs" / f"{variant.name}-seed{seed}"
            earlier = _earlier(variant, seed, outdir, args)
            record = None if outdir.exists() else _recorded(variant, seed, args, records or {})
            if earlier is None and record is not None:
                print(f"ablate: {variant.name} seed {seed} is recorded and its run folder is gone: kept as recorded",
                      flush=True)
                earlier = {"variant": variant, "seed": seed, "run": None, "record": record}
            if earlier is not None:
                done.append(earlier)
                continue
            running.append((_start(variant, seed, args, outdir, env), variant, seed, outdir))
            print(f"ablate: started {variant.name} seed {seed} ({len(done) + len(running)} of "
                  f"{len(variants) * len(seeds)}; {time.time() - started:.0f} s)", flush=True)
        time.sleep(1)
        for item in [item for item in running if item[0].poll() is not None]:
            running.remove(item)
            result = _finished(*item)
            if result is not None:
                done.append(result)
    return done
