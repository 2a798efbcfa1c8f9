"""Class conditioning against its formulas: StyleGAN2-ADA's label embedding in G's mapping network, the projection
discriminator's class term, the labels every loss term gives D (R1, R2 and bCR each image's own), the fakes' labels
drawn from the data's, and class agreement."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import vitgan
from vitgan import presets
from vitgan.cli import main
from vitgan.config import ConfigError
from vitgan.data import ImageData
from vitgan.metrics.digits import agreement_by_class, class_agreement
from vitgan.networks import CNNDiscriminator, Discriminator, Generator
from vitgan.networks.generator import MappingNetwork
from vitgan.nn.spectral import largest_singular_values
from vitgan.sampling import class_rows, label_draws
from vitgan.training.augment import Draws
from vitgan.training.checkpoint import load_training_state
from vitgan.training.loss import ViTGANLoss, r1_penalty
from vitgan.training.trainer import Trainer

SMALL = dict(g_dim=32, g_depth=1, g_heads=2, g_mlp_dim=64, z_dim=16, w_dim=16, mapping_layers=2, g_fourier_dim=8,
             g_inr_hidden=8, d_dim=32, d_depth=1, d_heads=2, d_mlp_dim=64, batch=4)


def _cfg(**overrides):
    return presets.get("mnist", **{**SMALL, "cond": 10, **overrides})


def _unit_rms(x: torch.Tensor) -> torch.Tensor:
    return x / x.square().mean(dim=1, keepdim=True).add(1e-8).sqrt()


def test_mapping_embeds_the_label_beside_z_as_stylegan2_ada():
    """w = MLP(concat(z / rms(z), e / rms(e))), e = W_e onehot(c) / sqrt(K) + b_e (an equalised-lr layer, lr 1)."""
    torch.manual_seed(0)
    net = MappingNetwork(6, 5, 2, lr_mul=0.01, classes=3)
    with torch.no_grad():
        net.embed.bias.normal_()
    z, c = torch.randn(4, 6), torch.tensor([0, 2, 1, 2])
    e = net.embed.weight[:, c].T / math.sqrt(3) + net.embed.bias
    x = torch.cat([_unit_rms(z), _unit_rms(e)], dim=1)
    for layer in net.layers:
        x = torch.nn.functional.linear(x, layer.weight * 0.01 / math.sqrt(layer.weight.shape[1]), layer.bias * 0.01)
        x = torch.nn.functional.leaky_relu(x, 0.2) * math.sqrt(2)
    torch.testing.assert_close(net(z, c), x)


def test_conditional_generator_draws_the_class_it_is_given():
    torch.manual_seed(0)
    G = Generator(_cfg()).eval()
    z = torch.randn(2, 16).repeat(2, 1)
    images = G(z, torch.tensor([3, 3, 7, 7]))
    assert images.shape == (4, 1, 32, 32)
    assert not torch.allclose(images[:2], images[2:])  # the class changes the image of the same z
    torch.testing.assert_close(G(z[:2], torch.tensor([3, 3])), images[:2])
    with pytest.raises(ValueError, match="conditional on 10 classes"):
        G(z)
    with pytest.raises(ValueError, match="unconditional"):
        Generator(_cfg(cond=0))(z, torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize("arch", ["vit", "cnn"])
def test_projection_term_is_the_embedding_dotted_with_the_final_feature(arch):
    """logit(x, c) = head(h) + <E[:, c], h> (Miyato and Koyama 2018): the class changes the logit by
    <E[:, c] - E[:, c'], h>, h the class token after D's last LayerNorm (ViT) or the last hidden feature (CNN)."""
    torch.manual_seed(0)
    cfg = _cfg(d_arch=arch, d_cnn_base=64, d_cnn_max=8)
    D = (Discriminator if arch == "vit" else CNNDiscriminator)(cfg).eval()
    seen = {}
    layer = D.norm if arch == "vit" else D.fc
    layer.register_forward_hook(lambda module, args, out: seen.update(h=out))
    x = torch.randn(4, 1, 32, 32)
    a, b = torch.tensor([0, 1, 2, 3]), torch.tensor([9, 8, 7, 6])
    logit_a = D(x, a)
    h = seen["h"] if arch == "vit" else torch.nn.functional.leaky_relu(seen["h"], 0.2) * math.sqrt(2)
    logit_b = D(x, b)
    E = D.projection.embed.weight  # (dim, classes): column k is class k's embedding, as D applies it
    expected = ((E[:, a] - E[:, b]).T * h).sum(dim=1)
    torch.testing.assert_close(logit_a - logit_b, expected)
    with pytest.raises(ValueError, match="give a label per image"):
        D(x)


def test_hidden_projection_is_psi_of_phi_plus_the_embedding_dotted_with_phi():
    """d_projection hidden: logit = w2 . a + b2 + <E[:, c], a> with a = LeakyReLU(W1 [h; mbstd] + b1), the MLP
    head's hidden layer (Miyato and Koyama's psi(phi(x)) + <embed(c), phi(x)>, psi the head's last linear layer),
    computed here from the head's applied weights and the class token after D's last LayerNorm."""
    torch.manual_seed(0)
    D = Discriminator(_cfg(d_projection="hidden", d_mbstd=False)).eval()
    seen = {}
    D.norm.register_forward_hook(lambda module, args, out: seen.update(h=out))
    x, c = torch.randn(4, 1, 32, 32), torch.tensor([0, 4, 9, 4])
    logits = D(x, c)
    first, last = D.head[0], D.head[-1]
    a = torch.nn.functional.leaky_relu(seen["h"] @ first.weight.T + first.bias, 0.2)
    E = D.projection.embed.weight
    expected = a @ last.weight[0] + last.bias[0] + (E[:, c].T * a).sum(dim=1)
    torch.testing.assert_close(logits, expected)
    with pytest.raises(ConfigError, match="d_projection: 'hidden' needs the ViT D's MLP head"):
        _cfg(d_projection="hidden", d_head="linear")


@pytest.mark.parametrize("arch", ["vit", "cnn"])
def test_centered_projection_is_the_embedding_less_its_class_mean_times_the_gain(arch):
    """d_projection centered, d_projection_gain g: logit = head(h) + g <E[:, c] - mean_k E[:, k], h>. Computed from
    the head alone (the same D with the projection switched off) and the embedding's applied weight."""
    torch.manual_seed(0)
    cfg = _cfg(d_arch=arch, d_cnn_base=64, d_cnn_max=8, d_projection="centered", d_projection_gain=2.5)
    D = (Discriminator if arch == "vit" else CNNDiscriminator)(cfg).eval()
    seen = {}
    layer = D.norm if arch == "vit" else D.fc
    layer.register_forward_hook(lambda module, args, out: seen.update(h=out))
    x, c = torch.randn(4, 1, 32, 32), torch.tensor([0, 4, 9, 4])
    logits = D(x, c)
    h = seen["h"] if arch == "vit" else torch.nn.functional.leaky_relu(seen["h"], 0.2) * math.sqrt(2)
    class Nothing(nn.Module):
        def forward(self, h, c):
            return torch.zeros(())

    projection, D.projection = D.projection, Nothing()
    head = D(x, c)  # the head's part alone
    E = projection.embed.weight
    expected = head + 2.5 * ((E[:, c] - E.mean(dim=1, keepdim=True)).T * h).sum(dim=1)
    torch.testing.assert_close(logits, expected)


def test_vit_projection_embedding_is_isn_normalised():
    """ISN holds the embedding matrix's spectral norm at its value at initialisation, as every other layer of D."""
    torch.manual_seed(0)
    D = Discriminator(_cfg()).train()
    embed = D.projection.embed
    sigma_init = float(embed.parametrizations.weight[1].scale)
    with torch.no_grad():
        embed.parametrizations.weight.original.mul_(5.0)  # the raw weight grows; the applied one must not
        for _ in range(30):  # the power iteration converges
            D(torch.randn(4, 1, 32, 32), torch.arange(4))
    sigma = largest_singular_values(D)["projection.embed"]
    assert sigma == pytest.approx(sigma_init, rel=1e-3)


class LabelledD(nn.Module):
    """D(x, c) = sum(x) + 10 c: records every call's labels."""

    mixes_samples = False

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.0))
        self.calls: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.append(c.clone())
        return self.w * x.sum(dim=(1, 2, 3)) + 10.0 * c.float()


class LabelledG(nn.Module):
    """G(z, c) = z + c, as 1x2x2 images."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(1.0))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return (self.a * z + c.float()[:, None]).view(-1, 1, 2, 2)


def _loss(**overrides) -> ViTGANLoss:
    cfg = presets.get("mnist", **{"augment": "", "bcr_real": 0.0, "bcr_fake": 0.0, "r1_gamma": 0.0, "cond": 10,
                                  **overrides})
    return ViTGANLoss(cfg, LabelledG(), LabelledD(), draws=lambda: Draws(torch.Generator().manual_seed(0)))


def test_every_d_term_gives_each_image_its_own_label():
    """The adversarial term sees the reals with real_c and the fakes with c; bCR's transformed images keep their
    labels; R1 takes the reals' labels, R2 the fakes'."""
    loss = _loss(bcr_real=1.0, bcr_fake=1.0, r1_gamma=1.0, r2_gamma=1.0)
    reals, z = torch.zeros(3, 1, 2, 2), torch.zeros(3, 4)
    real_c, c = torch.tensor([1, 2, 3]), torch.tensor([7, 8, 9])
    total, terms, _ = loss("Dboth", z=z, reals=reals, c=c, real_c=real_c)
    calls = loss.D.calls
    # one forward of the four batches (reals, fakes, T(reals), T(fakes)), then R1 (reals), then R2 (fakes)
    torch.testing.assert_close(calls[0], torch.cat([real_c, c, real_c, c]))
    torch.testing.assert_close(calls[1], real_c)
    torch.testing.assert_close(calls[2], c)
    # ns on D(real) = 10 real_c + 0 and D(fake) = 10 c + 4 c (G adds c to each of the 4 pixels)
    real_logits, fake_logits = 10.0 * real_c.float(), 14.0 * c.float()
    expected = torch.nn.functional.softplus(fake_logits).mean() + torch.nn.functional.softplus(-real_logits).mean()
    torch.testing.assert_close(terms["loss_d"], expected)


def test_g_step_pairs_fakes_and_reals_with_their_labels_under_rpgan():
    loss = _loss(gan_loss="rpgan")
    real_c, c = torch.tensor([1, 2]), torch.tensor([5, 0])
    total, _, _ = loss("Gmain", z=torch.zeros(2, 4), c=c, reals=torch.zeros(2, 1, 2, 2), real_c=real_c)
    torch.testing.assert_close(loss.D.calls[0], torch.cat([real_c, c]))
    fake_logits, real_logits = 14.0 * c.float(), 10.0 * real_c.float()
    torch.testing.assert_close(total, torch.nn.functional.softplus(real_logits - fake_logits).mean())


def test_r1_of_a_conditional_d_is_the_gradient_at_each_images_label():
    """E||grad_x D(x, c)||^2 with c held: on a real D (without minibatch std, whose logits mix the batch), by autograd
    of each image's own logit."""
    torch.manual_seed(0)
    D = Discriminator(_cfg(d_mbstd=False)).eval()
    x, c = torch.randn(3, 1, 32, 32), torch.tensor([4, 0, 9])
    expected = []
    for i in range(3):
        xi = x[i:i + 1].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(D(xi, c[i:i + 1]).sum(), xi)
        expected.append(grad.square().sum())
    torch.testing.assert_close(r1_penalty(D, x, c), torch.stack(expected).mean(), rtol=1e-4, atol=1e-7)
    assert not torch.allclose(r1_penalty(D, x, c), r1_penalty(D, x, torch.tensor([1, 2, 3])))


def _data(labels: list[int], n: int = 16) -> ImageData:
    torch.manual_seed(1)
    images = torch.randint(0, 256, (n, 1, 32, 32), dtype=torch.uint8)
    return ImageData(images, torch.tensor(labels * (n // len(labels))), "toy")


def test_trainer_draws_fake_labels_from_the_datas_and_feeds_reals_their_own():
    data = _data([2, 5, 5, 5])  # a quarter 2, three quarters 5: the fakes' labels must follow
    trainer = Trainer(_cfg(augment="", bcr_real=0.0, bcr_fake=0.0, r1_gamma=0.0), data, torch.device("cpu"), None)
    seen: list[tuple[str, torch.Tensor, torch.Tensor | None]] = []
    call = trainer.loss.__call__

    def spy(phase, **batch):
        seen.append((phase, batch.get("c"), batch.get("real_c")))
        return call(phase, **batch)

    trainer.loss = type("Spy", (), {"__call__": staticmethod(spy), "augment_p": 0.8})()
    for _ in range(40):
        trainer.step()
    fake = torch.cat([c for _, c, _ in seen])
    assert set(fake.tolist()) == {2, 5}
    assert (fake == 2).float().mean() == pytest.approx(0.25, abs=0.08)  # 160 labels: 4 standard errors
    d_real = [r for phase, _, r in seen if phase != "Gmain"]
    assert all(r is not None and set(r.tolist()) <= {2, 5} for r in d_real)


def test_conditional_config_and_data_refusals():
    with pytest.raises(ConfigError, match="cond: .* at least 2"):
        _cfg(cond=1)
    with pytest.raises(ConfigError, match="d_pack"):
        _cfg(d_pack=2)
    unlabelled = ImageData(torch.zeros(8, 1, 32, 32, dtype=torch.uint8), torch.full((8,), -1), "plain")
    with pytest.raises(ConfigError, match="plain has images without a label"):
        Trainer(_cfg(), unlabelled, torch.device("cpu"), None)
    with pytest.raises(ConfigError, match="label 12, beyond the 10 classes"):
        Trainer(_cfg(), _data([0, 12]), torch.device("cpu"), None)


def test_class_agreement_by_hand():
    predicted = np.array([0, 0, 1, 1, 1, 2])
    labels = np.array([0, 1, 1, 1, 2, 2])
    # hits: 0->0 yes, 0->1 no, 1->1 yes, 1->1 yes, 1->2 no, 2->2 yes: 4 of 6; per class 0: 1/1, 1: 2/3, 2: 1/2
    assert class_agreement(predicted, labels) == {"agreement": pytest.approx(4 / 6), "agreement_worst": 0.5,
                                                  "worst_class": 2, "worst_drawn_as": 1}  # label 2's miss was a 1
    assert agreement_by_class(predicted, labels) == {0: 1.0, 1: pytest.approx(2 / 3), 2: 0.5}
    # the worst class's samples taken most often for 7 (twice) over 5 (once); all right: drawn as itself
    assert class_agreement(np.array([7, 5, 7, 3]), np.array([3, 3, 3, 3]))["worst_drawn_as"] == 7
    assert class_agreement(np.array([4, 4]), np.array([4, 4]))["worst_drawn_as"] == 4


def test_label_draws_follow_the_data_and_keep_their_prefix():
    labels = torch.tensor([3] * 90 + [7] * 10)
    draw = label_draws(labels, 5000)
    assert set(draw.tolist()) == {3, 7}
    assert (draw == 7).float().mean() == pytest.approx(0.1, abs=0.02)  # 5 standard errors
    torch.testing.assert_close(label_draws(labels, 100), draw[:100])


def test_class_rows_one_row_per_class_same_latents_down_columns():
    z, c = class_rows([4, 9], 16, 3)
    assert c.tolist() == [0, 0, 1, 1, 2, 2]
    torch.testing.assert_close(z[0], z[2])
    torch.testing.assert_close(z[1], z[5])
    assert not torch.equal(z[0], z[1])


# --- end to end: train --cond, resume, export, generate --class, eval ---
TINY = ["--g-dim", "32", "--g-depth", "1", "--g-heads", "2", "--g-mlp-dim", "64", "--z-dim", "16", "--w-dim", "16",
        "--mapping-layers", "1", "--g-fourier-dim", "8", "--g-inr-hidden", "8", "--d-dim", "32", "--d-depth", "1",
        "--d-heads", "2", "--d-mlp-dim", "64", "--batch", "4", "--r1-gamma", "0.1", "--r1-interval", "2",
        "--precision", "fp32", "--no-compile"]
NAMES = ["zero", "one", "two"]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """12 grayscale 32x32 PNGs of 3 named classes (dataset.json with labels and classes)."""
    root = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(0)
    labels = []
    for i in range(12):
        pixels = np.zeros((32, 32), np.uint8)
        pixels[8:24, 4 + 8 * (i % 3):8 + 8 * (i % 3)] = rng.integers(128, 256)  # the class is where the bar is
        Image.fromarray(pixels).save(root / f"{i:02d}.png")
        labels.append([f"{i:02d}.png", i % 3])
    (root / "dataset.json").write_text(json.dumps({"labels": labels, "classes": NAMES}))
    return root


def _run(tmp_path: Path, data: Path, *extra: str) -> Path:
    outdir = tmp_path / "runs"
    before = set(outdir.iterdir()) if outdir.exists() else set()
    assert main(["train", "--data", str(data), "--outdir", str(outdir), *TINY, *extra]) == 0
    (run,) = set(outdir.iterdir()) - before
    return run


def test_conditional_run_resumes_exactly_and_exports_its_classes(tmp_path, labelled, capsys):
    straight = _run(tmp_path, labelled, "--cond", "--kimg", "0.016", "--tick", "0.008")  # 4 steps
    options = json.loads((straight / "training_options.json").read_text())
    assert options["config"]["cond"] == 3
    sheet = Image.open(sorted(straight.glob("fakes-*.png"))[-1])
    assert sheet.size == (8 * 34 + 2, 3 * 34 + 2)  # one row per class, 8 seeds across
    half = _run(tmp_path, labelled, "--cond", "--kimg", "0.008", "--tick", "0.008")
    outdir = str(tmp_path / "runs")
    capsys.readouterr()
    assert main(["train", "--data", str(labelled), "--outdir", outdir, *TINY, "--kimg", "0.016", "--resume",
                 str(half)]) == 2  # resumed without --cond: refused, nothing written
    assert "cond: the checkpoint is conditional on 3 classes: resume with --cond" in capsys.readouterr().err
    assert len(list((tmp_path / "runs").iterdir())) == 2
    resumed = _run(tmp_path, labelled, "--cond", "--kimg", "0.016", "--tick", "0.008", "--resume", str(half))
    a = load_training_state(next(straight.glob("training-state-*16.pt")))
    b = load_training_state(next(resumed.glob("training-state-*16.pt")))
    for key in ("G", "D", "G_ema"):
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), f"{key}.{name}"

    export = tmp_path / "export"
    assert main(["export", str(straight), "--out", str(export)]) == 0
    assert json.loads((export / "config.json").read_text())["classes"] == NAMES
    G = vitgan.load(export)
    assert G.classes == NAMES and G.cond == 3
    snapshot = vitgan.load(straight)
    z, c = torch.randn(3, 16), torch.tensor([0, 1, 2])
    torch.testing.assert_close(G(z, c), snapshot(z, c), rtol=0, atol=0)


def test_generate_and_eval_a_conditional_generator(tmp_path, labelled, capsys):
    run = _run(tmp_path, labelled, "--cond", "--kimg", "0.008", "--tick", "0.008")
    out = tmp_path / "out"
    assert main(["generate", "--ckpt", str(run), "--seeds", "0-1", "--class", "2", "--outdir", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "seed0000-class2.png", "seed0001-class2.png"]
    grid = tmp_path / "g"
    assert main(["generate", "--ckpt", str(run), "--seeds", "0-1", "--class-grid", "--outdir", str(grid)]) == 0
    assert Image.open(tmp_path / "g" / "grid.png").size == (2 * 34 + 2, 3 * 34 + 2)
    capsys.readouterr()
    for bad, message in ((["--class", "3"], "class: 3 is out of range: this generator has classes 0-2"),
                         ([], "class: this generator is conditional on 3 classes")):
        assert main(["generate", "--ckpt", str(run), "--seeds", "0", "--outdir", str(tmp_path / "bad"), *bad]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert main(["eval", "--ckpt", str(run), "--metrics", "dfid12", "--data", str(labelled)]) == 0
    captured = capsys.readouterr()
    results = json.loads(captured.out.strip().splitlines()[-1])["results"]
    assert 0 <= results["dfid12_agreement_worst"] <= results["dfid12_agreement"] <= 1
    assert "dfid12_real_agreement" in results and "class agreement of the real data" in captured.err
    by_class = results["dfid12_agreement_by_class"]  # each digit the 12 samples were drawn for
    assert set(by_class) <= {"0", "1", "2"} and min(by_class.values()) == results["dfid12_agreement_worst"]
    assert "dfid12 class agreement by class: " in captured.err


def test_cond_refuses_unlabelled_data_and_class_on_an_unconditional_generator(tmp_path, digits, capsys):
    code = main(["train", "--data", str(digits), "--outdir", str(tmp_path / "runs"), *TINY, "--kimg", "0.004",
                 "--cond"])
    assert code == 2
    assert f"cond: {digits} has no labels" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    run = _run(tmp_path, digits, "--kimg", "0.004", "--tick", "0.004")
    assert main(["generate", "--ckpt", str(run), "--seeds", "0", "--class", "1", "--outdir", str(tmp_path / "o")]) == 2
    assert "class: this generator is unconditional" in capsys.readouterr().err


def test_cond_token_adds_the_class_embedding_to_the_class_token_at_the_input():
    """d_cond_token: D's class token enters its blocks as cls + E_in[:, c]. Computed by a D without it whose class
    token is set to cls + E_in[:, c] by hand, one image at a time (no minibatch std, so images do not mix)."""
    torch.manual_seed(0)
    D = Discriminator(_cfg(d_cond_token=True, d_mbstd=False)).eval()
    x, c = torch.randn(3, 1, 32, 32), torch.tensor([0, 4, 9])
    logits = D(x, c)
    E, cls = D.cond_token.weight.detach().clone(), D.cls_token.detach().clone()  # E: column k is class k's
    D.cond_token = None
    for i in range(3):
        with torch.no_grad():
            D.cls_token.copy_(cls + E[:, c[i]])
        torch.testing.assert_close(logits[i:i + 1], D(x[i:i + 1], c[i:i + 1]))
    with pytest.raises(ConfigError, match="d_cond_token: True needs the ViT D"):
        _cfg(d_cond_token=True, d_arch="cnn")
