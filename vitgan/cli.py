"""The `vitgan` command."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from collections.abc import Sequence

import torch

from vitgan import presets
from vitgan.config import Config, ConfigError


def parse_seeds(text: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            seeds.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ConfigError(f"seeds: cannot read {text!r}; use a list like 0-63 or 1,5,9") from None
    if not seeds or min(seeds) < 0:
        raise ConfigError(f"seeds: {text!r} gives no non-negative seed")
    return seeds


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--preset NAME and one --field-name VALUE override for every field of Config."""
    parser.add_argument("--preset", default="mnist", help=f"named configuration: {', '.join(presets.names())}")
    group = parser.add_argument_group("preset overrides (any Config field)")
    hints = typing.get_type_hints(Config)
    for field in dataclasses.fields(Config):
        hint = hints[field.name]
        kind = "|".join(typing.get_args(hint)) if typing.get_origin(hint) is typing.Literal else hint.__name__
        group.add_argument("--" + field.name.replace("_", "-"), dest=f"cfg_{field.name}", metavar=kind,
                           help=f"default in the preset; Config default {field.default!r}")


def config_from_args(args: argparse.Namespace) -> Config:
    overrides = {
        f.name: Config.parse_value(f.name, getattr(args, f"cfg_{f.name}"))
        for f in dataclasses.fields(Config)
        if getattr(args, f"cfg_{f.name}") is not None
    }
    return presets.get(args.preset, **overrides)


def latents(seeds: Sequence[int], z_dim: int) -> torch.Tensor:
    """One z per seed, drawn from its own generator: the same seed gives the same z whatever the batch."""
    return torch.stack([torch.randn(z_dim, generator=torch.Generator().manual_seed(s)) for s in seeds])


def cmd_presets(args: argparse.Namespace) -> None:
    from vitgan.networks import Generator, build_discriminator, count_parameters

    for name in presets.names():
        cfg = presets.get(name)
        g, d = count_parameters(Generator(cfg)), count_parameters(build_discriminator(cfg))
        print(f"{name:10s} {cfg.resolution}x{cfg.resolution}x{cfg.channels}  G {g:,} params  D {d:,} params")
        if args.verbose:
            print(json.dumps(cfg.to_dict(), indent=2))


def cmd_sample(args: argparse.Namespace) -> None:
    from vitgan.images import save_grid
    from vitgan.networks import Generator

    cfg = config_from_args(args)
    seeds = parse_seeds(args.seeds)
    torch.manual_seed(args.seed)
    generator = Generator(cfg).eval()
    with torch.no_grad():
        images = torch.cat([generator(latents(seeds[i:i + 64], cfg.z_dim)) for i in range(0, len(seeds), 64)])
    save_grid(images, args.out)
    print(f"wrote {len(seeds)} samples of an untrained '{args.preset}' generator (weights seed {args.seed}) "
          f"to {args.out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vitgan", description="ViTGAN: GANs with Vision Transformers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("presets", help="list the named configurations with their parameter counts")
    p.add_argument("-v", "--verbose", action="store_true", help="also print every field")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("sample", help="write a sample grid from a freshly initialised generator")
    add_config_arguments(p)
    p.add_argument("--seeds", default="0-63", help="latent seeds, e.g. 0-63 or 1,5,9")
    p.add_argument("--seed", type=int, default=0, help="seed of the network initialisation")
    p.add_argument("--out", default="samples.png", help="output PNG")
    p.set_defaults(func=cmd_sample)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ConfigError as error:
        print(f"vitgan: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
