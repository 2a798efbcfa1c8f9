"""Presets and configuration validation: a bad value gives a one-line error that names the field."""

import pytest

from vitgan import Config, ConfigError, presets


def test_paper_presets_match_the_paper():
    c = presets.get("cifar10")
    assert (c.resolution, c.g_patch, c.d_patch, c.g_depth, c.d_depth) == (32, 4, 4, 4, 4)
    assert (c.g_dim, c.g_mlp_dim, c.g_heads, c.d_dim, c.d_mlp_dim, c.d_heads) == (384, 1536, 6, 384, 1536, 6)
    assert (c.z_dim, c.d_attention, c.d_norm, c.d_overlap, c.g_design, c.g_head) == (384, "l2", "isn", True, "C", "inr")
    for name in ("celeba64", "lsun64"):
        c = presets.get(name)
        assert (c.resolution, c.g_patch, c.d_patch, c.g_depth, c.d_depth, c.channels) == (64, 8, 8, 6, 6, 3)
    m = presets.get("mnist")
    assert (m.resolution, m.channels) == (32, 1)


def test_paper_presets_train_with_the_authors_objective_and_the_papers_is_one_variant_away():
    from vitgan.ablate import RECIPES

    for name in ("cifar10", "celeba64", "lsun64"):
        c = presets.get(name)  # SPEC.md, the authors' code: bCR 1 on a second DiffAugment draw, R1 0.1 every step,
        # cutout at p 0.3 beside the colour ops on their own coins, a warm-up; their lr x batch = 64
        assert (c.bcr_real, c.bcr_fake, c.bcr_mode, c.r1_gamma, c.r1_interval) == (1.0, 1.0, "diffaug", 0.1, 1)
        assert c.augment == "brightness,saturation,contrast,translation,cutout:0.3" and c.lr_warmup_kimg > 0
        assert (c.g_output, c.d_mbstd, c.d_head, c.g_sln_equalized) == ("linear", True, "mlp", True)
        assert c.batch == 128 and c.g_lr * c.batch == pytest.approx(0.064) and c.d_lr == c.g_lr
        paper = next(v for v in RECIPES if v.name == "paper").overrides
        p = presets.get(name, **{k: Config.parse_value(k, v) for k, v in paper.items()})
        # SPEC.md's training section: bCR 10 for both terms, no R1, Adam (0, 0.99) at 0.002, batch 128, DiffAugment
        # at p 0.8; the generator's output through tanh, SLN without the authors' equalised lr
        assert (p.bcr_real, p.bcr_fake, p.bcr_mode, p.r1_gamma) == (10.0, 10.0, "shift", 0.0)
        assert (p.g_lr, p.d_lr, p.beta1, p.beta2, p.batch) == (0.002, 0.002, 0.0, 0.99, 128)
        assert (p.augment, p.augment_p) == ("color,translation,cutout,scale", 0.8)
        assert (p.g_output, p.g_sln_equalized, p.d_head, p.d_mbstd) == ("tanh", False, "linear", False)


def test_stacked_mnist_is_mnist_on_three_channels_with_rpgan_and_no_saturation_and_its_old_runs_say_so():
    from vitgan.ablate import STACKED
    from vitgan.config import parse_policy

    s, m = presets.get("stacked-mnist"), presets.get("mnist")
    # benchmarks/stacked.md: RpGAN + R1 + R2 at one gamma (R3GAN's objective), DiffAugment without saturation, which
    # blends a stack's channels; every other field the mnist preset's
    assert (s.channels, s.gan_loss, s.r1_gamma, s.r2_gamma, s.r1_interval) == (3, "rpgan", 1.0, 1.0, m.r1_interval)
    ops = [name for name, _ in parse_policy(s.augment)]
    assert "saturation" not in ops and "color" not in ops and {"brightness", "contrast", "translation"} <= set(ops)
    same = {"channels", "gan_loss", "r2_gamma", "augment"}
    assert {k: v for k, v in s.to_dict().items() if k not in same} == {
        k: v for k, v in m.to_dict().items() if k not in same}
    # the stacked group's records before 2026-12-07 ran the mnist preset on 3 channels: `ns-saturation` rebuilds it
    old = next(v for v in STACKED if v.name == "ns-saturation").overrides
    assert presets.get("stacked-mnist", **{k: Config.parse_value(k, v) for k, v in old.items()}) == presets.get(
        "mnist", channels=3)


@pytest.mark.parametrize(
    "overrides,field",
    [
        ({"g_heads": 5}, "g_heads"),
        ({"d_heads": 7}, "d_heads"),
        ({"g_patch": 5}, "g_patch"),
        ({"d_patch": 3, "resolution": 33, "g_patch": 3}, "d_patch"),
        ({"channels": 2}, "channels"),
        ({"g_design": "D"}, "g_design"),
        ({"d_attention": "cosine"}, "d_attention"),
        ({"d_norm": "bn"}, "d_norm"),
        ({"g_dim": 0}, "g_dim"),
        ({"g_depth": -1}, "g_depth"),
        ({"g_depth": 2.5}, "g_depth"),
        ({"d_overlap": "yes"}, "d_overlap"),
        ({"mapping_lr_mul": float("nan")}, "mapping_lr_mul"),
        ({"d_arch": "cnn", "resolution": 24, "g_patch": 4}, "resolution"),
        ({"not_a_field": 1}, "not_a_field"),
        ({"d_pack": 3}, "batch"),  # batch 16
        ({"d_pack": 8}, "batch"),  # a group of 4 packs of 8 is 32 images, more than the batch
        ({"d_pack": 0}, "d_pack"),
    ],
)
def test_bad_values_name_the_field(overrides, field):
    with pytest.raises(ConfigError) as info:
        presets.get("mnist", **overrides)
    message = str(info.value)
    assert message.startswith(field + ":") and "\n" not in message


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"batch": 7}, "batch: must be a multiple of 4 (d_mbstd_group 4 x d_pack 1), got 7; e.g. 4 or 8"),
        ({"batch": 2}, "batch: must be a multiple of 4 (d_mbstd_group 4 x d_pack 1), got 2; e.g. 4"),
        ({"d_pack": 3}, "batch: must be a multiple of 12 (d_mbstd_group 4 x d_pack 3), got 16; e.g. 12 or 24"),
        ({"d_pack": 3, "d_mbstd": False}, "batch: must be a multiple of 3 (d_pack 3), got 16; e.g. 15 or 18"),
    ],
)
def test_a_batch_that_does_not_divide_says_which_batches_work(overrides, message):
    with pytest.raises(ConfigError) as info:
        presets.get("mnist", **overrides)  # batch 16, minibatch-std groups of 4
    assert str(info.value) == message


def test_unknown_preset():
    with pytest.raises(ConfigError, match="^preset: unknown preset 'imagenet'"):
        presets.get("imagenet")


def test_overrides_and_round_trip():
    c = presets.get("cifar10", d_attention="dot", d_overlap=False)
    assert c.d_attention == "dot" and not c.d_overlap and c.resolution == 32
    assert Config.from_dict(c.to_dict()) == c
    assert c.replace(g_depth=2).g_depth == 2


def test_parse_value():
    assert Config.parse_value("g_depth", "6") == 6
    assert Config.parse_value("d_overlap", "false") is False
    assert Config.parse_value("mapping_lr_mul", "0.1") == 0.1
    assert Config.parse_value("g_design", "A") == "A"
    with pytest.raises(ConfigError, match="^g_depth: cannot read 'six' as int"):
        Config.parse_value("g_depth", "six")


def test_qk_norm_is_off_in_every_preset_and_read_from_the_command_line():
    assert not any(presets.get(name).d_qk_norm for name in presets.names())
    assert Config.parse_value("d_qk_norm", "true") is True and presets.get("mnist", d_qk_norm=True).d_qk_norm


def test_numbers_are_coerced_to_the_field_type():
    import numpy as np
    import torch

    cfg = presets.get("mnist", beta1=0, g_lr=1, batch=np.int64(8))
    assert type(cfg.beta1) is float and type(cfg.g_lr) is float and type(cfg.batch) is int
    torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=cfg.g_lr, betas=(cfg.beta1, cfg.beta2))  # no TypeError
    assert Config.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="^batch: expected an integer, got 8.0"):
        presets.get("mnist", batch=8.0)  # a float is never silently truncated to an integer field
    with pytest.raises(ConfigError, match="^g_lr: expected a finite number"):
        presets.get("mnist", g_lr=10**400)


def test_every_field_says_what_it_means():
    import dataclasses

    for f in dataclasses.fields(Config):
        assert len(f.metadata.get("help", "")) > 8, f.name
