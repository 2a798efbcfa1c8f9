"""vitgan: ViTGAN (Lee et al., "ViTGAN: Training GANs with Vision Transformers", ICLR 2022) in PyTorch."""

from vitgan import presets
from vitgan._version import __version__
from vitgan.config import Config, ConfigError
from vitgan.networks import CNNDiscriminator, Discriminator, Generator, build_discriminator
from vitgan.pretrained import load, push_to_hub

__all__ = ["Config", "ConfigError", "Generator", "Discriminator", "CNNDiscriminator", "build_discriminator",
           "presets", "load", "push_to_hub", "__version__"]
