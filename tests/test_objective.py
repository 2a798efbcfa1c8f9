"""How a training step combines the paper's formulas, against hand computation on tiny deterministic networks: which
images each term sees, the R1 weight and schedule, each bCR pairing, G's loss, the EMA, gradient accumulation; and
a short run on a toy distribution that must learn."""

import math

import pytest
import torch
from torch import nn

from vitgan import presets
from vitgan.data import ImageData
from vitgan.training.augment import Draws
from vitgan.training.loss import D_TERMS, TERMS, ViTGANLoss
from vitgan.training.trainer import Trainer

W = torch.tensor([[[[1.0, -2.0], [0.5, 3.0]]]])  # D's weights: not left-right symmetric, so a flip changes D(x)


class LinearD(nn.Module):
    """D(x) = <w, x> + b: its logits and its input gradient (w, for every sample) are known in closed form."""

    mixes_samples = False

    def __init__(self, bias: float = 0.0) -> None:
        super().__init__()
        self.w, self.b = nn.Parameter(W.clone()), nn.Parameter(torch.tensor(bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).sum(dim=(1, 2, 3)) + self.b


class ScaleG(nn.Module):
    """G(z) = a z, as 1x2x2 images."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.5))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (self.a * z).view(-1, 1, 2, 2)


REALS = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, -1.0, 2.0, 0.0], [0.0, 1.0, -1.0, 0.5]]).view(3, 1, 2, 2)
Z = torch.tensor([[2.0, 1.0, -1.0, 0.0], [0.0, -2.0, 1.0, 1.0], [1.0, 1.0, 1.0, -3.0]])


def _d(x: torch.Tensor) -> list[float]:
    """D's logits by hand (bias 0.3, as `_loss` builds it)."""
    return [float((row * W[0]).sum()) + 0.3 for row in x]


def _softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def _loss(**overrides) -> ViTGANLoss:
    """The objective on the tiny networks; no augmentation and no regularisation unless asked for."""
    cfg = presets.get("mnist", **{"augment": "", "bcr_real": 0.0, "bcr_fake": 0.0, "r1_gamma": 0.0, **overrides})
    return ViTGANLoss(cfg, ScaleG(), LinearD(0.3), draws=lambda: Draws(torch.Generator().manual_seed(0)))


def test_d_loss_takes_reals_and_fakes_in_their_places_both_augmented():
    loss = _loss(augment="xflip", augment_p=1.0)  # a deterministic augmentation: every image mirrored
    total, terms, stats = loss("Dmain", z=Z, reals=REALS)
    real_logits, fake_logits = _d(REALS.flip(-1)), _d((0.5 * Z).view(3, 1, 2, 2).flip(-1))
    expected = (sum(_softplus(v) for v in fake_logits) + sum(_softplus(-v) for v in real_logits)) / 3
    assert terms["loss_d"].item() == pytest.approx(expected, rel=1e-6)
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert stats["logits_real"].item() == pytest.approx(sum(real_logits) / 3, rel=1e-6)
    assert stats["logits_fake"].item() == pytest.approx(sum(fake_logits) / 3, rel=1e-6)
    assert stats["real_sign"].item() == pytest.approx(sum(math.copysign(1, v) for v in real_logits) / 3)  # ADA's r
    assert set(terms) == set(D_TERMS) and terms["r1"].item() == terms["bcr_real"].item() == 0


class CentringD(LinearD):
    """D(x)_i = <w, x_i> - the mean of <w, x_j> over x_i's batch: each logit depends on its batch (as with minibatch
    std), and `segments` says where one batch ends."""

    mixes_samples = True

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor, segments: int = 1) -> torch.Tensor:
        self.calls += 1
        logits = super().forward(x).view(segments, -1)
        return (logits - logits.mean(dim=1, keepdim=True)).flatten()


def test_d_sees_reals_and_fakes_in_one_forward_but_each_as_its_own_batch():
    cfg = presets.get("mnist", augment="", bcr_real=2.0, bcr_fake=0.0, r1_gamma=0.0, bcr_mode="diffaug")
    D = CentringD()
    loss = ViTGANLoss(cfg, ScaleG(), D, draws=lambda: Draws(torch.Generator().manual_seed(0)))
    terms = loss("Dmain", z=Z, reals=REALS).terms
    assert D.calls == 1  # reals, fakes and T(reals) (bCR) together

    def centred(x: torch.Tensor) -> list[float]:
        logits = [v - 0.3 for v in _d(x)]
        return [v - sum(logits) / len(logits) for v in logits]

    real, fake = centred(REALS), centred((0.5 * Z).view(3, 1, 2, 2))
    expected = (sum(_softplus(v) for v in fake) + sum(_softplus(-v) for v in real)) / 3
    assert terms["loss_d"].item() == pytest.approx(expected, rel=1e-6)
    assert terms["bcr_real"].item() == pytest.approx(0.0, abs=1e-9)  # T = no augmentation: the same logits


def test_r1_is_gamma_over_2_times_the_interval_times_the_mean_squared_input_gradient_on_r1_phases_only():
    loss = _loss(r1_gamma=0.3, r1_interval=4)
    weight = 0.3 / 2 * 4 * W.square().sum().item()  # grad_x D = w for every sample: E||grad||^2 = ||w||^2
    assert loss("Dmain", z=Z, reals=REALS).terms["r1"].item() == 0
    both = loss("Dboth", z=Z, reals=REALS)
    assert both.terms["r1"].item() == pytest.approx(weight, rel=1e-6)
    assert both.total.item() == pytest.approx(both.terms["loss_d"].item() + weight, rel=1e-6)
    with pytest.raises(ValueError, match="Dmain, Dboth, Gmain"):
        loss("Dreg", z=Z, reals=REALS)  # no phase of R1 alone: Dboth adds it to Dmain
    r1 = loss.penalty(REALS, 0.3)  # the term alone, as Dboth adds it
    assert r1.item() == pytest.approx(weight, rel=1e-6)
    r1.backward()
    torch.testing.assert_close(loss.D.w.grad, 0.3 / 2 * 4 * 2 * W)  # d/dw of ||w||^2 = 2w, through the double backward


def test_the_trainer_asks_for_r1_every_interval_d_steps_and_never_when_gamma_is_zero():
    trainer = _tiny_trainer(r1_gamma=0.1, r1_interval=3)
    phases = []
    for _ in range(7):
        phases.append(trainer.d_phase())
        trainer.d_steps += 1
    assert phases == ["Dboth", "Dmain", "Dmain", "Dboth", "Dmain", "Dmain", "Dboth"]
    assert _tiny_trainer(r1_gamma=0.0, r1_interval=1).d_phase() == "Dmain"
    trainer = _tiny_trainer(r1_gamma=0.1, r1_interval=2)
    r1 = [trainer.step()["r1"] for _ in range(4)]
    assert r1[0] > 0 and r1[2] > 0 and r1[1] == r1[3] == 0


def test_each_bcr_term_pairs_a_batch_with_its_own_transform():
    """bcr_real = w_real E[(D(aug real) - D(T(real)))^2], bcr_fake likewise; with T(x) = 2x and a D without bias,
    D(T(x)) - D(x) = D(x), so each term is its weight times the mean squared logit of its own batch."""
    cfg = presets.get("mnist", augment="", bcr_real=3.0, bcr_fake=5.0, r1_gamma=0.0)
    calls = []

    def double(plain: torch.Tensor, augmented: torch.Tensor) -> torch.Tensor:
        calls.append(plain)
        return 2 * augmented

    loss = ViTGANLoss(cfg, ScaleG(), LinearD(0.0), draws=lambda: Draws(), transform=double)
    total, terms, _ = loss("Dmain", z=Z, reals=REALS)
    real_logits = [v - 0.3 for v in _d(REALS)]
    fake_logits = [v - 0.3 for v in _d((0.5 * Z).view(3, 1, 2, 2))]
    assert terms["bcr_real"].item() == pytest.approx(3.0 * sum(v * v for v in real_logits) / 3, rel=1e-6)
    assert terms["bcr_fake"].item() == pytest.approx(5.0 * sum(v * v for v in fake_logits) / 3, rel=1e-6)
    assert total.item() == pytest.approx(sum(terms[name].item() for name in D_TERMS), rel=1e-6)
    assert torch.equal(calls[0], REALS) and torch.allclose(calls[1], (0.5 * Z).view(3, 1, 2, 2))  # T(real), T(fake)
    calls.clear()
    off = ViTGANLoss(cfg.replace(bcr_real=0.0, bcr_fake=0.0), ScaleG(), LinearD(0.0), draws=lambda: Draws(),
                     transform=double)
    assert off("Dmain", z=Z, reals=REALS).terms["bcr_real"].item() == 0 and not calls  # off: T is never drawn


def test_g_loss_is_the_non_saturating_loss_of_augmented_fakes():
    loss = _loss(augment="xflip", augment_p=1.0)
    total, terms, _ = loss("Gmain", z=Z)
    fake_logits = _d((0.5 * Z).view(3, 1, 2, 2).flip(-1))
    assert terms["loss_g"].item() == pytest.approx(sum(_softplus(-v) for v in fake_logits) / 3, rel=1e-6)
    assert total is terms["loss_g"]
    total.backward()  # d/da softplus(-D(flip(a z))) = -sigmoid(-D) <w, flip(z)>
    expected = -sum(1 / (1 + math.exp(v)) * (v - 0.3) / 0.5 for v in fake_logits) / 3
    assert loss.G.a.grad.item() == pytest.approx(expected, rel=1e-5)


def _tiny_trainer(batch: int = 4, batch_gpu: int | None = None, **overrides) -> Trainer:
    cfg = presets.get("mnist", g_dim=32, g_depth=1, g_heads=2, g_mlp_dim=64, z_dim=16, w_dim=16, mapping_layers=1,
                      g_fourier_dim=8, g_inr_hidden=8, d_dim=32, d_depth=1, d_heads=2, d_mlp_dim=64, batch=batch,
                      **overrides)
    images = torch.randint(0, 256, (16, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    return Trainer(cfg, ImageData(images, torch.full((16,), -1), "tiny"), torch.device("cpu"), None,
                   batch_gpu=batch_gpu)


@pytest.mark.parametrize(("ema_kimg", "ema_rampup", "betas"), [
    (0.01, 0.0, [0.5 ** (4 / 10)] * 2),  # half-life 10 images, batch 4
    (10.0, 1.0, [0.5 ** (4 / 4), 0.5 ** (4 / 8)]),  # ramp-up: the half-life is the images seen so far (4, then 8)
])
def test_ema_moves_towards_g_by_the_half_life_of_its_images(ema_kimg, ema_rampup, betas):
    trainer = _tiny_trainer(ema_kimg=ema_kimg, ema_rampup=ema_rampup)
    for beta in betas:
        before = [p.clone() for p in trainer.G_ema.parameters()]
        trainer.step()
        for old, new, g in zip(before, trainer.G_ema.parameters(), trainer.G.parameters(), strict=True):
            torch.testing.assert_close(new, beta * old + (1 - beta) * g.detach())
    for b_ema, b in zip(trainer.G_ema.buffers(), trainer.G.buffers(), strict=True):
        assert torch.equal(b_ema, b)  # w_avg is copied


def _grads(net: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}


def test_accumulating_r_rounds_gives_the_gradient_of_one_round_of_r_times_the_images():
    """Before Adam (which hides a scale): 4 rounds of 2 images == 1 round of 8, for D (with R1) and for G. Without
    augmentation or minibatch-std the two split the same images and latents alike; D without spectral norm, whose
    power iteration takes one step per forward pass (4 in 4 rounds), so its sigma estimate differs by design."""
    kwargs = dict(batch=8, augment="", bcr_real=0.0, bcr_fake=0.0, r1_gamma=0.5, r1_interval=1, d_mbstd=False,
                  d_norm="none")
    one, four = _tiny_trainer(batch_gpu=8, **kwargs), _tiny_trainer(batch_gpu=2, **kwargs)
    assert (one.rounds, four.rounds) == (1, 4)
    for phase, net in (("Dboth", "D"), ("Gmain", "G")):
        terms_one, terms_four = one.accumulate(phase), four.accumulate(phase)
        for name in terms_one:
            assert float(terms_four[name]) == pytest.approx(float(terms_one[name]), rel=1e-5, abs=1e-7), name
        expected, got = _grads(getattr(one, net)), _grads(getattr(four, net))
        assert expected.keys() == got.keys()
        scale = max(g.abs().max().item() for g in expected.values())
        for name, grad in expected.items():
            torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-6 * scale, msg=f"{net}.{name}")


def test_training_learns_a_toy_distribution():
    """150 steps on 8x8 images of a bar at one of two places: D tells them apart (loss below log 4, chance) and the
    mean of G's samples moves towards the data's. A flipped loss sign drives G away from the data (measured: the
    distance grows from 0.82 to 1.1 while D's loss falls)."""
    n = 64
    images = torch.zeros(n, 1, 8, 8, dtype=torch.uint8)
    for i, place in enumerate(torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(0)).tolist()):
        images[i, :, 2:6, 1 + 3 * place:4 + 3 * place] = 255
    data = ImageData(images, torch.full((n,), -1), "toy")
    cfg = presets.get("mnist", resolution=8, g_dim=32, g_depth=1, g_heads=2, g_mlp_dim=64, z_dim=16, w_dim=16,
                      mapping_layers=1, g_fourier_dim=8, g_inr_hidden=16, g_output="tanh", d_dim=32, d_depth=1,
                      d_heads=2, d_mlp_dim=64, d_mbstd=False, batch=16, augment="", bcr_real=0.0, bcr_fake=0.0,
                      r1_gamma=0.1, r1_interval=4, g_lr=5e-4, d_lr=5e-4, g_sln_equalized=False, d_head="linear")
    torch.manual_seed(0)
    trainer = Trainer(cfg, data, torch.device("cpu"), None, seed=0)
    data_mean, z = data.batch(torch.arange(n)).mean(0), torch.randn(256, 16, generator=torch.Generator().manual_seed(1))

    def distance() -> float:
        with torch.no_grad():
            return (trainer.G(z).mean(0) - data_mean).abs().mean().item()

    start = distance()
    stats = [trainer.step() for _ in range(150)]
    assert all(math.isfinite(s[name]) for s in stats for name in TERMS)
    assert sum(s["loss_d"] for s in stats[-50:]) / 50 < math.log(4) - 0.2
    assert distance() < 0.8 * start, (start, distance())


# --- the relativistic pairing loss (RpGAN) and R2 ---
def test_rpgan_d_loss_pairs_real_i_with_fake_i_through_softplus_of_their_difference():
    loss = _loss(gan_loss="rpgan", augment="xflip", augment_p=1.0)
    total, terms, _ = loss("Dmain", z=Z, reals=REALS)
    real_logits, fake_logits = _d(REALS.flip(-1)), _d((0.5 * Z).view(3, 1, 2, 2).flip(-1))
    # D minimises softplus(-(D(x_r) - D(x_f))) = log(1 + exp(D(x_f) - D(x_r))), pair by pair
    expected = sum(_softplus(f - r) for r, f in zip(real_logits, fake_logits, strict=True)) / 3
    assert terms["loss_d"].item() == pytest.approx(expected, rel=1e-6)
    assert total.item() == pytest.approx(expected, rel=1e-6)
    crossed = sum(_softplus(f - r) for r in real_logits for f in fake_logits) / 9  # every real with every fake
    assert abs(expected - crossed) > 1e-3 and terms["loss_d"].item() != pytest.approx(crossed, rel=1e-4)
    total.backward()  # d/db: the bias cancels in each difference
    assert loss.D.b.grad.item() == pytest.approx(0.0, abs=1e-7)


def test_rpgan_g_loss_pairs_each_fake_with_the_real_of_its_place_and_moves_only_g():
    loss = _loss(gan_loss="rpgan", augment="xflip", augment_p=1.0)
    total, terms, _ = loss("Gmain", z=Z, reals=REALS)
    real_logits, fake_logits = _d(REALS.flip(-1)), _d((0.5 * Z).view(3, 1, 2, 2).flip(-1))
    # G minimises softplus(-(D(x_f) - D(x_r))) = log(1 + exp(D(x_r) - D(x_f)))
    expected = sum(_softplus(r - f) for r, f in zip(real_logits, fake_logits, strict=True)) / 3
    assert terms["loss_g"].item() == pytest.approx(expected, rel=1e-6)
    total.backward()  # d/da: -sigmoid(D(x_r) - D(x_f)) d D(x_f)/da, D(x_f) - 0.3 linear in a
    sigmoid = [1 / (1 + math.exp(f - r)) for r, f in zip(real_logits, fake_logits, strict=True)]
    grad = -sum(s * (f - 0.3) / 0.5 for s, f in zip(sigmoid, fake_logits, strict=True)) / 3
    assert loss.G.a.grad.item() == pytest.approx(grad, rel=1e-5)
    with pytest.raises(ValueError, match="reals"):
        loss("Gmain", z=Z)  # rpgan's G needs the round's reals


def test_rpgan_and_minibatch_std_see_reals_and_fakes_as_separate_batches_in_one_forward():
    cfg = presets.get("mnist", augment="", bcr_real=0.0, bcr_fake=0.0, r1_gamma=0.0, gan_loss="rpgan")
    D = CentringD()
    loss = ViTGANLoss(cfg, ScaleG(), D, draws=lambda: Draws(torch.Generator().manual_seed(0)))
    terms = loss("Dmain", z=Z, reals=REALS).terms
    g_terms = loss("Gmain", z=Z, reals=REALS).terms
    assert D.calls == 2  # one forward per phase

    def centred(x: torch.Tensor) -> list[float]:
        logits = [v - 0.3 for v in _d(x)]
        return [v - sum(logits) / len(logits) for v in logits]

    real, fake = centred(REALS), centred((0.5 * Z).view(3, 1, 2, 2))
    pairs = list(zip(real, fake, strict=True))
    assert terms["loss_d"].item() == pytest.approx(sum(_softplus(f - r) for r, f in pairs) / 3, rel=1e-6)
    assert g_terms["loss_g"].item() == pytest.approx(sum(_softplus(r - f) for r, f in pairs) / 3, rel=1e-6)


class QuadraticD(LinearD):
    """D(x) = <w, x> + <x, x> / 2: grad_x D = w + x differs from image to image, so a penalty says which images it
    was taken on."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + x.square().sum(dim=(1, 2, 3)) / 2


def _mean_square_grad(x: torch.Tensor) -> float:
    return float(sum((W[0] + row).square().sum() for row in x) / len(x))


def test_r2_is_gamma_over_2_times_the_interval_times_the_mean_squared_input_gradient_on_the_fakes_only():
    cfg = presets.get("mnist", augment="", bcr_real=0.0, bcr_fake=0.0, r1_gamma=0.0, r2_gamma=0.4, r1_interval=2)
    loss = ViTGANLoss(cfg, ScaleG(), QuadraticD(0.3), draws=lambda: Draws(torch.Generator().manual_seed(0)))
    fakes = (0.5 * Z).view(3, 1, 2, 2)
    assert loss("Dmain", z=Z, reals=REALS).terms["r2"].item() == 0  # lazy: Dboth only
    both = loss("Dboth", z=Z, reals=REALS)
    r2 = 0.4 / 2 * 2 * _mean_square_grad(fakes)
    assert both.terms["r2"].item() == pytest.approx(r2, rel=1e-6)
    assert both.terms["r1"].item() == 0  # r1_gamma 0: no R1, though the phase is Dboth
    assert both.total.item() == pytest.approx(both.terms["loss_d"].item() + r2, rel=1e-6)
    assert abs(r2 - 0.4 * _mean_square_grad(REALS)) > 1e-3  # the reals would give another value
    both.total.backward()
    assert loss.G.a.grad is None  # the fakes are detached: no gradient reaches G through R2 (nor D's loss)


def test_r1_and_r2_each_take_their_own_gamma_on_their_own_images():
    cfg = presets.get("mnist", augment="", bcr_real=0.0, bcr_fake=0.0, r1_gamma=0.3, r2_gamma=0.7, r1_interval=1)
    loss = ViTGANLoss(cfg, ScaleG(), QuadraticD(0.3), draws=lambda: Draws(torch.Generator().manual_seed(0)))
    terms = loss("Dboth", z=Z, reals=REALS).terms
    assert terms["r1"].item() == pytest.approx(0.3 / 2 * _mean_square_grad(REALS), rel=1e-6)
    assert terms["r2"].item() == pytest.approx(0.7 / 2 * _mean_square_grad((0.5 * Z).view(3, 1, 2, 2)), rel=1e-6)


def test_the_trainer_asks_for_the_penalties_when_only_r2_is_on_and_rpgan_g_reuses_the_d_steps_reals(monkeypatch):
    trainer = _tiny_trainer(r1_gamma=0.0, r2_gamma=0.5, r1_interval=2, gan_loss="rpgan", batch=4, batch_gpu=2)
    assert trainer.d_phase() == "Dboth"
    seen = []
    call = ViTGANLoss.__call__

    def spy(self, phase, **batch):
        seen.append((phase, batch["reals"]))
        return call(self, phase, **batch)

    monkeypatch.setattr(ViTGANLoss, "__call__", spy)
    stats = trainer.step()
    assert stats["r2"] > 0 and stats["r1"] == 0
    d_reals = [reals for phase, reals in seen if phase != "Gmain"]
    g_reals = [reals for phase, reals in seen if phase == "Gmain"]
    assert len(d_reals) == len(g_reals) == 2  # two rounds of 2 images each
    assert all(g is d for g, d in zip(g_reals, d_reals, strict=True))  # round i of G with round i of D's reals
    assert trainer.cur_nimg == 4  # G's step draws no images: kimg counts the reals D sees


def test_rpgan_refuses_packs_that_cannot_pair_at_config_time():
    """rpgan pairs pack i of the reals with pack i of the fakes: a batch of whole minibatch-std groups of packs is
    what makes every round's counts equal, and anything else is refused when the Config is made."""
    from vitgan.config import ConfigError

    presets.get("mnist", gan_loss="rpgan", d_pack=2, batch=16)  # 2 groups of 4 packs of 2
    with pytest.raises(ConfigError, match=r"^batch: must be a multiple of 8 \(d_mbstd_group 4 x d_pack 2\)"):
        presets.get("mnist", gan_loss="rpgan", d_pack=2, batch=12)
    with pytest.raises(ConfigError, match="^gan_loss: 'wgan' is not one of ns, rpgan"):
        presets.get("mnist", gan_loss="wgan")
    with pytest.raises(ConfigError, match="^r2_gamma: must be zero or positive"):
        presets.get("mnist", r2_gamma=-1.0)
