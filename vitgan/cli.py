"""The `vitgan` command."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vitgan import distributed, launch, presets
from vitgan._version import __version__
from vitgan.config import Config, ConfigError, non_none, parse_field
from vitgan.data import BUILTIN, DataError
from vitgan.errors import EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_LOST_RANK, first_line, one_line
from vitgan.metrics.inception import WEIGHTS_NAME, InceptionError
from vitgan.sampling import SHEETS
from vitgan.training.checkpoint import CheckpointError
from vitgan.training.device import has_amx
from vitgan.training.options import RunOptions, available_cores, local_ranks


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose errors (which quote what the user typed) are one line, like vitgan's own."""

    def error(self, message: str) -> typing.NoReturn:
        super().error(one_line(message))


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default once, after its help; nothing for an option without one (None, or a switch)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or "(default: " in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _shown(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value) if value != "" else "''"


def add_field_options(group: Any, cls: type, prefix: str, *, defaults: Any = None, only: Sequence[str] = (),
                      switches: bool = False) -> None:
    """One --field-name option per field of the dataclass `cls` (`only` those, if given), its help the field's
    meaning and its default (from the object `defaults`, else the field's) shown once. The value is kept as typed
    (dest PREFIX + name, None when absent) and converted by `fields_from_args`; with `switches`, a boolean field
    that defaults to false is a flag without a value."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if not field.metadata.get("cli", True) or (only and field.name not in only):
            continue
        hint = non_none(hints[field.name])
        default = field.default if defaults is None else getattr(defaults, field.name)
        shown = "" if default is None or (switches and default is False) else f" (default: {_shown(default)})"
        kwargs: dict[str, Any] = {"dest": prefix + field.name, "default": None,
                                  "help": (field.metadata["help"] + shown).replace("%", "%%")}
        if switches and hint is bool and default is False:
            kwargs["action"] = "store_true"
        elif switches and hint is bool and default is None:  # unset decides by itself: --name / --no-name
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            literal = typing.get_origin(hint) is typing.Literal
            kwargs["metavar"] = field.metadata.get("metavar") or (
                "|".join(typing.get_args(hint)) if literal else hint.__name__.upper())
        group.add_argument(field.metadata.get("flag", "--" + field.name.replace("_", "-")), **kwargs)


def fields_from_args(args: argparse.Namespace, cls: type, prefix: str) -> dict[str, Any]:
    """The fields of `cls` given on the command line (by `add_field_options`), converted to their types."""
    given = {f.name: getattr(args, prefix + f.name) for f in dataclasses.fields(cls) if hasattr(args, prefix + f.name)}
    return {name: parse_field(cls, name, value) if isinstance(value, str) else value
            for name, value in given.items() if value is not None}


def add_config_arguments(parser: argparse.ArgumentParser, default_preset: str, *, resumable: bool = False) -> None:
    """--preset NAME and one --field-name VALUE override for every field of Config."""
    resumed = ", or the resumed run's" if resumable else ""
    parser.add_argument("--preset", help=f"named configuration: {', '.join(presets.names())} (default: "
                        f"{default_preset}{resumed})")
    group = parser.add_argument_group(
        "configuration (any Config field)", f"Each default is the {default_preset} preset's; --preset NAME gives "
        "another preset's (`vitgan presets -v` lists them all).")
    add_field_options(group, Config, "cfg_", defaults=presets.get(default_preset))


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The Config fields given explicitly on the command line, converted to their types."""
    return fields_from_args(args, Config, "cfg_")


def cmd_presets(args: argparse.Namespace) -> None:
    import torch

    from vitgan.networks import Generator, build_discriminator, count_parameters

    for name in presets.names():
        cfg = presets.get(name)
        # Shapes only, on the meta device: no weight is allocated or initialised. Spectral normalisation adds
        # buffers, not parameters, so D is counted without it (its power iterations are slow on meta tensors).
        with torch.device("meta"):
            g, d = count_parameters(Generator(cfg)), count_parameters(build_discriminator(cfg.replace(d_norm="none")))
        print(f"{name:13s} {cfg.resolution}x{cfg.resolution}x{cfg.channels}  G {g:,} params  D {d:,} params")
        if args.verbose:
            print(json.dumps(cfg.to_dict(), indent=2))


def cmd_train(args: argparse.Namespace) -> int:
    from vitgan.training import checkpoint
    from vitgan.training.loop import conditioned, open_data, resume_config, train

    overrides = overrides_from_args(args)
    run = fields_from_args(args, RunOptions, "run_")
    state, resume = None, None
    wanted = run.pop("resume", None)
    if wanted:
        found = checkpoint.find_resume(wanted, run.get("outdir", RunOptions.outdir),
                                       lambda line: print(f"vitgan: {one_line(line)}", file=sys.stderr))
        if found is not None:
            resume, state = str(found[0]), found[1]
    preset = args.preset or (state or {}).get("preset") or "mnist"
    if preset in BUILTIN:  # a preset named after a built-in data set trains on it unless told otherwise
        run.setdefault("data", preset)
    opts = RunOptions(preset=preset, resume=resume, **run)
    opts.check()
    cfg = resume_config(state, overrides) if state is not None else presets.get(preset, **overrides)
    if state is not None and state["cur_nimg"] >= int(cfg.kimg * 1000):  # nothing left to train: no new run folder
        if os.environ.get("RANK", "0") == "0":
            done = state["cur_nimg"] / 1000
            print(f"vitgan: the run is complete: {resume} is at {done:g} kimg, its --kimg is {cfg.kimg:g}; nothing "
                  f"to train (to train it further, resume with a larger --kimg, e.g. --kimg {2 * cfg.kimg:g})",
                  file=sys.stderr)
        return 0
    cores = available_cores()
    ranks = local_ranks(cfg, opts, cores, launched=distributed.launched(), amx=has_amx())
    if distributed.launched() and os.environ.get(launch.LOCAL_RANK_MARK):
        launch.die_with_parent()
    if args.dry_run:  # everything a run checks before it starts, the data included, then stop
        data = open_data(cfg, opts)
        cfg = conditioned(cfg, opts, data, resumed=state is not None)
        print(json.dumps({"config": cfg.to_dict(), "run": dataclasses.asdict(opts), "local_ranks": ranks,
                          "data": {"name": data.name, "num_images": len(data), "shape": list(data.images.shape[1:])}},
                         indent=2))
        return
    if ranks > 1:
        conditioned(cfg, opts, open_data(cfg, opts), resumed=state is not None)  # a bad source (or --cond) fails
        # here, in one line, before any rank starts
        return launch.launch_local_ranks(ranks, max(1, cores // ranks), args.argv, replace=args.from_command_line)
    train(cfg, opts, state)
    return 0


def cmd_generate(args: argparse.Namespace) -> None:
    from vitgan.pretrained import load
    from vitgan.sampling import parse_seeds, write_images
    from vitgan.training.device import resolve_device

    seeds = parse_seeds(args.seeds)
    if args.batch < 1:
        raise ConfigError(f"batch: must be positive, got {args.batch}")
    if not math.isfinite(args.trunc):  # NaN or inf would make every image NaN: black PNGs
        raise ConfigError(f"trunc: must be a finite number (1 = no truncation), got {args.trunc}")
    generator = load(args.ckpt, device=resolve_device(args.run_device or RunOptions.device))
    written = write_images(generator, seeds, Path(args.outdir), psi=args.trunc, batch=args.batch,
                           interpolation_steps=args.steps if args.interpolate else 0, label=args.label,
                           class_grid=args.class_grid)
    print(f"wrote {len(written)} images to {args.outdir}")


def _eval_gen(args: argparse.Namespace, metrics: list) -> tuple[Any, tuple[int, int], str, Path, dict[str, Any]]:
    """`eval --gen`: (the generated images, their (side, channels), the real data's spec, the folder for
    metrics.jsonl, the record's source)."""
    from vitgan.data import image_shape
    from vitgan.data import load as load_data

    if args.data is None:
        raise ConfigError("data: --gen needs --data, the real images to compare with")
    first = image_shape(args.gen, ignore=SHEETS)  # `vitgan generate`'s grid.png, ...: not samples
    shape = args.resolution or first[0], args.channels or first[1]
    gen = load_data(args.gen, resolution=shape[0], channels=shape[1], ignore=SHEETS)  # before any real image
    largest = max(metrics, key=lambda m: m.num_gen)
    if len(gen) < largest.num_gen:
        raise ConfigError(f"gen: {args.gen} holds {len(gen):,} images, {largest.name} needs {largest.num_gen:,}")
    gen_path = Path(args.gen)
    where = gen_path if gen_path.is_dir() else gen_path.resolve().parent  # beside the samples
    return gen.images, shape, args.data, where, {"gen": args.gen}


def _eval_ckpt(args: argparse.Namespace) -> tuple[None, tuple[int, int], str, Path, dict[str, Any]]:
    """`eval --ckpt`: (None: no images yet, the generator's (side, channels), the real data's spec, the folder for
    metrics.jsonl, the record's source)."""
    from vitgan.pretrained import describe

    if args.resolution is not None or args.channels is not None:
        raise ConfigError("resolution: --resolution and --channels are for --gen; a generator has its own")
    ckpt = Path(args.ckpt)
    cfg, info, where = describe(ckpt)
    snapshot = str(where / info["source"] if ckpt.is_dir() and ckpt != where else ckpt)  # a run folder's newest
    if (args.data or info["data"]) is None:
        raise ConfigError(f"data: {ckpt} does not say what it was trained on (no training_options.json); give --data")
    return (None, (cfg.resolution, cfg.channels), args.data or info["data"], where,
            {"snapshot": snapshot, "kimg": info["kimg"] or 0.0})


def cmd_eval(args: argparse.Namespace) -> None:
    import time

    from vitgan.data import load as load_data
    from vitgan.metrics.evaluate import Evaluator, parse_metrics
    from vitgan.pretrained import load
    from vitgan.training.device import resolve_device

    metrics = parse_metrics(args.metrics)
    if args.batch < 1:
        raise ConfigError(f"batch: must be positive, got {args.batch}")
    if args.max_real is not None and args.max_real < 2:
        raise ConfigError(f"max_real: must be at least 2 images, got {args.max_real}")
    if (args.ckpt is None) == (args.gen is None):
        raise ConfigError("ckpt: give either --ckpt (a snapshot or an exported folder) or --gen (generated images)")
    gen, (side, channels), data_spec, where, source = (_eval_gen(args, metrics) if args.gen is not None
                                                       else _eval_ckpt(args))
    device = resolve_device(args.run_device or RunOptions.device)
    data = load_data(data_spec, resolution=side, channels=channels)
    start = time.time()
    evaluator = Evaluator(metrics, data, inception_path=args.inception, device=device, batch=args.batch,
                          max_real=args.max_real, cache=args.cache, progress=True,
                          log=lambda line: print(line, file=sys.stderr), per_class=True)
    results = evaluator.score_images(gen) if gen is not None else evaluator(load(args.ckpt, device=device))
    ceiling = evaluator.real_modes()  # modes metrics on stacks of digits: the same measures of the real images
    for m in metrics:
        if f"{m.name}_real" in ceiling:
            print(f"{m.name} of the real data (the ceiling): {ceiling[f'{m.name}_real']} modes, KL "
                  f"{ceiling[f'{m.name}_real_kl']:.4f}, confidence {ceiling[f'{m.name}_real_confidence']:.3f}",
                  file=sys.stderr)
    agreement = evaluator.real_agreement() if results.keys() & {f"{m.name}_agreement" for m in metrics} else {}
    for m in metrics:  # a conditional generator's class agreement digit by digit, and where its worst class went
        if f"{m.name}_agreement_by_class" in results:
            shares = ", ".join(f"{k} {v:.3f}" for k, v in results[f"{m.name}_agreement_by_class"].items())
            print(f"{m.name} class agreement by class: {shares}; the worst, {results[f'{m.name}_worst_class']}, "
                  f"drawn most often as {results[f'{m.name}_worst_drawn_as']}", file=sys.stderr)
    for key, value in agreement.items():  # a conditional generator's class agreement: that of the real images
        print(f"{key.removesuffix('_real_agreement')} class agreement of the real data (the ceiling): {value:.4f}",
              file=sys.stderr)
    results.update(ceiling)
    results.update(agreement)
    record = {"results": results, **source, "data": data_spec,
              "num_real": len(data) if args.max_real is None else min(len(data), args.max_real),
              "reals": evaluator.num_real, "seconds": round(time.time() - start, 1)}
    line = json.dumps(record)
    print(line)
    out = Path(args.out) if args.out else where / "metrics.jsonl"
    try:
        with open(out, "a") as f:
            f.write(line + "\n")
    except OSError as error:
        print(f"vitgan: warning: results not appended to {out} ({error})", file=sys.stderr)


def cmd_export(args: argparse.Namespace) -> None:
    from vitgan.pretrained import EXPORT_FILES, export

    out = export(args.source, args.out, force=args.force)
    print(f"exported to {out}: {', '.join(EXPORT_FILES)}")


BENCH_PRESET = "cifar10"  # bench's default preset (train's is mnist)


def cmd_bench(args: argparse.Namespace) -> None:
    import torch

    from vitgan.bench import run_benchmark
    from vitgan.training.device import resolve_device, resolve_precision

    preset = args.preset or BENCH_PRESET
    cfg = presets.get(preset, **overrides_from_args(args))
    if args.repeats < 1:
        raise ConfigError(f"repeats: must be positive, got {args.repeats}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"threads: must be positive, got {args.threads}")
    run = RunOptions(**fields_from_args(args, RunOptions, "run_"))
    run.check()
    device = resolve_device(run.device)
    amp = resolve_precision(run.precision, device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = run_benchmark(cfg, preset=preset, device=device, amp=amp, compile=bool(run.compile),
                           repeats=args.repeats)
    line = json.dumps(result)
    print(line)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")


def cmd_prepare(args: argparse.Namespace) -> None:
    from vitgan.data.prepare import prepare

    prepare(args.src, args.dest, resolution=args.resolution, crop=args.crop, channels=args.channels,
            max_images=args.max_images, skip_bad=args.skip_bad, labels=args.labels)


def add_prepare_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="convert a dataset (folder, zip, CIFAR, CelebA, LSUN LMDB, parquet, a built-in "
                       "one) to a zip of PNGs",
                       formatter_class=HelpFormatter)
    p.add_argument("src", help="a folder or zip of images, CIFAR-10/100 batches (folder or .tar.gz), CelebA's "
                   "img_align_celeba (folder or zip), an LSUN LMDB export folder, Hugging Face parquet (a .parquet or "
                   "a folder of shards), or a built-in data set: 'mnist', 'stacked-mnist'")
    p.add_argument("dest", help="the zip to write (written to a temporary file, renamed when complete)")
    p.add_argument("--resolution", type=int, help="resize to RxR (LANCZOS); default: keep the size, which all "
                   "images must then share")
    p.add_argument("--crop", default="center", choices=["center", "none"],
                   help="center: the centred square (CelebA: 108x108); none: non-square images are bad files")
    p.add_argument("--channels", type=int, default=3, choices=[1, 3], help="1: grayscale PNGs, 3: RGB")
    p.add_argument("--max-images", type=int, help="stop after this many images (in the source's order)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable or unusable files (they are listed)")
    p.add_argument("--labels", default="source", choices=["source", "folders"],
                   help="source: the source's own labels (dataset.json, CIFAR, parquet), if any; folders: a folder's "
                   "first-level sub-folders are the classes (sorted names), e.g. train/cat/*.png, train/dog/*.png")
    p.set_defaults(func=cmd_prepare)


def cmd_ablate(args: argparse.Namespace) -> None:
    from vitgan.ablate import DEFAULTS, ablate

    args.seed_list = list(range(args.seeds))
    defaults = DEFAULTS[args.group]
    for name in ("outdir", "report", "preset", "data", "samples"):
        if getattr(args, name) is None:
            setattr(args, name, getattr(defaults, name))
    if args.seeds < 1:
        raise ConfigError(f"seeds: must be at least 1, got {args.seeds}")
    args.override = [item.split("=", 1) for item in args.set]
    if any(len(item) != 2 for item in args.override):
        raise ConfigError(f"set: expected FIELD=VALUE, got {args.set}")
    ablate(args)


def add_presets_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("presets", help="list the named configurations with their parameter counts")
    p.add_argument("-v", "--verbose", action="store_true", help="also print every field")
    p.set_defaults(func=cmd_presets)


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a ViTGAN (default: the mnist preset on the bundled MNIST digits)",
                       formatter_class=HelpFormatter)
    add_config_arguments(p, "mnist", resumable=True)
    add_field_options(p.add_argument_group("run options"), RunOptions, "run_", switches=True)
    p.add_argument("--dry-run", action="store_true", help="check the options and open the data, print what the "
                   "run would use, and exit")
    p.set_defaults(func=cmd_train)


def add_generate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="write images from a trained generator (snapshot, run folder, export)",
                       formatter_class=HelpFormatter)
    p.add_argument("--ckpt", required=True, help="a network-snapshot-*.safetensors file, a run folder (its newest "
                   "snapshot), a folder written by `vitgan export`, or a Hugging Face hub id")
    p.add_argument("--seeds", default="0-63", help="latent seeds, e.g. 0-63 or 1,5,9")
    p.add_argument("--trunc", type=float, default=1.0, help="truncation psi (1 = none)")
    p.add_argument("--interpolate", action="store_true", help="also interpolate between consecutive seeds")
    p.add_argument("--steps", type=int, default=8, help="interpolation frames per pair of seeds")
    p.add_argument("--batch", type=int, default=32, help="images per forward pass")
    p.add_argument("--class", type=int, dest="label", metavar="K", help="a conditional generator (trained with "
                   "--cond): draw class K (0-based; the classes' names are in the export's config.json)")
    p.add_argument("--class-grid", action="store_true", help="a conditional generator: one row per class, one "
                   "column per seed (grid.png; classK-seedNNNN.png)")
    p.add_argument("--outdir", default="out", help="output folder")
    add_field_options(p, RunOptions, "run_", only=["device"])
    p.set_defaults(func=cmd_generate)


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="time D, G and a training iteration against a standard ViT and the GEMM rate",
                       formatter_class=HelpFormatter)
    add_config_arguments(p, BENCH_PRESET)
    add_field_options(p, RunOptions, "run_", only=["precision", "device", "compile"], switches=True)
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions per figure (the median is reported)")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    p.add_argument("--out", help="also append the JSON line to this file")
    p.set_defaults(func=cmd_bench)


def add_ablate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ablate", help="train the paper's ablations (or the recipe sweep) for the same number of "
                       "images and write a report", formatter_class=HelpFormatter)
    p.add_argument("--data", help="the bundled digits, 'mnist' (the report's digit FID needs them), or "
                   "'stacked-mnist' (its modes); default: the group's (stacked: stacked-mnist, else mnist)")
    p.add_argument("--preset", help="the configuration every variant starts from (default: the group's, mnist or "
                   "stacked-mnist)")
    p.add_argument("--group", default="paper", choices=["paper", "recipe", "stacked"], help="the paper's ablations, "
                   "the training recipes of the calibration sweep, or StackedMNIST's modes by objective")
    p.add_argument("--kimg", type=float, default=60.0, help="thousands of images every run trains on")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per variant")
    p.add_argument("--minutes", type=float, help="a wall-clock cap per run: a run that reaches it ends before --kimg "
                   "with a final snapshot (the report gives each run's kimg; a later ablate reuses it as finished)")
    p.add_argument("--variants", help="comma-separated subset of the group (default: all; the reference, vitgan or "
                   "preset, is always included). paper: vitgan, vanilla, no-l2, no-isn, no-overlap, g-design-a, "
                   "g-design-b, linear-head, cnn-d; recipe: see vitgan/ablate/variants.py")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per run")
    p.add_argument("--tick", type=float, default=2.0, help="kimg between the per-run measurements")
    p.add_argument("--samples", type=int, help="samples for each final digit FID or mode count (default 5000; "
                   "stacked: 26000, the papers' count)")
    p.add_argument("--compile", action="store_true", help="train with torch.compile (3x faster on one CPU thread "
                   "after a few minutes of compiling)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="a Config override for every variant (repeatable), e.g. --set batch=32")
    p.add_argument("--outdir", help="the runs go to OUTDIR/runs/<variant>-seed<N>/ (finished runs there are "
                   "reused; default runs/ablation, runs/recipe or runs/stacked)")
    p.add_argument("--report", help="the report (default docs/ablation.md, benchmarks/recipe.md or "
                   "benchmarks/stacked.md); its figures "
                   "and raw records go to a folder of its name beside it")
    p.add_argument("--report-only", action="store_true", help="no training: rewrite the report from its recorded "
                   "raw records")
    p.set_defaults(func=cmd_ablate)


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="compute FID, KID, IS, precision/recall (Inception), digit FID or StackedMNIST's "
                       "modes of a snapshot, an exported generator, or a folder/zip of generated images",
                       formatter_class=HelpFormatter)
    p.add_argument("--ckpt", help="a network-snapshot-*.safetensors file, a run folder (its newest snapshot) or an "
                   "exported folder (its EMA generator)")
    p.add_argument("--gen", help="instead of --ckpt: generated images, in any form --data takes (a folder, a zip, "
                   "...); the first N are scored, leaving out the sheets `vitgan generate` writes beside its samples "
                   f"({', '.join(SHEETS)})")
    p.add_argument("--data", help="the real images: 'mnist', 'stacked-mnist', or a dataset path (default with --ckpt: "
                   "the data it was trained on)")
    p.add_argument("--metrics", default="fid50k_full", help="comma-separated StyleGAN2-ADA names: fid50k_full, "
                   "kid50k_full, pr50k3_full, is50k, fid50k (50k reals), other counts (fid10k_full, is2000), dfid5k; "
                   "modes26k: StackedMNIST's modes and KL (with 3x32x32 data, also of as many reals: the ceiling)")
    p.add_argument("--resolution", type=int, help="with --gen: the side both image sets are resized to (default: "
                   "the first generated image's)")
    p.add_argument("--channels", type=int, choices=[1, 3], help="with --gen: 1 or 3 (default: 1 if the first "
                   "generated image is grayscale)")
    p.add_argument("--inception", help=f"the {WEIGHTS_NAME} file (default: $VITGAN_INCEPTION, then the "
                   "torch hub cache, downloaded there when missing)")
    p.add_argument("--cache", help="folder of cached reference features (default: $VITGAN_CACHE or ~/.cache/vitgan)")
    p.add_argument("--max-real", type=int, help="use at most this many real images (default: all)")
    p.add_argument("--batch", type=int, default=64, help="images per forward pass")
    p.add_argument("--out", metavar="FILE", help="append the JSON line of results to this file (default: "
                   "metrics.jsonl beside what was scored: in the run folder or exported folder, in the --gen folder, "
                   "or beside the --gen file)")
    add_field_options(p, RunOptions, "run_", only=["device"])
    p.set_defaults(func=cmd_eval)


def add_export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a snapshot's EMA generator as config.json + model.safetensors + model "
                       "card, to share (vitgan.load, vitgan.push_to_hub)")
    p.add_argument("source", help="a network-snapshot-*.safetensors file, or a run folder (its newest snapshot)")
    p.add_argument("--out", required=True, help="the folder to write: new, empty, or an earlier export")
    p.add_argument("--force", action="store_true", help="write into a folder that holds other files (they are kept; "
                   "files named as the export's are replaced)")
    p.set_defaults(func=cmd_export)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="vitgan", description="ViTGAN: GANs with Vision Transformers.")
    parser.add_argument("--version", action="version", version=f"vitgan {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_presets_parser, add_train_parser, add_generate_parser, add_prepare_parser, add_bench_parser,
                add_ablate_parser, add_eval_parser, add_export_parser):  # the order of `vitgan --help`
        add(sub)
    return parser


def option_flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """What each of a command's options is called on the command line, by the name errors use: a Config or
    RunOptions field's name (`g_lr` -> `--g-lr`, `tick_kimg` -> `--tick`), or the option's own (`max_real`)."""
    flags = {}
    for action in parser._actions:
        names = [name for name in action.option_strings if name.startswith("--")]
        if names and action.dest != "help":  # a field's option keeps it under PREFIX + name (add_field_options)
            field = action.dest.split("_", 1)[1] if action.dest.startswith(("cfg_", "run_")) else action.dest
            flags[field] = names[0]
    return flags


def name_the_flag(message: str, flags: dict[str, str]) -> str:
    """A ConfigError's message (`g_lr: expected a finite number, got nan`) with its leading field name replaced by
    the option the user typed (`--g-lr: ...`); unchanged when it names no option of the command."""
    name, sep, rest = message.partition(": ")
    return f"{flags[name]}{sep}{rest}" if sep and name in flags else message


def _command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[command]


def main(argv: Sequence[str] | None = None) -> int:
    code = _main(argv)
    if argv is None and distributed.launched():  # a rank started from a command line, its group left: end it now
        distributed.exit_now(code)
    return code


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[2:] if argv is None else argv[1:])  # the command's own arguments, for reports
    args.from_command_line = argv is None
    if argv is None and args.command in ("train", "bench", "eval"):  # a command line, not a call from Python
        launch.rerun_with_runtime_env()
    finished, code = False, 0
    try:
        code = args.func(args) or 0  # a command returns an exit code, or None for 0
        finished = True
    except (ConfigError, DataError, CheckpointError, InceptionError, FloatingPointError) as error:
        message = str(error)  # a Config field (the Python API's name) said as the flag the user typed
        if isinstance(error, ConfigError):
            message = name_the_flag(message, option_flags(_command_parser(parser, args.command)))
        print(f"vitgan: error: {one_line(message)}", file=sys.stderr)
        return EXIT_DIVERGED if isinstance(error, FloatingPointError) else EXIT_BAD_INPUT  # a NaN/inf: a result
    except OSError as error:  # a full disk, a read-only folder, a missing permission: the file and the reason
        where = f"{error.filename}: " if error.filename else ""
        print(f"vitgan: error: {one_line(f'{where}{error.strerror or error}')}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RuntimeError as error:  # under torchrun: a lost rank or a failed collective, said in one line
        if not distributed.launched():
            raise
        print(f"vitgan: error: rank {os.environ.get('RANK', '?')}: {one_line(first_line(error))}", file=sys.stderr)
        return EXIT_LOST_RANK
    finally:
        distributed.shutdown(clean=finished)
    return code


if __name__ == "__main__":
    sys.exit(main())
