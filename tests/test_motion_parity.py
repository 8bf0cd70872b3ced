"""Video UNet with AnimateDiff motion modules against diffusers' UNetMotionModel (fp32), and its properties."""

import dataclasses
import re

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from peers import perturb_vectors, rel_err, require, state_dict_numpy
from tiny import TINY_UNET

from emo_jax.convert import from_diffusers_unet
from emo_jax.convert.animatediff import from_animatediff_motion_adapter, motion_config_from_adapter
from emo_jax.models import Compute, MotionConfig, UNet

IMAGE = TINY_UNET  # a tiny SD-layout UNet: 2 stages, cross-attention 16
FRAMES, HEIGHT, WIDTH = 6, 12, 20


@pytest.fixture(scope="module")
def peers():
    """A tiny SD-style UNet, a motion adapter (output projections randomised: they start at zero), and the
    UNetMotionModel that diffusers builds from the two."""
    torch = require("torch")
    diffusers = require("diffusers")
    torch.manual_seed(0)
    unet2d = diffusers.UNet2DConditionModel(**IMAGE.to_diffusers()).eval()
    perturb_vectors(unet2d)
    adapter = diffusers.MotionAdapter(
        block_out_channels=IMAGE.block_out_channels,
        motion_layers_per_block=1,
        motion_num_attention_heads=2,
        motion_norm_num_groups=8,
        motion_max_seq_length=16,
        use_motion_mid_block=True,
    ).eval()
    perturb_vectors(adapter, seed=1)
    with torch.no_grad():
        for name, param in adapter.named_parameters():
            if "proj_out" in name and param.ndim == 2:
                param.normal_(0, 0.2)
    video = diffusers.UNetMotionModel.from_unet2d(unet2d, adapter).eval()
    return unet2d, adapter, video


def _inputs(batch=2, seed=0):
    rng = np.random.default_rng(seed)
    sample = rng.standard_normal((batch, FRAMES, HEIGHT, WIDTH, 4), dtype=np.float32)
    timesteps = np.array([17, 640])[:batch]
    context = rng.standard_normal((batch, 5, 16), dtype=np.float32)
    return sample, timesteps, context


def _run_peer(video, sample, timesteps, context):
    import torch

    with torch.no_grad():
        out = video(
            torch.from_numpy(np.ascontiguousarray(sample.transpose(0, 4, 1, 2, 3))),  # [B, C, F, H, W]
            torch.from_numpy(timesteps),
            torch.from_numpy(np.repeat(context, FRAMES, axis=0)),  # diffusers' pipeline repeats it per frame
        ).sample
    return out.numpy().transpose(0, 2, 3, 4, 1)


def _run(unet, sample, timesteps, context):
    return np.asarray(unet(jnp.asarray(sample), jnp.asarray(timesteps), jnp.asarray(context)))


@pytest.mark.parity
@pytest.mark.parametrize("reference_attention", [None, "cross"])
def test_unet_motion_model_matches_diffusers(peers, reference_attention):
    """Also EMO's backbone in 'cross' reference mode: with no per-block reference features, its attn2 takes
    the same context tokens as diffusers' text cross-attention (audio, face, motion-frame, speed paths off)."""
    _, _, video = peers
    config = {**dict(video.config), "reference_attention": reference_attention}
    ours = from_diffusers_unet(state_dict_numpy(video), config)
    assert ours.config.motion == MotionConfig(motion_num_attention_heads=2, motion_max_seq_length=16)
    assert ours.config.reference_attention == reference_attention
    inputs = _inputs()
    err = rel_err(_run(ours, *inputs), _run_peer(video, *inputs))
    print(f"UNetMotionModel, {FRAMES} frames, reference attention {reference_attention}: rel err {err:.2e}")
    assert err < 1e-5


def _original_layout(state_dict):
    """diffusers MotionAdapter keys -> the original AnimateDiff mm_sd_v15 checkpoint's names."""
    renamed = {}
    for key, value in state_dict.items():
        key = re.sub(r"\.motion_modules\.(\d+)\.", r".motion_modules.\1.temporal_transformer.", key)
        for new, old in (
            (".attn1.", ".attention_blocks.0."),
            (".attn2.", ".attention_blocks.1."),
            (".norm1.", ".norms.0."),
            (".norm2.", ".norms.1."),
            (".norm3.", ".ff_norm."),
        ):
            key = key.replace(new, old)
        renamed[key.replace(".pos_embed.pe", ".pos_encoder.pe")] = value
    return renamed


@pytest.mark.parity
@pytest.mark.parametrize("layout", ["diffusers", "original"])
def test_sd_unet_plus_motion_adapter_matches_diffusers(peers, layout):
    unet2d, adapter, video = peers
    motion = motion_config_from_adapter(dict(adapter.config))
    ours = from_diffusers_unet(state_dict_numpy(unet2d), dict(unet2d.config), motion=motion)
    adapter_sd = state_dict_numpy(adapter)
    if layout == "original":
        adapter_sd = _original_layout(adapter_sd)
        assert (
            "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q.weight"
            in adapter_sd
        )
        assert "up_blocks.1.motion_modules.1.temporal_transformer.transformer_blocks.0.ff_norm.weight" in adapter_sd
    ours = from_animatediff_motion_adapter(adapter_sd, ours, source=f"{layout} adapter")
    inputs = _inputs(seed=1)
    err = rel_err(_run(ours, *inputs), _run_peer(video, *inputs))
    print(f"SD + motion adapter ({layout} layout): rel err {err:.2e}")
    assert err < 1e-5


def test_new_motion_modules_leave_the_image_unet_unchanged():
    image_unet = UNet(IMAGE, rngs=nnx.Rngs(0))
    video_config = dataclasses.replace(IMAGE, motion=MotionConfig(motion_num_attention_heads=2))
    video_unet = UNet(video_config, rngs=nnx.Rngs(0))
    # Same spatial weights (same init order would not guarantee it: copy them).
    nnx.update(video_unet, nnx.state(image_unet, nnx.Param))
    sample, timesteps, context = _inputs()
    video_out = _run(video_unet, sample, timesteps, context)
    for f in range(FRAMES):
        np.testing.assert_allclose(video_out[:, f], _run(image_unet, sample[:, f], timesteps, context), atol=1e-5)


def test_frames_are_independent_without_motion_and_coupled_with_it():
    sample, timesteps, context = _inputs()
    permutation = np.array([3, 0, 5, 1, 4, 2])
    image_unet = UNet(IMAGE, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(
        _run(image_unet, sample[:, permutation], timesteps, context),
        _run(image_unet, sample, timesteps, context)[:, permutation],
        atol=1e-5,
    )
    video_unet = UNet(dataclasses.replace(IMAGE, motion=MotionConfig(motion_num_attention_heads=2)), rngs=nnx.Rngs(0))
    state = nnx.state(video_unet, nnx.Param)  # give the zero-initialised motion outputs weights
    flat = [
        (p, v.replace(v[...] + 0.1) if "proj_out" in p and "motion_modules" in p else v)
        for p, v in nnx.to_flat_state(state)
    ]
    nnx.update(video_unet, nnx.from_flat_state(flat))
    permuted = _run(video_unet, sample[:, permutation], timesteps, context)
    assert not np.allclose(permuted, _run(video_unet, sample, timesteps, context)[:, permutation], atol=1e-3)


def test_per_frame_temporal_norm_is_groupnorm_of_each_frame_alone():
    """`norm_per_frame` (original AnimateDiff, Hallo, EMO): each frame normalised by its own statistics."""
    from emo_jax.models.temporal import TemporalTransformer

    module = TemporalTransformer(
        16,
        num_attention_heads=2,
        num_layers=1,
        norm_num_groups=4,
        max_seq_length=8,
        norm_per_frame=True,
        compute=Compute(),
        rngs=nnx.Rngs(0),
    )
    frames = np.random.default_rng(0).standard_normal((2 * 3, 4, 5, 16)).astype(np.float32)
    frames[::3] *= 10  # one frame per video far louder: a joint norm would squash the others

    def direct(x):  # GroupNorm over (H, W, channels of a group) of one frame, eps 1e-6
        g = x.reshape(x.shape[0], 4, 5, 4, 4)
        mean, var = g.mean(axis=(1, 2, 4), keepdims=True), g.var(axis=(1, 2, 4), keepdims=True)
        return ((g - mean) / np.sqrt(var + 1e-6)).reshape(x.shape)

    captured = {}
    original = module.proj_in

    def spy(tokens):
        captured["normed"] = np.asarray(tokens)
        return original(tokens)

    module.proj_in = spy
    module(jnp.asarray(frames), 3)
    normed = captured["normed"].reshape(2, 4, 5, 3, 16).transpose(0, 3, 1, 2, 4).reshape(6, 4, 5, 16)
    np.testing.assert_allclose(normed, direct(frames), atol=1e-4)
