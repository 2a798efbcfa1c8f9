"""Every preset and every ablation: output shapes, value ranges, no NaN, and a gradient for every parameter."""

import statistics

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vitgan import CNNDiscriminator, Discriminator, Generator, build_discriminator, presets

ABLATIONS = {
    "vitgan": {},
    "d_dot": {"d_attention": "dot"},
    "d_sn": {"d_norm": "sn"},
    "d_no_norm": {"d_norm": "none"},
    "d_sigma_reparam": {"d_norm": "sigma_reparam"},
    "d_qk_gain": {"d_qk_gain": 0.5},
    "d_qk_norm": {"d_qk_norm": True},
    "g_norm_stream": {"g_norm_position": "stream"},
    "d_head_mlp": {"d_head": "mlp", "d_mbstd": True},
    "g_sln_equalized": {"g_sln_equalized": True},
    "d_no_overlap": {"d_overlap": False},
    "vanilla_d": {"d_attention": "dot", "d_norm": "none", "d_overlap": False},
    "g_design_a": {"g_design": "A"},
    "g_design_b": {"g_design": "B"},
    "g_linear_head": {"g_head": "linear"},
    "cnn_d": {"d_arch": "cnn"},
    "d_mbstd": {"d_mbstd": True},
    "g_tanh": {"g_output": "tanh"},
    "g_linear_output": {"g_output": "linear"},
}


@pytest.mark.parametrize("ablation", ABLATIONS)
@pytest.mark.parametrize("preset", presets.names())
def test_networks(preset, ablation):
    torch.manual_seed(0)
    cfg = presets.get(preset, **ABLATIONS[ablation])
    g, d = Generator(cfg), build_discriminator(cfg)
    batch = 4
    fake = g(torch.randn(batch, g.z_dim))
    assert fake.shape == (batch, cfg.channels, cfg.resolution, cfg.resolution)
    assert torch.isfinite(fake).all()
    if cfg.g_output == "tanh":
        assert fake.abs().max() <= 1.0
    real = torch.rand(batch, cfg.channels, cfg.resolution, cfg.resolution) * 2 - 1
    logits_fake, logits_real = d(fake), d(real)
    assert logits_fake.shape == (batch,) and logits_real.shape == (batch,)
    assert torch.isfinite(logits_fake).all() and torch.isfinite(logits_real).all()
    (F.softplus(logits_fake) + F.softplus(-logits_real)).sum().backward()  # D's logistic loss
    for net_name, net in (("G", g), ("D", d)):
        for name, p in net.named_parameters():
            assert p.grad is not None, f"{net_name}.{name} received no gradient"
            assert torch.isfinite(p.grad).all(), f"{net_name}.{name} has a non-finite gradient"
            assert p.grad.abs().sum() > 0, f"{net_name}.{name} received a zero gradient"


def test_the_output_range_is_stated_as_it_is():
    """Every preset's G has a linear, unbounded output (the images are clamped only when quantised), tanh bounds it:
    the docstrings say so rather than promise [-1, 1]."""
    from vitgan import images, sampling

    assert {presets.get(name).g_output for name in presets.names()} == {"linear"}
    for doc in (Generator.__doc__, sampling.generate.__doc__):
        assert "unbounded" in doc and "tanh" in doc, doc
    assert "clamp" in images.quantize.__doc__
    torch.manual_seed(0)
    for output in ("linear", "tanh"):
        g = Generator(presets.get("mnist", g_output=output, g_head="linear"))
        with torch.no_grad():
            g.head.linear.weight.mul_(100)  # a large output
            fake = g(torch.randn(2, g.z_dim))
        assert (fake.abs().max() > 1) == (output == "linear")


def test_ablation_switches_change_the_architecture():
    base = presets.get("mnist")
    assert isinstance(build_discriminator(base), Discriminator)
    assert isinstance(build_discriminator(base.replace(d_arch="cnn")), CNNDiscriminator)
    d_dot = Discriminator(base.replace(d_attention="dot", d_norm="none", d_overlap=False))
    assert not any("parametrizations" in name for name, _ in d_dot.named_parameters())
    assert d_dot.patch_embed.in_features == 16  # 4x4x1 non-overlapping patches
    g_b = Generator(base.replace(g_design="B"))
    assert not any(isinstance(m, type(Generator(base).blocks[0].norm1)) for m in g_b.modules())


def test_mlp_head_is_two_normalised_layers_from_the_class_token_and_its_minibatch_std():
    from vitgan.nn import ISNLinear

    d = Discriminator(presets.get("mnist", d_head="mlp", d_mbstd=True))
    first, act, last = d.head
    assert isinstance(first, ISNLinear) and isinstance(last, ISNLinear) and isinstance(act, nn.LeakyReLU)
    assert (first.in_features, first.out_features, last.out_features) == (d.cfg.d_dim + 1, d.cfg.d_dim, 1)


def test_vit_networks_have_no_convolution():
    cfg = presets.get("cifar10")
    for net in (Generator(cfg), Discriminator(cfg)):
        assert not any(isinstance(m, nn.modules.conv._ConvNd) for m in net.modules())


def test_every_discriminator_linear_layer_is_normalised():
    from vitgan.nn import ISNLinear

    d = Discriminator(presets.get("mnist"))
    linears = [m for m in d.modules() if isinstance(m, nn.Linear)]
    assert linears and all(isinstance(m, ISNLinear) for m in linears)
    # patch projection, qk and v and output per block, 2 MLP layers per block, the head (2 layers as an MLP)
    assert len(linears) == 1 + d.cfg.d_depth * 5 + (2 if d.cfg.d_head == "mlp" else 1)


def test_bad_input_shapes_give_one_line_errors():
    cfg = presets.get("mnist")
    with pytest.raises(ValueError, match=r"z: expected shape \(B, 128\)"):
        Generator(cfg)(torch.randn(2, 7))
    for d in (Discriminator(cfg), CNNDiscriminator(cfg.replace(d_arch="cnn"))):
        with pytest.raises(ValueError, match=r"images: expected shape \(B, 1, 32, 32\)"):
            d(torch.randn(2, 3, 32, 32))


def test_minibatch_std_feature():
    from vitgan.nn import MinibatchStd

    x = torch.randn(8, 3, 4, 4)
    out = MinibatchStd(group_size=4)(x)
    assert out.shape == (8, 4, 4, 4)
    # group of sample 0: samples 0-3 (consecutive); std over the group, averaged over features and pixels
    for group in ([0, 1, 2, 3], [4, 5, 6, 7]):
        expected = (x[group].var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        for i in group:
            torch.testing.assert_close(out[i, 3], expected.expand(4, 4))
    torch.testing.assert_close(out[:, :3], x)
    # a batch of 6 takes groups of 3 (the largest divisor of 6 not above 4)
    x = torch.randn(6, 2, 1, 1)
    expected = (x[3:].var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
    torch.testing.assert_close(MinibatchStd(group_size=4)(x)[5, 2, 0, 0], expected)


@pytest.mark.parametrize("arch", ["vit", "cnn"])
def test_minibatch_std_group_size_sets_which_samples_a_logit_depends_on(arch):
    """d_mbstd_group=G: a sample's logit depends on the other samples of its group of G consecutive ones only."""
    cfg = presets.get("mnist", d_arch=arch)
    images = torch.randn(16, 1, 32, 32)
    changed = images.clone()
    changed[15] = torch.randn(1, 32, 32)  # the last sample only
    for group, depends in ((4, False), (16, True)):
        torch.manual_seed(0)
        d = build_discriminator(cfg.replace(d_mbstd_group=group)).eval()
        with torch.no_grad():
            before, after = d(images), d(changed)
        assert not torch.equal(before[15], after[15])
        assert torch.equal(before[:12], after[:12]) != depends  # samples 0-11 share no group of 4 with sample 15


@pytest.mark.parametrize("arch", ["vit", "cnn"])
def test_pacgan_gives_one_logit_per_pack_of_consecutive_images(arch):
    """d_pack=m (PacGAN): B / m logits, logit k a function of images k*m .. k*m+m-1 only, whose order matters; with
    a minibatch-std layer the groups count packs (4 packs of 2 here: images 0-7 and 8-15)."""
    torch.manual_seed(0)
    d = build_discriminator(presets.get("mnist", d_arch=arch, d_pack=2, d_mbstd_group=1)).eval()  # no mixing
    images = torch.randn(8, 1, 32, 32)
    with torch.no_grad():
        logits = d(images)
        assert logits.shape == (4,)
        torch.testing.assert_close(torch.cat([d(images[i:i + 2]) for i in range(0, 8, 2)]), logits)
        swapped = images[[1, 0, 2, 3, 4, 5, 6, 7]]  # the two images of pack 0 change places
        assert not torch.equal(d(swapped)[0], logits[0]) and torch.equal(d(swapped)[1:], logits[1:])
    torch.manual_seed(0)
    d = build_discriminator(presets.get("mnist", d_arch=arch, d_pack=2)).eval()
    images = torch.randn(16, 1, 32, 32)
    changed = images.clone()
    changed[15] = torch.randn(1, 32, 32)
    with torch.no_grad():
        before, after = d(images), d(changed)
    assert torch.equal(before[:4], after[:4]) and not torch.equal(before[4:], after[4:])
    with pytest.raises(ValueError, match=r"^images: a batch of 3 is not whole packs of d_pack=2$"):
        d(torch.randn(3, 1, 32, 32))


def test_minibatch_std_segments_equal_separate_batches():
    """segments=S groups each of the S consecutive sub-batches alone: the same as S separate calls (and not the
    grouping of the whole batch, which would mix reals with fakes)."""
    from vitgan.nn import MinibatchStd

    layer, x = MinibatchStd(group_size=4), torch.randn(12, 3, 2, 2)
    expected = torch.cat([layer(part) for part in x.split(6)])  # groups of 3 in each
    torch.testing.assert_close(layer(x, segments=2), expected)
    assert not torch.allclose(layer(x), expected)  # the whole batch of 12: groups of 4, one spanning both
    cfg = presets.get("mnist")
    for d in (Discriminator(cfg).eval(), CNNDiscriminator(cfg.replace(d_arch="cnn")).eval()):
        images = torch.randn(16, 1, 32, 32)
        torch.testing.assert_close(d(images, segments=2), torch.cat([d(images[:8]), d(images[8:])]), rtol=1e-4,
                                   atol=1e-5)


def test_minibatch_std_in_the_vit_discriminator_couples_samples():
    torch.manual_seed(1)
    x = torch.randn(8, 1, 32, 32)
    plain = Discriminator(presets.get("mnist", d_mbstd=False, d_head="linear"))
    mbstd = Discriminator(presets.get("mnist", d_mbstd=True, d_head="linear"))
    assert not plain.mixes_samples and mbstd.mixes_samples
    assert mbstd.head.in_features == plain.head.in_features + 1
    y = x.clone()
    y[1] += 1.0  # change sample 1 only
    for d, coupled in ((plain, False), (mbstd, True)):
        d.eval()
        with torch.no_grad():
            changed = (d(x) - d(y)).abs() > 1e-6
        assert changed[1]
        assert bool(changed[[0, 2, 3, 4, 5, 6, 7]].any()) == coupled  # sample 1's group mates (and only with mbstd)


@pytest.mark.parametrize("equalized", [False, True])
@pytest.mark.parametrize("preset", presets.names())
def test_every_sln_of_the_built_generator_starts_at_gamma_one(preset, equalized):
    """SLN(h, w) = gamma(w) LN(h) + beta(w) with gamma(w) ~ 1 at initialisation, in every block of the built G (a
    generator-wide re-initialisation must not reset gamma's bias to 0, which makes gamma(w) ~ 0 and often negative)."""
    from vitgan.nn import SLN

    torch.manual_seed(0)
    g = Generator(presets.get(preset, g_sln_equalized=equalized))
    slns = [m for m in g.modules() if isinstance(m, SLN)]
    assert len(slns) == 2 * g.cfg.g_depth + 1  # before attention and MLP in each block, and at the output
    with torch.no_grad():
        w = g.map(torch.randn(512, g.z_dim))
        for sln in slns:
            gamma = sln.gamma(w)  # affine in w, (B, dim)
            assert abs(gamma.mean().item() - 1) < 0.15
            assert (gamma > 0).float().mean() > 0.6  # mostly positive: the block keeps LN's sign


def test_query_key_gain_scales_the_initial_distance_projection_only():
    """d_qk_gain g: D's q/k projection starts as Xavier-uniform with bound g sqrt(6 / (fan_in + fan_out)); ISN keeps
    sigma(W_init) = g x the gain-1 value; every other layer is unchanged."""
    cfg = presets.get("mnist")
    torch.manual_seed(0)
    plain = Discriminator(cfg)
    torch.manual_seed(0)
    scaled = Discriminator(cfg.replace(d_qk_gain=0.5))
    a, b = plain.blocks[0].attn, scaled.blocks[0].attn
    bound = (6 / (2 * cfg.d_dim)) ** 0.5
    raw = b.qk.parametrizations.weight.original
    assert raw.abs().max() <= 0.5 * bound and raw.abs().max() > 0.45 * bound
    sigma = lambda layer: float(layer.parametrizations.weight[1].scale)  # noqa: E731 - ISN's sigma(W_init)
    assert sigma(b.qk) == pytest.approx(0.5 * sigma(a.qk), rel=1e-5)
    assert sigma(b.v) == sigma(a.v) and sigma(b.proj) == sigma(a.proj)


def test_query_key_gain_decides_whether_the_class_token_sees_the_patches():
    """With tied q/k, -||q_i - k_j||^2 is largest (0) for j = i, and the distances grow with the square of the q/k
    gain: at gain 1 the class token takes almost all its attention from itself at initialisation (the config's
    comment on d_qk_gain), at 0.5 mostly from the patches of real digits."""
    import math

    from vitgan.data import load_mnist5k
    from vitgan.nn import L2Attention

    images = load_mnist5k().batch(torch.arange(32))
    for gain, low, high in ((1.0, 0.0, 0.1), (0.5, 0.5, 1.0)):
        torch.manual_seed(0)
        d = Discriminator(presets.get("mnist", d_qk_gain=gain)).eval()
        shares = []

        def record(module, inputs, output, shares=shares):
            qk = module._heads(module.qk(inputs[0])).float()  # (B, h, N, d_h)
            weights = (-torch.cdist(qk, qk).square() / math.sqrt(module.head_dim)).softmax(-1)  # the paper's Eq. 3
            shares.append(weights[..., 0, 1:].sum(-1).mean().item())  # class token (index 0) -> patches

        for module in d.modules():
            if isinstance(module, L2Attention):
                module.register_forward_hook(record)
        with torch.no_grad():
            d(images)
        assert len(shares) == d.cfg.d_depth
        assert low < statistics.mean(shares) < high, (gain, shares)


@pytest.mark.parametrize("attention", ["l2", "dot"])
def test_qk_norm_adds_a_layernorm_over_the_head_dim_to_every_d_attention_and_trains(attention):
    """d_qk_norm: every block's attention normalises its per-head queries and keys (L2: one LayerNorm on the tied
    q/k, dot: one each), adding a gain and a bias of d_h values per LayerNorm; G is unchanged; D takes a step."""
    cfg = presets.get("mnist", d_attention=attention)
    torch.manual_seed(0)
    plain, d = Discriminator(cfg), Discriminator(cfg.replace(d_qk_norm=True))
    head_dim = cfg.d_dim // cfg.d_heads
    names = ["qk_norm"] if attention == "l2" else ["q_norm", "k_norm"]
    for block in d.blocks:
        for name in names:
            norm = getattr(block.attn, name)
            assert isinstance(norm, nn.LayerNorm) and norm.normalized_shape == (head_dim,)
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert count(d) == count(plain) + cfg.d_depth * len(names) * 2 * head_dim
    assert not any("norm.weight" in n and ".attn." in n for n, _ in plain.named_parameters())
    assert count(Generator(cfg.replace(d_qk_norm=True))) == count(Generator(cfg))

    before = {n: p.detach().clone() for n, p in d.named_parameters() if "attn." in n and "_norm" in n}
    opt = torch.optim.Adam(d.parameters(), lr=1e-3)
    real, fake = torch.rand(4, 1, 32, 32) * 2 - 1, torch.rand(4, 1, 32, 32) * 2 - 1
    loss = (F.softplus(d(fake)) + F.softplus(-d(real))).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    for n, p in d.named_parameters():
        if n in before:
            assert not torch.equal(p, before[n]), f"{n} did not move"


@pytest.mark.parametrize("position", ["pre", "stream"])
def test_generator_block_places_its_norms_as_configured(position):
    """pre (paper, Eq. 5): h' = h + MSA(SLN(h, w)), out = h' + MLP(SLN(h', w)); stream (the authors' code):
    u = SLN(h, w), h' = u + MSA(u), v = SLN(h', w), out = v + MLP(v)."""
    from vitgan.networks.generator import GeneratorBlock

    torch.manual_seed(0)
    block = GeneratorBlock(16, 2, 32, 8, modulated=True, norm_position=position)
    h, w = torch.randn(3, 5, 16), torch.randn(3, 8)

    def sln(norm, x):  # gamma(w) * LN(x) + beta(w), written out
        mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
        return norm.gamma(w)[:, None] * (x - mu) / torch.sqrt(var + norm.eps) + norm.beta(w)[:, None]

    if position == "pre":
        h1 = h + block.attn(sln(block.norm1, h))
        expected = h1 + block.mlp(sln(block.norm2, h1))
    else:
        u = sln(block.norm1, h)
        v = sln(block.norm2, u + block.attn(u))
        expected = v + block.mlp(v)
    torch.testing.assert_close(block(h, w), expected, rtol=1e-5, atol=1e-5)
