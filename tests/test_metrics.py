"""The Frechet distance against its closed form, and the shipped digit classifier."""

import numpy as np
import scipy.linalg
import torch

from vitgan.data import load_mnist5k
from vitgan.metrics.digits import DigitFID, load_classifier
from vitgan.metrics.frechet import feature_statistics, frechet_distance


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


def test_digit_fid_is_small_for_real_digits_and_large_for_one_class():
    data = load_mnist5k()
    fid = DigitFID(data.batch(torch.arange(2500)))
    same = fid(data.batch(torch.arange(2500, 5000)))
    ones = fid(data.batch(torch.nonzero(data.labels == 1).flatten()))
    assert same["classes"] == 10 and ones["classes"] == 1
    assert same["digit_fid"] * 10 < ones["digit_fid"]
