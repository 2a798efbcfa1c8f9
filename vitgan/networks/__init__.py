"""The networks: ViTGAN generator, ViT discriminator, and the CNN discriminator variant."""

from torch import nn

from vitgan.config import Config
from vitgan.networks.cnn_discriminator import CNNDiscriminator
from vitgan.networks.discriminator import Discriminator
from vitgan.networks.generator import Generator


def build_discriminator(cfg: Config) -> nn.Module:
    """The discriminator that `cfg.d_arch` names: the ViT (`vit`) or the residual CNN (`cnn`)."""
    return Discriminator(cfg) if cfg.d_arch == "vit" else CNNDiscriminator(cfg)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["Generator", "Discriminator", "CNNDiscriminator", "build_discriminator", "count_parameters"]
