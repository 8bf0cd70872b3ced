"""Face locator and speed encoder: shapes, zero start, and the paper's bucket formula."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from emo_jax.models.conditioning import FaceLocator, SpeedEncoder, speed_buckets, speed_window


def test_face_locator_reaches_latent_resolution_and_starts_at_zero():
    locator = FaceLocator(32, rngs=nnx.Rngs(0))
    mask = jnp.zeros((3, 64, 48, 1)).at[:, 16:40, 12:36].set(1.0)
    out = locator(mask)
    assert out.shape == (3, 8, 6, 32)
    assert not np.asarray(out).any()  # zero-initialised conv_out: a new locator adds nothing
    # Once trained (conv_out non-zero) its output depends on where the face is.
    nnx.update(locator, nnx.from_flat_state([(("conv_out", "kernel"), nnx.Param(jnp.ones((3, 3, 128, 32)) * 0.01))]))
    moved = jnp.zeros_like(mask).at[:, 30:54, 20:44].set(1.0)
    assert not np.allclose(locator(mask), locator(moved))


def test_speed_window_is_the_papers_tanh_buckets():
    centres, radii = [0.0, 1.0, 2.0], [0.5, 0.5, 1.0]
    speed = jnp.array([[0.2, 1.5, 3.0, 0.9]])
    features = speed_window(speed, centres, radii, m=1)
    assert features.shape == (1, 4, 3 * 3)
    buckets = np.tanh(3 * (np.asarray(speed)[0][:, None] - np.array(centres)) / np.array(radii))  # [F, d]
    expected = np.concatenate([buckets[[0, 0, 1, 2]], buckets[[0, 1, 2, 3]], buckets[[1, 2, 3, 3]]], axis=1)
    np.testing.assert_allclose(features[0], expected, atol=1e-6)


def test_speed_buckets_follow_the_speed_histogram():
    speeds = np.random.default_rng(0).gamma(2.0, 0.4, size=5000)  # skewed towards slow motion
    centres, radii = speed_buckets(speeds, 9)
    assert len(centres) == len(radii) == 9 and np.all(np.diff(centres) > 0)
    # Equal-mass buckets: about 1/9 of the speeds fall nearest each centre.
    nearest = np.abs(speeds[:, None] - np.array(centres)).argmin(1)
    assert np.bincount(nearest, minlength=9).min() > 5000 / 9 * 0.5
    with pytest.raises(ValueError, match="at least 9"):
        speed_buckets([0.1, 0.2], 9)
    # Mostly still heads: the low quantiles crowd together, radii keep a floor against label noise.
    still = np.r_[np.full(4000, 0.02) + 0.001 * np.random.default_rng(1).standard_normal(4000), speeds[:1000]]
    _, radii = speed_buckets(still, 9)
    assert min(radii) == 0.05
    assert min(speed_buckets(still, 9, min_radius=0.2)[1]) == 0.2


def test_speed_encoder_tokens_follow_speed():
    centres, radii = speed_buckets(np.linspace(0, 2, 100), 9)
    encoder = SpeedEncoder(centres, radii, hidden_dim=16, dim=8, rngs=nnx.Rngs(0))
    slow, fast = jnp.full((2, 6), 0.2), jnp.full((2, 6), 1.3)
    assert encoder(slow).shape == (2, 6, 1, 8)  # one token per frame by default
    assert SpeedEncoder(centres, radii, dim=8, tokens=3, rngs=nnx.Rngs(0))(slow).shape == (2, 6, 3, 8)
    assert not np.allclose(encoder(slow), encoder(fast))
    grads = jax.grad(lambda s: encoder(s).sum())(slow)
    assert np.abs(np.asarray(grads)).sum() > 0  # differentiable in the speed
