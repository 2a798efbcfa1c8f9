"""FID, KID, IS, precision/recall and StackedMNIST's modes against their formulas; reference-feature caching; the
digit classifier."""

import math
import re

import numpy as np
import pytest
import scipy.linalg
import torch

from vitgan.config import ConfigError
from vitgan.data import ImageData, load_mnist5k
from vitgan.metrics.digits import DigitFID, load_classifier
from vitgan.metrics.evaluate import InceptionFeatures, Metric, parse_metrics, real_subset, reference_features
from vitgan.metrics.frechet import feature_statistics, frechet_distance
from vitgan.metrics.inception import load_inception
from vitgan.metrics.inception_score import inception_score
from vitgan.metrics.kid import kernel_inception_distance
from vitgan.metrics.modes import ModeCounter, mode_histogram, mode_measures, score_modes, stacked_measures
from vitgan.metrics.precision_recall import precision_recall


def test_frechet_distance_closed_form_for_commuting_covariances():
    # diagonal covariances: Tr(S1 + S2 - 2 sqrt(S1 S2)) = sum (sqrt(a) - sqrt(b))^2
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert abs(frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) - expected) < 1e-9


def test_frechet_distance_with_singular_covariances():
    a, b = np.array([1.0, 0.0, 4.0]), np.array([0.0, 0.0, 1.0])  # dead features: zero variance
    zero = np.zeros(3)
    assert abs(frechet_distance(zero, np.diag(a), zero, np.diag(b)) - 2.0) < 1e-9  # (1-0)^2 + 0 + (2-1)^2


def test_frechet_distance_general_covariances_and_symmetry():
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    s1, s2 = m1 @ m1.T + np.eye(4), m2 @ m2.T + np.eye(4)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    d12, d21 = frechet_distance(mu1, s1, mu2, s2), frechet_distance(mu2, s2, mu1, s1)
    assert abs(d12 - expected) < 1e-8 and abs(d12 - d21) < 1e-8
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-8


def test_feature_statistics_of_a_known_gaussian():
    rng = np.random.default_rng(1)
    cov = np.array([[2.0, 0.5], [0.5, 1.0]])
    mu, sigma = feature_statistics(rng.multivariate_normal([1.0, -1.0], cov, size=200_000))
    assert np.allclose(mu, [1.0, -1.0], atol=0.02) and np.allclose(sigma, cov, atol=0.03)


def test_shipped_digit_classifier_is_accurate_on_held_out_digits():
    data = load_mnist5k()  # the trainer held out the last 500 of this (seed-0) order
    net = load_classifier()
    with torch.no_grad():
        predicted = net(data.batch(torch.arange(4500, 5000))).argmax(1)
    assert (predicted == data.labels[4500:]).float().mean() >= 0.98


def test_digit_measures_score_the_pixels_a_png_would_hold():
    """Float samples are clipped to [-1, 1] and rounded to 256 levels before the classifier sees them, as saved
    images are: a linear output's -1.3 counts as black (-1), and a uint8 batch scores the same."""
    from vitgan.metrics.digits import classify

    net = load_classifier()
    torch.manual_seed(0)
    x = load_mnist5k().batch(torch.arange(8)) * 1.3 + 0.01 * torch.randn(8, 1, 32, 32)  # beyond [-1, 1], off-grid
    levels = ((x.clamp(-1, 1) + 1) * 255 / 2).round()
    with torch.no_grad():
        expected = net.features(levels / 127.5 - 1).double().numpy()
    feats, probs = classify(net, x)
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(classify(net, levels.to(torch.uint8))[0], expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(feats, net.features(x).detach().double().numpy(), atol=1e-3)  # unclipped differs


def test_digit_fid_is_small_for_real_digits_and_large_for_one_class():
    data = load_mnist5k()
    fid = DigitFID(data.batch(torch.arange(2500)))
    same = fid(data.batch(torch.arange(2500, 5000)))
    ones = fid(data.batch(torch.nonzero(data.labels == 1).flatten()))
    assert same["classes"] == 10 and ones["classes"] == 1
    assert same["digit_fid"] * 10 < ones["digit_fid"]


# --- KID, IS, precision/recall against their definitions ---

def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """MMD^2 by its definition with k(a, b) = (a.b / d + 1)^3, as explicit sums over pairs."""
    d, m = x.shape[1], len(x)
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    return xx + yy - 2 * xy


def test_kid_equals_the_unbiased_mmd_on_one_full_subset():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(12, 5)), rng.normal(0.5, 1.0, size=(12, 5))
    kid, std = kernel_inception_distance(real, fake, num_subsets=1, max_subset_size=12)
    assert kid == pytest.approx(_mmd2_unbiased(fake, real), rel=1e-10) and std == 0


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(3000, 16))
    same, _ = kernel_inception_distance(real, rng.normal(size=(3000, 16)), num_subsets=20, max_subset_size=500)
    near, _ = kernel_inception_distance(real, rng.normal(0.3, 1, size=(3000, 16)), num_subsets=20, max_subset_size=500)
    far, _ = kernel_inception_distance(real, rng.normal(1.0, 1, size=(3000, 16)), num_subsets=20, max_subset_size=500)
    assert abs(same) < 0.05 * near and near < far


def test_inception_score_limits():
    assert inception_score(np.zeros((100, 1008)))[0] == pytest.approx(1.0)  # uniform p(y|x): no information
    confident = np.full((1000, 10), -50.0)
    confident[np.arange(1000), np.arange(1000) % 10] = 50.0  # one sure class each, balanced in every split
    mean, std = inception_score(confident)
    assert mean == pytest.approx(10.0, rel=1e-6) and std < 1e-6
    one_class = np.zeros((1000, 10))
    one_class[:, 3] = 50.0
    assert inception_score(one_class)[0] == pytest.approx(1.0, abs=1e-6)  # sure but collapsed


def test_inception_score_against_its_formula():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(40, 6)) * 3
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = []
    for part in (p[:20], p[20:]):
        py = part.mean(0)
        expected.append(np.exp(np.mean([sum(q[c] * np.log(q[c] / py[c]) for c in range(6)) for q in part])))
    mean, std = inception_score(logits, splits=2)
    assert mean == pytest.approx(np.mean(expected)) and std == pytest.approx(np.std(expected))


def test_inception_score_splits_as_the_original_code():
    # improved-gan's inception_score.py: part i = preds[i * N // splits:(i + 1) * N // splits]; for N = 13 and
    # 10 splits the parts start at 0 1 2 3 5 6 7 9 10 11 (numpy's array_split: 0 2 4 6 7 8 9 10 11 12)
    bounds = [0, 1, 2, 3, 5, 6, 7, 9, 10, 11, 13]
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(13, 5)) * 4
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    scores = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        part = p[lo:hi]
        kl = (part * (np.log(part) - np.log(part.mean(0, keepdims=True)))).sum(1).mean()
        scores.append(np.exp(kl))
    mean, std = inception_score(logits)
    assert mean == pytest.approx(np.mean(scores), rel=1e-12) and std == pytest.approx(np.std(scores), rel=1e-12)


def _pr_bruteforce(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    def radii(x):
        d = np.linalg.norm(x[:, None] - x[None], axis=2)
        return np.sort(d, axis=1)[:, k]  # index 0 is the point itself

    def covered(q, s, r):
        return np.mean([any(np.linalg.norm(a - s[j]) <= r[j] for j in range(len(s))) for a in q])

    return covered(fake, real, radii(real)), covered(real, fake, radii(fake))


def test_precision_recall_against_brute_force_and_limits():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(60, 4))
    fake = np.concatenate([rng.normal(size=(30, 4)), rng.normal(6, 1, size=(30, 4))])  # half far away
    got = precision_recall(real, fake, k=3, block=7)
    assert got == pytest.approx(_pr_bruteforce(real, fake, 3), abs=1e-9)
    assert got[0] <= 0.55  # the far half is never precise
    assert precision_recall(real, real, k=3) == (1.0, 1.0)
    assert precision_recall(real, real + 100, k=3) == (0.0, 0.0)


def test_metric_names_follow_stylegan2_ada():
    m = {x.name: x for x in parse_metrics("fid50k_full,kid50k_full,pr50k3_full,is50k,fid50k,kid10k,pr20,dfid5k,"
                                          "fid2000,pr5k10,modes26k,modes1000")}
    assert m["fid50k_full"] == Metric("fid50k_full", "fid", 50000, full=True)
    assert m["pr50k3_full"] == Metric("pr50k3_full", "pr", 50000, full=True, nhood=3)
    assert m["pr5k10"].nhood == 10 and m["pr20"] == Metric("pr20", "pr", 20)
    assert (m["is50k"].num_gen, m["fid2000"].num_gen, m["dfid5k"].num_gen) == (50000, 2000, 5000)
    # reals, on CelebA (202,599 images) and CIFAR-10 (50,000), as StyleGAN2-ADA's metric_main.py
    assert [m[k].num_real(202_599) for k in ("fid50k_full", "kid50k_full", "pr50k3_full", "is50k", "fid50k")] == [
        202_599, 202_599, 200_000, 0, 50_000]
    assert m["kid50k_full"].num_real(3_000_000) == 1_000_000
    assert m["fid50k"].num_real(12) == 12 and m["kid10k"].num_real(50_000) == 10_000
    assert m["is50k"].result_names() == ["is50k_mean", "is50k_std"]
    assert m["pr50k3_full"].result_names() == ["pr50k3_full_precision", "pr50k3_full_recall"]
    assert m["fid50k_full"].result_names() == ["fid50k_full"]
    assert m["modes26k"] == Metric("modes26k", "modes", 26000) and m["modes1000"].num_gen == 1000
    assert m["modes26k"].num_real(60_000) == 0  # like is: no real images
    assert m["modes26k"].result_names() == ["modes26k", "modes26k_kl", "modes26k_confidence"]
    with pytest.raises(ConfigError, match="^metrics: modes26k_full: modes uses no real images, .*use modes26k"):
        parse_metrics("modes26k_full")
    for bad in ("fid", "fid0k", "ssim10k", "", "fid1k,fid1k", "is9", "pr3", "is50k_full", "fid50k3", "fid50k_ful",
                "pr2k3_full_x", "modes26k_full", "modes5k3", "modes0"):
        with pytest.raises(ConfigError, match="^metrics: "):
            parse_metrics(bad)


def test_real_subsets_are_fixed_random_and_nested():
    small, large = real_subset(1000, 10), real_subset(1000, 100)
    assert np.array_equal(small, large[:10]) and len(set(large)) == 100
    assert not np.array_equal(np.sort(large), np.arange(100))  # not the first 100
    assert np.array_equal(np.sort(real_subset(50, 80)), np.arange(50))  # all of a smaller dataset


# --- Inception metrics end to end, with random Inception weights made by the test ---

def _textures(count: int, seed: int, shift: float = 0.0) -> ImageData:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 1, size=(count, 3, 1, 1)) * np.linspace(0, 1, 16)[None, None, None, :]
    noise = rng.normal(0, 0.15, size=(count, 3, 16, 16))
    pixels = np.clip((base + noise + shift) * 255, 0, 255).astype(np.uint8)
    return ImageData(torch.from_numpy(pixels), torch.full((count,), -1), f"textures{seed}")


def _features(extract, data):
    return extract(data.images)[0]


def test_fid_on_inception_features_is_zero_for_the_same_set_symmetric_and_grows_with_a_shift(inception_weights):
    extract = InceptionFeatures(load_inception(inception_weights), weights_sha256="test", batch=32)
    a = feature_statistics(_features(extract, _textures(24, 0)))
    fids = [frechet_distance(*a, *feature_statistics(_features(extract, _textures(24, 0, shift))))
            for shift in (0.1, 0.3)]
    assert abs(frechet_distance(*a, *a)) < 1e-4 * fids[0]  # 0 up to round-off (the covariances have rank 23)
    assert fids[0] < fids[1]
    b = feature_statistics(_features(extract, _textures(24, 1)))
    assert frechet_distance(*a, *b) == pytest.approx(frechet_distance(*b, *a), rel=1e-5)


def test_reference_features_are_cached_and_invalidated_when_the_data_changes(inception_weights, tmp_path):
    extract = InceptionFeatures(load_inception(inception_weights), weights_sha256="test", batch=32)
    calls = []
    counting = lambda images: calls.append(len(images)) or extract(images)  # noqa: E731
    counting.protocol = extract.protocol
    data, lines = _textures(10, 0), []
    first = reference_features(counting, data, cache=tmp_path, log=lines.append)
    second = reference_features(counting, data, cache=tmp_path, log=lines.append)
    assert calls == [10] and np.array_equal(first, second) and "cached" in lines[-1]
    data.images[3, 0, 0, 0] ^= 1  # one pixel changes: the cache no longer applies
    third = reference_features(counting, data, cache=tmp_path, log=lines.append)
    assert calls == [10, 10] and not np.array_equal(first, third)
    assert len(list((tmp_path / "reference").glob("*.npy"))) == 2
    protocol = dict(extract.protocol, weights_sha256="other")  # other weights: recomputed too
    counting.protocol = protocol
    reference_features(counting, data, cache=tmp_path, log=lines.append)
    assert calls == [10, 10, 10]
    next((tmp_path / "reference").glob("*.npy")).write_bytes(b"damaged")  # a damaged entry is recomputed
    for _ in range(2):
        reference_features(counting, data, cache=tmp_path, log=lines.append)
        counting.protocol = extract.protocol
    assert len(calls) >= 4


# --- StackedMNIST's modes ---

def _one_hot(triples: list[tuple[int, int, int]], top: float = 1.0) -> np.ndarray:
    """Class probabilities (N, 3, 10) whose argmax per channel is the given digit, with probability `top` there and
    the rest spread evenly over the other nine digits."""
    probs = np.full((len(triples), 3, 10), (1 - top) / 9)
    for i, triple in enumerate(triples):
        for channel, digit in enumerate(triple):
            probs[i, channel, digit] = top
    return probs


def test_modes_and_kl_of_a_histogram_made_by_hand():
    # 4 samples: mode 123 twice, 456 once, 7 (R 0, G 0, B 7) once; the argmax counts, however unsure (top 0.3)
    probs = _one_hot([(1, 2, 3), (4, 5, 6), (1, 2, 3), (0, 0, 7)], top=0.3)
    counts = mode_histogram(probs)
    assert counts.shape == (1000,) and (counts[123], counts[456], counts[7], counts.sum()) == (2, 1, 1, 4)
    kl = 0.5 * math.log(0.5 / 0.001) + 2 * 0.25 * math.log(0.25 / 0.001)  # sum of p ln(p / (1/1000)), p > 0
    measures = mode_measures(probs)
    assert measures["modes"] == 3 and measures["kl"] == pytest.approx(kl, rel=1e-12)
    assert measures["confidence"] == pytest.approx(0.3)
    one = score_modes(np.bincount([42] * 5, minlength=1000))  # every sample in one mode: KL = ln 1000
    assert one == {"modes": 1, "kl": pytest.approx(math.log(1000), rel=1e-12)}


def test_a_perfectly_uniform_sample_has_every_mode_and_kl_zero():
    triples = [(i // 100, i // 10 % 10, i % 10) for i in range(1000)]  # each of the 1,000 modes once
    counts = mode_histogram(_one_hot(triples))
    assert counts.tolist() == [1] * 1000
    assert score_modes(counts) == {"modes": 1000, "kl": pytest.approx(0, abs=1e-12)}
    assert score_modes(counts * 7) == {"modes": 1000, "kl": pytest.approx(0, abs=1e-12)}


def test_the_kl_of_a_perfect_sampler_is_about_999_over_2n():
    """A multinomial sample of N from the uniform 1,000 modes: E[KL] = (1000 - 1) / (2N) to first order (chi-square
    over 2N); 0.019 at N = 26,000."""
    rng = np.random.default_rng(0)
    n = 26_000
    kls = [score_modes(rng.multinomial(n, np.full(1000, 1e-3)))["kl"] for _ in range(100)]
    assert np.mean(kls) == pytest.approx(999 / (2 * n), rel=0.03)


@pytest.fixture(scope="module")
def right_digits():
    """The bundled digits the shipped classifier gets right (about 99% of them), with their labels."""
    data = load_mnist5k()
    with torch.no_grad():
        right = load_classifier()(data.batch(torch.arange(5000))).argmax(1) == data.labels
    return data.images[right], data.labels[right]


def test_stacks_of_real_digits_have_the_modes_their_labels_say(right_digits):
    digits, labels = right_digits
    rng = np.random.default_rng(1)
    picks = torch.from_numpy(rng.integers(0, len(digits), size=(600, 3)))
    stacks = digits[picks][:, :, 0]  # (600, 3, 32, 32): R, G, B three digits
    expected = (labels[picks] * torch.tensor([100, 10, 1])).sum(1).numpy()
    counter = ModeCounter()
    probs = counter.probabilities(stacks)
    assert np.array_equal(mode_histogram(probs), np.bincount(expected, minlength=1000))
    measures = counter(stacks)
    assert measures["modes"] == len(set(expected.tolist())) and measures["confidence"] > 0.5
    # the same digits as floats in [-1, 1], and cropped to 28x28 (padded back by 2 as the data is): the same modes
    np.testing.assert_allclose(counter.probabilities(stacks.float() / 127.5 - 1), probs, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(counter.probabilities(stacks[..., 2:30, 2:30]), probs, rtol=1e-6, atol=1e-9)


def test_the_modes_of_random_stacks_agree_with_their_labels():
    """StackedMNIST's own images (every digit, the misclassified ones too): the classifier names >= 97% of the
    stacks' modes right."""
    from vitgan.data import load_stacked_mnist

    data = load_stacked_mnist()
    probs = ModeCounter().probabilities(data.images[:1000])
    modes = probs.argmax(axis=2) @ np.array([100, 10, 1])
    assert (modes == data.labels[:1000].numpy()).mean() >= 0.97


def test_modes_refuse_images_that_are_not_rgb_digits():
    counter = ModeCounter()
    for shape, said in (((2, 1, 32, 32), "1x32x32"), ((2, 3, 64, 64), "3x64x64"), ((2, 4, 28, 28), "4x28x28")):
        message = f"metrics: modes needs 3-channel 32x32 (or 28x28) images, got {said}"
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
            counter(torch.zeros(shape, dtype=torch.uint8))


def test_stacked_measures_score_modes_and_every_channel_as_a_digit(right_digits):
    digits, labels = right_digits
    stacks = digits[torch.arange(300 * 3).reshape(300, 3)][:, :, 0]
    fid = DigitFID.of(load_mnist5k())
    measures = stacked_measures(fid, stacks)
    channels = fid(stacks.reshape(-1, 1, 32, 32))  # the 900 channels as digits
    assert {k: measures[k] for k in channels} == pytest.approx(channels)
    assert {k: measures[k] for k in ("modes", "kl", "confidence")} == pytest.approx(ModeCounter(fid.net)(stacks))
    assert measures["classes"] == 10
