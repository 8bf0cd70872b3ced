"""The EMO model's properties: what each conditioning path changes, and what starts as the identity."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from tiny import emo_config, stage_config

from emo_jax.config import load_config
from emo_jax.models import param_counts, shapes_only
from emo_jax.models.emo import EMO, EMOConfig
from emo_jax.train.trainable import trainable_filter, trainable_paths

B, F, N_MOTION, LATENT = 2, 3, 4, 8


def inputs(seed=0, frames=F):
    rng = np.random.default_rng(seed)
    face_mask = np.zeros((B, 2 * LATENT, 2 * LATENT, 1), np.float32)  # the tiny VAE's /2
    face_mask[:, 4:12, 5:11] = 1
    return dict(
        noisy=jnp.asarray(rng.standard_normal((B, frames, LATENT, LATENT, 4), dtype=np.float32)),
        timesteps=jnp.array([100, 700]),
        reference_latent=jnp.asarray(rng.standard_normal((B, LATENT, LATENT, 4), dtype=np.float32)),
        face_mask=jnp.asarray(face_mask),
        motion_latents=jnp.asarray(rng.standard_normal((B, N_MOTION, LATENT, LATENT, 4), dtype=np.float32)),
        has_motion=jnp.array([1.0, 1.0]),
        audio_features=jnp.asarray(rng.standard_normal((B, frames, 5, 1, 80), dtype=np.float32)),
        speed=jnp.asarray(rng.uniform(0, 2, (B, frames)).astype(np.float32)),
    )


def trained(model: EMO, seed: int = 0) -> EMO:
    """Gives every zero-initialised output projection random weights, as training would."""
    key = jax.random.key(seed)
    flat = []
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        value = var[...]
        if not value.any():
            key, sub = jax.random.split(key)
            value = 0.05 * jax.random.normal(sub, value.shape, value.dtype)
        flat.append((path, var.replace(value)))
    nnx.update(model, nnx.from_flat_state(flat))
    return model


@pytest.fixture(scope="module")
def stage3():
    return trained(EMO(emo_config(3), rngs=nnx.Rngs(0)))


def test_forward_shapes_and_reference_feature_keys(stage3):
    out = stage3(**inputs())
    assert out.shape == (B, F, LATENT, LATENT, 4) and np.isfinite(out).all()
    features = stage3.encode_reference(inputs()["reference_latent"])
    spatial_blocks = {node.path for _, node in nnx.iter_graph(stage3.backbone) if getattr(node, "path", "")}
    assert set(features) == spatial_blocks  # one entry per backbone transformer block, same keys
    assert features["down_blocks.0.attentions.0.transformer_blocks.0"].shape == (B, LATENT * LATENT, 32)


def test_new_layers_leave_the_image_model_unchanged():
    """Stage 2/3 add temporal, audio, speed layers and a face locator, all zero at the output: the video
    model then predicts, frame by frame, what the stage-1 image model does."""
    image = EMO(emo_config(1), rngs=nnx.Rngs(0))
    video = EMO(emo_config(3), rngs=nnx.Rngs(1))
    nnx.update(video, nnx.state(image, nnx.Param))  # shared parts: stage 1 weights
    x = inputs()
    video_out = video(**x)
    for f in range(F):
        frame = image(x["noisy"][:, f : f + 1], x["timesteps"], x["reference_latent"], face_mask=x["face_mask"])
        np.testing.assert_allclose(video_out[:, f], frame[:, 0], atol=1e-5)


def test_reference_changes_output_only_through_reference_attention(stage3):
    x = inputs()
    other = dict(x, reference_latent=x["reference_latent"] + 1.0)
    assert not np.allclose(stage3(**x), stage3(**other), atol=1e-4)
    # The same backbone with reference attention off ignores the reference features.
    config = dataclasses.replace(stage3.config.backbone, reference_attention=None)
    from emo_jax.models import UNet

    plain = UNet(config, rngs=nnx.Rngs(0))
    nnx.update(plain, nnx.state(stage3.backbone, nnx.Param))
    features = stage3.encode_reference(x["reference_latent"])
    moved = {k: v + 1.0 for k, v in features.items()}
    np.testing.assert_array_equal(
        plain(x["noisy"], x["timesteps"], reference=features), plain(x["noisy"], x["timesteps"], reference=moved)
    )


def test_dropped_audio_cuts_exactly_that_samples_audio_path(stage3):
    x = inputs()
    with_audio = stage3(**x, audio_keep=jnp.array([0.0, 1.0]))
    without_audio = stage3(**dict(x, audio_features=None))
    full_audio = stage3(**x)
    np.testing.assert_allclose(with_audio[0], without_audio[0], atol=1e-5)  # sample 0: as if no audio
    np.testing.assert_allclose(with_audio[1], full_audio[1], atol=1e-5)  # sample 1: untouched
    assert not np.allclose(with_audio[0], full_audio[0], atol=1e-4)  # and audio did matter


def test_speed_and_motion_frames_reach_the_output(stage3):
    x = inputs()
    base = stage3(**x)
    assert not np.allclose(base, stage3(**dict(x, speed=x["speed"] + 1.0)), atol=1e-4)
    assert not np.allclose(base, stage3(**dict(x, motion_latents=x["motion_latents"] + 1.0)), atol=1e-4)
    # A first clip (no motion frames): zero motion features, whatever the motion latents hold.
    first = dict(x, has_motion=jnp.array([0.0, 0.0]))
    np.testing.assert_allclose(
        stage3(**first), stage3(**dict(first, motion_latents=x["motion_latents"] * 5)), atol=1e-5
    )


def test_frames_permute_with_the_input_when_temporal_layers_are_off():
    model = trained(EMO(emo_config(1), rngs=nnx.Rngs(0)))
    x = inputs()
    order = jnp.array([2, 0, 1])
    permuted = model(x["noisy"][:, order], x["timesteps"], x["reference_latent"], face_mask=x["face_mask"])
    original = model(x["noisy"], x["timesteps"], x["reference_latent"], face_mask=x["face_mask"])
    np.testing.assert_allclose(permuted, original[:, order], atol=1e-5)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_gradients_reach_exactly_the_trainable_parameters(stage):
    model = trained(EMO(emo_config(stage), rngs=nnx.Rngs(0)))
    x = inputs()
    if stage == 1:
        x = {k: x[k] for k in ("noisy", "timesteps", "reference_latent", "face_mask")}
        x["noisy"] = x["noisy"][:, :1]
    patterns = stage_config(stage).trainable

    def loss(model):
        return jnp.mean(model(**x) ** 2)

    grads = nnx.grad(loss, argnums=nnx.DiffState(0, trainable_filter(patterns)))(model)
    grad_paths = {".".join(str(p) for p in path) for path, _ in nnx.to_flat_state(grads)}
    assert grad_paths == set(trainable_paths(model, patterns))
    # The backbone's trainable output projections all receive signal (zero-initialised ones were given
    # weights above). The ReferenceNet's tail after its last read feature gets none by construction.
    backbone_outputs = [
        g for path, g in nnx.to_flat_state(grads) if path[0] == "backbone" and path[-2:] == ("proj_out", "kernel")
    ]
    assert backbone_outputs and all(float(jnp.abs(g[...]).sum()) > 0 for g in backbone_outputs)
    if stage == 3:
        assert not any("attn_audio" in p for p in grad_paths)  # audio layers frozen in the speed stage


def test_trainable_pattern_typo_is_an_error():
    model = EMO(emo_config(1), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="matches no parameter"):
        trainable_paths(model, [r"^backbone\.", r"^face_locater\."])


def test_shapes_only_builds_what_nnx_eval_shape_builds():
    """The same graph, variable types, shapes and dtypes; only faster (models.shapes_only)."""
    config = emo_config(3)
    fast = shapes_only(lambda: EMO(config, rngs=nnx.Rngs(0)))
    plain = nnx.eval_shape(lambda: EMO(config, rngs=nnx.Rngs(0)))
    assert nnx.graphdef(fast) == nnx.graphdef(plain)
    described = [
        [(path, type(v), v.shape, v.dtype) for path, v in nnx.to_flat_state(nnx.state(m))] for m in (fast, plain)
    ]
    assert described[0] == described[1]


def test_sd15_sizes_build_abstractly():
    config = EMOConfig.from_dict(load_config("stage3.py").model)
    model = shapes_only(lambda: EMO(config, rngs=nnx.Rngs(0)))
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(nnx.state(model)))
    counts = param_counts(model)
    assert 0.8e9 < counts["reference_net"] < 0.9e9 and counts["backbone"] > counts["reference_net"]


@pytest.mark.parity
@pytest.mark.parametrize("mode", ["concat_self", "cross"])
def test_sd_and_motion_adapter_weights_fill_the_emo_model(mode):
    from peers import require, state_dict_numpy

    torch = require("torch")
    diffusers = require("diffusers")
    from emo_jax.convert.emo import emo_from_diffusers

    config = emo_config(3, reference_attention=mode)
    sd_config = {k: v for k, v in config.reference_net.to_diffusers().items() if k != "_class_name"}
    torch.manual_seed(0)
    sd = state_dict_numpy(diffusers.UNet2DConditionModel(**{**sd_config, "cross_attention_dim": 24}))
    adapter = state_dict_numpy(
        diffusers.MotionAdapter(
            block_out_channels=config.backbone.block_out_channels,
            motion_layers_per_block=1,
            motion_num_attention_heads=4,
            motion_norm_num_groups=16,
        )
    )
    model = EMO(config, rngs=nnx.Rngs(0))
    before = {".".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    emo_from_diffusers(model, sd, motion_adapter=adapter)
    after = {".".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}

    block = "down_blocks.0.attentions.0.transformer_blocks.0"
    for net in ("reference_net", "backbone"):
        np.testing.assert_array_equal(after[f"{net}.conv_in.kernel"], sd["conv_in.weight"].transpose(2, 3, 1, 0))
        np.testing.assert_array_equal(after[f"{net}.{block}.attn1.to_q.kernel"], sd[f"{block}.attn1.to_q.weight"].T)
    motion = "down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q"
    np.testing.assert_array_equal(after[f"backbone.{motion}.kernel"], adapter[f"{motion}.weight"].T)
    # EMO-only layers keep their init.
    for path in (
        f"backbone.{block}.attn_audio.to_q.kernel",
        "backbone.down_blocks.0.motion_modules.0.transformer_blocks.0.attn_speed.to_q.kernel",
        "face_locator.conv_in.kernel",
        "speed_encoder.linear_1.kernel",
    ):
        np.testing.assert_array_equal(after[path], before[path])
    if mode == "cross":  # attn2 at the block's width: query and output from SD's attn2, keys/values from attn1
        np.testing.assert_array_equal(after[f"backbone.{block}.attn2.to_q.kernel"], sd[f"{block}.attn2.to_q.weight"].T)
        for kv in ("to_k", "to_v"):
            np.testing.assert_array_equal(
                after[f"backbone.{block}.attn2.{kv}.kernel"], sd[f"{block}.attn1.{kv}.weight"].T
            )
    else:
        assert not any(".attn2." in p for p in after if ".attentions." in p)


def test_each_frame_attends_to_its_own_speed(stage3):
    """Speed attention is per frame: changing frame 0's speed moves frame 0 more than frame 7, whose +/-2 window
    does not hold frame 0 (it only hears of it through the temporal self-attention)."""
    x = inputs(frames=8)
    base = stage3(**x)
    speed = x["speed"].at[:, 0].add(2.0)
    moved = np.abs(np.asarray(stage3(**dict(x, speed=speed)) - base)).mean(axis=(0, 2, 3, 4))  # per frame
    assert moved[0] > 2 * moved[-1] > 0


@pytest.mark.parametrize("name", ["reference_keep", "audio_keep", "speed_keep"])
def test_each_keep_mask_drops_exactly_its_condition_for_that_sample(stage3, name):
    x = inputs()
    dropped = {"reference_keep": dict(), "audio_keep": dict(audio_features=None), "speed_keep": dict(speed=None)}
    mixed = stage3(**x, **{name: jnp.array([0.0, 1.0])})
    full = stage3(**x)
    if name == "reference_keep":  # no reference: each block's self-attention over its own tokens only
        plain = dataclasses.replace(stage3.config.backbone, reference_attention=None)
        from emo_jax.models import UNet

        unet = UNet(plain, rngs=nnx.Rngs(0))
        nnx.update(unet, nnx.state(stage3.backbone, nnx.Param))
        without = EMO.__new__(EMO)
        vars(without).update(vars(stage3))
        without.backbone = unet
        without = without(**x)
    else:
        without = stage3(**dict(x, **dropped[name]))
    np.testing.assert_allclose(mixed[0], without[0], atol=1e-5)  # sample 0: as if the condition were absent
    np.testing.assert_allclose(mixed[1], full[1], atol=1e-5)  # sample 1: untouched
    assert not np.allclose(mixed[0], full[0], atol=1e-4)  # and the condition did matter


def test_every_temporal_module_reads_motion_frames_at_its_own_point(stage3):
    """EMO's 'residual' motion features: one per temporal module, at the width and size of the backbone's
    hidden state there, including the level without spatial attention."""
    x = inputs()
    motion = stage3.encode_motion(x["motion_latents"], x["has_motion"])
    modules = [node for _, node in nnx.iter_graph(stage3.backbone) if hasattr(node, "motion_key")]
    assert len(modules) == 7 and {m.motion_key for m in modules} == set(motion)  # 2 down, 1 mid, 4 up
    for module in modules:
        assert motion[module.motion_key].shape[-1] == module.proj_in.in_features
    assert any("down_blocks.1" in key for key in motion)  # the level without spatial attention


def test_config_round_trips_through_a_dict():
    config = emo_config(3, prediction_type="v_prediction")
    assert EMOConfig.from_dict(config.to_dict()) == config
    import json

    assert EMOConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_bad_shapes_are_named(stage3):
    x = inputs()
    with pytest.raises(ValueError, match=r"face_mask has shape \[2, 64, 64, 1\], expected \[2, 16, 16, 1\]"):
        stage3(**dict(x, face_mask=jnp.zeros((B, 64, 64, 1))))
    with pytest.raises(ValueError, match="audio_features has shape"):
        stage3(**dict(x, audio_features=x["audio_features"][:, :, :3]))
    with pytest.raises(ValueError, match=r"speed has shape \[2, 2\]"):
        stage3(**dict(x, speed=x["speed"][:, :2]))
