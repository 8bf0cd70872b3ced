"""Small math pieces against closed forms and PyTorch."""

import jax.numpy as jnp
import numpy as np
import pytest
from peers import require

from emo_jax.models.conditioning import timestep_embedding
from emo_jax.models.layers import upsample_nearest


@pytest.mark.parametrize("flip, shift, dim", [(True, 0, 320), (False, 1, 64), (True, 1, 33)])
def test_timestep_embedding_closed_form(flip, shift, dim):
    t = np.array([0, 1, 999, 37.5])
    half = dim // 2
    freqs = np.exp(-np.log(10000.0) * np.arange(half) / (half - shift))
    sin, cos = np.sin(t[:, None] * freqs), np.cos(t[:, None] * freqs)
    expected = np.concatenate([cos, sin] if flip else [sin, cos], axis=1)
    expected = np.pad(expected, ((0, 0), (0, dim % 2)))
    got = timestep_embedding(jnp.asarray(t), dim, flip_sin_to_cos=flip, freq_shift=shift)
    np.testing.assert_allclose(got, expected, atol=2e-4)  # fp32 arguments up to 999 rad


@pytest.mark.parity
def test_timestep_embedding_matches_diffusers():
    torch = require("torch")
    from diffusers.models.embeddings import get_timestep_embedding

    t = np.array([0, 3, 500, 999])
    expected = get_timestep_embedding(torch.from_numpy(t), 320, flip_sin_to_cos=True, downscale_freq_shift=0).numpy()
    # Arguments reach 999 rad, whose fp32 ulp is 6e-5: libm's and XLA's sin/cos differ at that level.
    np.testing.assert_allclose(timestep_embedding(jnp.asarray(t), 320), expected, atol=1e-4)


@pytest.mark.parity
@pytest.mark.parametrize("size, out", [((3, 5), (6, 10)), ((3, 5), (5, 9)), ((6, 11), (11, 21))])
def test_upsample_nearest_matches_torch(size, out):
    torch = require("torch")
    x = np.random.default_rng(0).standard_normal((2, *size, 3), dtype=np.float32)
    expected = torch.nn.functional.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)), size=out, mode="nearest")
    np.testing.assert_array_equal(upsample_nearest(jnp.asarray(x), out), expected.numpy().transpose(0, 2, 3, 1))
