"""Our AutoencoderKL against diffusers' with the same random weights and inputs (fp32)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from peers import nchw, nhwc, perturb_vectors, rel_err, require, state_dict_numpy

from emo_jax.convert import from_diffusers_vae
from emo_jax.models import AutoencoderKLConfig

CASES = {
    "1layer_2blocks": (
        AutoencoderKLConfig(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8),
        (2, 24, 40),
    ),
    "2layers_3blocks": (
        AutoencoderKLConfig(block_out_channels=(32, 64, 64), layers_per_block=2, norm_num_groups=16),
        (1, 32, 48),
    ),
    "no_mid_attention_odd": (
        AutoencoderKLConfig(
            block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, mid_block_add_attention=False
        ),
        (2, 26, 18),
    ),
}


@pytest.mark.parity
@pytest.mark.parametrize("case", sorted(CASES))
def test_vae_matches_diffusers(case):
    torch = require("torch")
    diffusers = require("diffusers")
    config, (batch, height, width) = CASES[case]
    torch.manual_seed(0)
    peer = diffusers.AutoencoderKL(**config.to_diffusers()).eval()
    perturb_vectors(peer)
    ours = from_diffusers_vae(state_dict_numpy(peer), dict(peer.config))

    rng = np.random.default_rng(2)
    image = rng.uniform(-1, 1, (batch, height, width, 3)).astype(np.float32)
    latent = rng.standard_normal((batch, height // 2, width // 2, config.latent_channels), dtype=np.float32)
    with torch.no_grad():
        dist = peer.encode(torch.from_numpy(nchw(image))).latent_dist
        decoded = peer.decode(torch.from_numpy(nchw(latent))).sample
    posterior = ours.encode(jnp.asarray(image))

    errors = {
        "encode mean": rel_err(posterior.mean, nhwc(dist.mean.numpy())),
        "encode logvar": rel_err(posterior.logvar, nhwc(dist.logvar.numpy())),
        "decode": rel_err(ours.decode(jnp.asarray(latent)), nhwc(decoded.numpy())),
    }
    print(f"vae {case}: " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))
    assert all(err < 1e-5 for err in errors.values()), errors


def test_posterior_sample_has_posterior_statistics():
    from emo_jax.models import DiagonalGaussian

    mean = jnp.full((4, 32, 32, 4), 0.5)
    logvar = jnp.full((4, 32, 32, 4), np.log(0.25))  # std 0.5
    samples = DiagonalGaussian(mean, logvar).sample(jax.random.key(0))
    assert abs(float(samples.mean()) - 0.5) < 0.02
    assert abs(float(samples.std()) - 0.5) < 0.02


@pytest.mark.parity
def test_deprecated_attention_key_names_convert():
    torch = require("torch")
    diffusers = require("diffusers")
    from emo_jax.convert.diffusers import _VAE_ATTENTION_NAMES

    config, _ = CASES["1layer_2blocks"]
    torch.manual_seed(0)
    peer = diffusers.AutoencoderKL(**config.to_diffusers()).eval()
    state_dict = state_dict_numpy(peer)
    old_names = {new: old for old, new in _VAE_ATTENTION_NAMES.items()}
    legacy = {}
    for key, value in state_dict.items():
        for new, old in old_names.items():
            key = key.replace(f".attentions.0.{new}.", f".attentions.0.{old}.")
        legacy[key] = value
    assert "encoder.mid_block.attentions.0.proj_attn.weight" in legacy
    image = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32))
    np.testing.assert_array_equal(
        from_diffusers_vae(legacy, dict(peer.config)).encode(image).mean,
        from_diffusers_vae(state_dict, dict(peer.config)).encode(image).mean,
    )
