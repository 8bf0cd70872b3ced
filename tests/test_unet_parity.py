"""Our UNet against diffusers' UNet2DConditionModel with the same random weights and inputs (fp32)."""

import jax.numpy as jnp
import numpy as np
import pytest
from peers import nchw, nhwc, perturb_vectors, rel_err, require, state_dict_numpy
from tiny import TINY_UNET

from emo_jax.convert import from_diffusers_unet
from emo_jax.models import UNetConfig

CA_DOWN, DOWN, UP, CA_UP = "CrossAttnDownBlock2D", "DownBlock2D", "UpBlock2D", "CrossAttnUpBlock2D"

CASES = {
    # conv proj_in, one layer per block, non-square latent, batch 2
    "conv_proj_1layer": (
        TINY_UNET,
        (2, 24, 40),
    ),
    # linear proj_in, two layers and two transformer layers per block, per-block heads, odd sizes that do
    # not halve evenly (22 -> 11 -> 6 on the way down), batch 3
    "linear_proj_2layers_odd": (
        UNetConfig(
            block_out_channels=(32, 32, 64),
            down_block_types=(CA_DOWN, CA_DOWN, DOWN),
            up_block_types=(UP, CA_UP, CA_UP),
            layers_per_block=2,
            transformer_layers_per_block=2,
            attention_head_dim=(2, 4, 4),
            cross_attention_dim=24,
            norm_num_groups=8,
            use_linear_projection=True,
        ),
        (3, 22, 30),
    ),
    # the SD1.5 layout (3 cross-attention stages + a plain one), shrunk
    "sd15_layout": (
        UNetConfig(
            block_out_channels=(32, 64, 64, 64), attention_head_dim=4, cross_attention_dim=32, norm_num_groups=16
        ),
        (1, 16, 16),
    ),
}


@pytest.mark.parity
@pytest.mark.parametrize("case", sorted(CASES))
def test_unet_matches_diffusers(case):
    torch = require("torch")
    diffusers = require("diffusers")
    config, (batch, height, width) = CASES[case]
    torch.manual_seed(0)
    peer = diffusers.UNet2DConditionModel(**config.to_diffusers()).eval()
    perturb_vectors(peer)
    ours = from_diffusers_unet(state_dict_numpy(peer), dict(peer.config))

    rng = np.random.default_rng(1)
    sample = rng.standard_normal((batch, height, width, config.in_channels), dtype=np.float32)
    timesteps = rng.integers(0, 1000, size=batch)
    context = rng.standard_normal((batch, 7, config.cross_attention_dim), dtype=np.float32)
    with torch.no_grad():
        expected = peer(torch.from_numpy(nchw(sample)), torch.from_numpy(timesteps), torch.from_numpy(context)).sample
    got = ours(jnp.asarray(sample), jnp.asarray(timesteps), jnp.asarray(context))

    assert got.shape == (batch, height, width, config.out_channels)
    err = rel_err(got, nhwc(expected.numpy()))
    print(f"unet {case}: rel err {err:.2e}")
    assert err < 1e-5


def test_scalar_timestep_broadcasts_over_batch():
    from flax import nnx

    from emo_jax.models import UNet

    config, _ = CASES["conv_proj_1layer"]
    unet = UNet(config, rngs=nnx.Rngs(0))
    sample = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 4), dtype=np.float32))
    context = jnp.ones((2, 3, 16))
    np.testing.assert_array_equal(unet(sample, 250, context), unet(sample, jnp.array([250, 250]), context))
    assert not np.allclose(unet(sample, 250, context), unet(sample, 900, context))
