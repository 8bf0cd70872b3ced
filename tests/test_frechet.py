"""The Frechet distance of FID / FVD against closed forms and an independent computation."""

import numpy as np
import pytest

from emo_jax.eval.frechet import Gaussian, frechet_distance


def random_covariance(rng, d: int) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_diagonal_and_scaled_covariances_give_the_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.standard_normal(8), rng.standard_normal(8)
    v1, v2 = rng.uniform(0.1, 2, 8), rng.uniform(0.1, 2, 8)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    got = frechet_distance(Gaussian(mu1, np.diag(v1), 0), Gaussian(mu2, np.diag(v2), 0))
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    s, c = random_covariance(rng, 12), 2.5  # S2 = c S1 commutes with S1: tr(S1 S2)^(1/2) = sqrt(c) tr S1
    got = frechet_distance(Gaussian(np.zeros(12), s, 0), Gaussian(np.ones(12), c * s, 0))
    np.testing.assert_allclose(got, 12 + np.trace(s) * (1 + c - 2 * np.sqrt(c)), rtol=1e-9)


def test_general_covariances_match_the_symmetric_root_formula():
    """tr((S1 S2)^(1/2)) = sum of sqrt(eigenvalues of S1^(1/2) S2 S1^(1/2)), a symmetric problem."""
    rng = np.random.default_rng(1)
    s1, s2 = random_covariance(rng, 20), random_covariance(rng, 20)
    mu1, mu2 = rng.standard_normal(20), rng.standard_normal(20)
    values, vectors = np.linalg.eigh(s1)
    root1 = vectors @ np.diag(np.sqrt(values)) @ vectors.T
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0, None)).sum()
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * trace_root
    np.testing.assert_allclose(frechet_distance(Gaussian(mu1, s1, 0), Gaussian(mu2, s2, 0)), expected, rtol=1e-8)


def test_a_set_against_itself_is_zero_and_noise_raises_the_distance_monotonically():
    rng = np.random.default_rng(2)
    features = rng.standard_normal((400, 16)) @ rng.standard_normal((16, 16))
    reference = Gaussian.of(features)
    assert abs(frechet_distance(reference, reference)) < 1e-8 * np.trace(reference.covariance)
    noise = rng.standard_normal(features.shape)
    distances = [frechet_distance(reference, Gaussian.of(features + s * noise)) for s in (0.1, 0.3, 1.0, 3.0)]
    assert all(a < b for a, b in zip(distances, distances[1:])), distances
    assert reference.count == 400 and reference.covariance.shape == (16, 16)


def test_rank_deficient_covariances_still_give_a_finite_distance():
    """Fewer samples than features (as FID of a few frames has): the root is found with a ridge, as the
    reference tools do."""
    rng = np.random.default_rng(3)
    a, b = Gaussian.of(rng.standard_normal((5, 32))), Gaussian.of(rng.standard_normal((5, 32)) + 0.5)
    assert np.isfinite(frechet_distance(a, b)) and frechet_distance(a, b) > 0


def test_bad_features_are_refused_with_their_shape():
    with pytest.raises(ValueError, match=r"features must be \[N >= 2, D\], got shape \(1, 4\)"):
        Gaussian.of(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="feature sizes differ: 3 and 4"):
        frechet_distance(Gaussian.of(np.ones((3, 3)) * np.arange(3)[:, None]), Gaussian.of(np.eye(4)))


def test_a_root_that_is_not_finite_is_taken_again_with_a_ridge(monkeypatch):
    from scipy import linalg

    from emo_jax.eval import frechet

    calls = []

    def sqrtm(matrix):
        calls.append(matrix)
        return np.full_like(matrix, np.nan) if len(calls) == 1 else linalg.funm(matrix, np.sqrt)

    monkeypatch.setattr(linalg, "sqrtm", sqrtm)
    a, b = Gaussian(np.zeros(3), np.diag([1.0, 2.0, 3.0]), 0), Gaussian(np.zeros(3), np.eye(3), 0)
    distance = frechet.frechet_distance(a, b)
    ridge = frechet.RIDGE * np.eye(3)
    np.testing.assert_allclose(calls[1], (a.covariance + ridge) @ (b.covariance + ridge))
    np.testing.assert_allclose(distance, np.sum((np.sqrt([1.0, 2.0, 3.0]) - 1) ** 2), atol=1e-5)
