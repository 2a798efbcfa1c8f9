"""Named configurations: the paper's CIFAR-10 / CelebA / LSUN settings and a CPU-sized MNIST demo.

`get(name, **overrides)` returns a validated `Config`; any field can be overridden, e.g.
`get("cifar10", d_attention="dot", d_norm="none", d_overlap=False)` is the paper's "vanilla ViT" discriminator.
"""

from __future__ import annotations

from typing import Any

from vitgan.config import Config, ConfigError

# Paper, Section 4 / Appendix: 4 blocks at 32x32, 6 at 64x64; hidden 384, MLP 1536, 6 heads; z of 384 dims.
_PAPER_32 = dict(resolution=32, channels=3, g_patch=4, g_depth=4, d_patch=4, d_depth=4)
_PAPER_64 = dict(resolution=64, channels=3, g_patch=8, g_depth=6, d_patch=8, d_depth=6)

# How every preset trains where the paper's recipe failed here (README "Presets" says where each value comes from).
# The paper's (bCR 10, no R1, a tanh output, lr 0.002 at batch 128; `vitgan ablate --group recipe --variants paper`
# restores it) kept the ViT D at chance on the 2-core CPU's mnist preset, and on a GPU at the cifar10 preset's size it
# left G constant from the first tick (2 of 2 seeds, and a NaN at 65 kimg in a longer run; benchmarks/README.md).
# Every preset: a linear G output and a minibatch-std feature at D's head (measured on the mnist preset), the
# authors' equalised-lr SLN and MLP D head.
CALIBRATED: dict[str, Any] = dict(g_output="linear", d_mbstd=True, g_sln_equalized=True, d_head="mlp")
# The paper presets' objective, the authors' code's (SPEC.md): bCR 1 with T an independent DiffAugment draw, R1 0.1
# every step, a learning-rate warm-up, cutout at p 0.3, and their learning rate for the batch (lr x batch = 64: 0.002
# at batch 32, 0.001 at 64). At the cifar10 size on a GPU in bf16 it held on 2 of 2 seeds where the mnist preset's
# objective (R1 1 every 4 steps, no bCR) turned G's gradient NaN within 10 kimg on 2 of 2.
AUTHORS_OBJECTIVE: dict[str, Any] = dict(
    bcr_real=1.0, bcr_fake=1.0, bcr_mode="diffaug", r1_gamma=0.1, r1_interval=1, lr_warmup_kimg=10.0,
    augment="brightness,saturation,contrast,translation,cutout:0.3",
)
_PAPER_TRAINING = dict(**CALIBRATED, **AUTHORS_OBJECTIVE, batch=128, g_lr=5e-4, d_lr=5e-4)

PRESETS: dict[str, dict[str, Any]] = {
    "cifar10": dict(_PAPER_32, **_PAPER_TRAINING),
    "celeba64": dict(_PAPER_64, **_PAPER_TRAINING),
    "lsun64": dict(_PAPER_64, **_PAPER_TRAINING),
    # CPU demo on the bundled 5k MNIST digits (padded to 32x32): the paper's networks (L2 attention, ISN,
    # overlapping patches; SLN + INR) at a width the 2-core CPU trains in minutes. Measured on this budget (see
    # benchmarks/README.md): bCR at weight 10 kept the ViT D at chance and G collapsed to one class, and a tanh
    # output saturated to all-black whenever D got ahead; R1 with a minibatch-std feature and a linear output
    # recovered all classes. Since 2026-11-26 also the authors' equalised-lr SLN and MLP D head: at 50 kimg they
    # halved the digit FID over 3 seeds (benchmarks/recipe.md).
    "mnist": dict(
        resolution=32, channels=1,
        z_dim=128, w_dim=128, mapping_layers=2,
        g_patch=4, g_dim=128, g_depth=4, g_heads=4, g_mlp_dim=256, g_fourier_dim=32, g_inr_hidden=64,
        d_patch=4, d_dim=128, d_depth=4, d_heads=4, d_mlp_dim=256,
        d_cnn_base=1024, d_cnn_max=128,
        **CALIBRATED, bcr_real=0.0, bcr_fake=0.0, r1_gamma=1.0, r1_interval=4,
        batch=16, g_lr=5e-4, d_lr=5e-4, ema_kimg=5.0, kimg=240.0,
    ),
}
# StackedMNIST (issue 27, benchmarks/stacked.md): the mnist preset on 3 channels with two changes measured there at
# 100 kimg on 3 seeds. No saturation in DiffAugment: it blends a stack's channels toward one grey image, the very modes
# being counted. And R3GAN's relativistic objective, RpGAN + R1 + R2 at gamma 1 (lazy as R1 is): the mnist preset's
# own (non-saturating, R1) collapsed to 13-42 of the 1,000 modes on every seed, this covered 611-857. Not yet stable:
# to 240 kimg it collapsed after 100 kimg on 2 of 3 seeds (benchmarks/stacked-240.md).
STACKED_MNIST_OBJECTIVE: dict[str, Any] = dict(
    gan_loss="rpgan", r1_gamma=1.0, r2_gamma=1.0, augment="brightness,contrast,translation,cutout,scale")
PRESETS["stacked-mnist"] = dict(PRESETS["mnist"], channels=3, **STACKED_MNIST_OBJECTIVE)


def names() -> list[str]:
    return list(PRESETS)


def get(name: str, **overrides: Any) -> Config:
    """The preset `name` with `overrides` applied; raises ConfigError naming the bad preset or field."""
    if name not in PRESETS:
        raise ConfigError(f"preset: unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return Config.from_dict({**Config().to_dict(), **PRESETS[name], **overrides})
