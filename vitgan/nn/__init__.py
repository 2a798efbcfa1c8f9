"""Building blocks of ViTGAN: L2 attention, improved spectral normalisation, SLN, Fourier features, INR layers,
class conditioning."""

from vitgan.nn.attention import Attention, L2Attention
from vitgan.nn.conditioning import ClassProjection, check_labels
from vitgan.nn.layers import (
    SLN,
    EqualizedLinear,
    FourierFeatures,
    LayerNormIgnoringW,
    MinibatchStd,
    ModulatedLinear,
    grid_coordinates,
)
from vitgan.nn.patches import image_patches
from vitgan.nn.spectral import ISNLinear, SigmaReparamLinear, SNLinear, XavierLinear, linear_for

__all__ = [
    "Attention", "L2Attention", "ISNLinear", "SigmaReparamLinear", "SNLinear", "XavierLinear", "linear_for", "SLN",
    "LayerNormIgnoringW", "FourierFeatures", "MinibatchStd", "EqualizedLinear", "ModulatedLinear", "grid_coordinates",
    "image_patches", "ClassProjection", "check_labels",
]
