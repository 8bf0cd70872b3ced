"""Hallo's layout: net.pth keys convert strictly; properties of the region audio block; configs/hallo.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hallo_folder import HALLO_SCHEDULER, model_sizes
from hallo_folder import layout as _layout
from peers import require

from emo_jax.config import load_config
from emo_jax.convert.hallo import from_hallo, hallo_config
from emo_jax.convert.state_dict import ConversionError
from emo_jax.models import Compute
from emo_jax.models.attention import Context
from emo_jax.models.emo import EMOConfig
from emo_jax.models.region_audio import RegionAudioBlock
from emo_jax.sample.generate import SamplingSettings

# Key names and shapes of Hallo's `Net` state dict at tiny sizes, written by Hallo's own modules (see "source").


def _convert(keys: dict[str, list[int]], layout: dict):
    rng = np.random.default_rng(0)
    state_dict = {k: rng.standard_normal(shape).astype(np.float32) for k, shape in keys.items()}
    return from_hallo(state_dict, layout["unet_config"], **model_sizes(layout))


def test_every_key_of_hallos_net_lands_on_a_parameter():
    layout = _layout()
    model = _convert(layout["keys"], layout)
    ours = sum(int(np.prod(v.shape)) for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))
    # Dropped on purpose: motion-module frame positions (buffers) and the motion modules of the stages
    # without spatial attention (down_blocks.3, up_blocks.0), which Hallo's inference never runs.
    dropped = {
        k: s
        for k, s in layout["keys"].items()
        if k.endswith(".pe") or any(f"{b}.motion_modules." in k for b in ("down_blocks.3", "up_blocks.0"))
    }
    assert dropped and all(k.startswith("denoising_unet.") for k in dropped)
    assert ours == sum(int(np.prod(s)) for k, s in layout["keys"].items() if k not in dropped)


def test_a_missing_and_an_unknown_key_are_both_named():
    layout = _layout()
    keys = dict(layout["keys"])
    missing = "denoising_unet.up_blocks.1.audio_modules.2.transformer_blocks.0.attn2_1.to_k.weight"
    del keys[missing]
    keys["denoising_unet.up_blocks.1.audio_modules.2.transformer_blocks.0.attn2_3.to_k.weight"] = [64, 48]
    with pytest.raises(ConversionError) as error:
        _convert(keys, layout)
    assert "backbone.up_blocks.1.audio_modules.2.transformer_blocks.0.attn2_1.to_k.kernel" in str(error.value)
    assert "attn2_3.to_k.weight" in str(error.value)


def _block(randomize: bool) -> RegionAudioBlock:
    block = RegionAudioBlock(16, heads=2, dim_head=8, cross_attention_dim=12, compute=Compute(), rngs=nnx.Rngs(0))
    if randomize:  # the zero convs too, as a trained checkpoint has them
        state = nnx.state(block, nnx.Param)
        leaves, tree = jax.tree.flatten(state)
        keys = jax.random.split(jax.random.key(1), len(leaves))
        nnx.update(block, jax.tree.unflatten(tree, [0.3 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)]))
    return block


def _inputs(masks_on: bool):
    k = jax.random.split(jax.random.key(2), 4)
    x = jax.random.normal(k[0], (3, 16, 16))
    audio = jax.random.normal(k[1], (3, 5, 12))
    masks = (jax.random.uniform(k[2], (3, 3, 16)) > 0.5).astype(jnp.float32) if masks_on else jnp.zeros((3, 3, 16))
    other_audio = jax.random.normal(k[3], (3, 5, 12))
    return x, audio, other_audio, (masks, jnp.ones((3, 3, 4)))  # masks of another resolution are not chosen


def test_audio_has_no_effect_outside_every_region():
    block = _block(randomize=True)
    x, audio, other_audio, masks = _inputs(masks_on=False)
    a = block(x, Context(audio=audio, region_masks=masks))
    b = block(x, Context(audio=other_audio, region_masks=masks))
    np.testing.assert_allclose(a, b, atol=1e-6)
    x, audio, other_audio, masks = _inputs(masks_on=True)  # and does inside them
    assert float(jnp.abs(block(x, Context(audio=audio, region_masks=masks)) - a).max()) > 1e-2


def test_motion_scale_weighs_each_region_term():
    block = _block(randomize=True)
    x, audio, _, masks = _inputs(masks_on=True)

    def out(scale):
        return block(x, Context(audio=audio, region_masks=masks, motion_scale=jnp.asarray(scale, jnp.float32)))

    base = out([0.0, 0.0, 0.0])
    terms = [out(np.eye(3)[i]) - base for i in range(3)]
    assert all(float(jnp.abs(t).max()) > 1e-2 for t in terms)
    # The block after the audio terms (norm3 + ff) is not linear, so compare the audio terms through a block
    # whose ff and norm3 add nothing: linear in the scales exactly.
    np.testing.assert_allclose(out([1.0, 1.0, 1.0]), block(x, Context(audio=audio, region_masks=masks)), atol=1e-6)
    ff_free = _block(randomize=True)
    ff_free.ff.net[2].kernel[...] = jnp.zeros_like(ff_free.ff.net[2].kernel[...])
    ff_free.ff.net[2].bias[...] = jnp.zeros_like(ff_free.ff.net[2].bias[...])

    def linear_out(scale):
        return ff_free(x, Context(audio=audio, region_masks=masks, motion_scale=jnp.asarray(scale, jnp.float32)))

    zero = linear_out([0.0, 0.0, 0.0])
    single = [linear_out(np.eye(3)[i]) - zero for i in range(3)]
    np.testing.assert_allclose(
        linear_out([2.0, 0.5, 3.0]) - zero, 2 * single[0] + 0.5 * single[1] + 3 * single[2], atol=1e-5
    )


def test_a_new_block_starts_without_audio_effect():
    block = _block(randomize=False)  # zero convs at their zero init
    x, audio, other_audio, masks = _inputs(masks_on=True)
    np.testing.assert_array_equal(
        block(x, Context(audio=audio, region_masks=masks)), block(x, Context(audio=other_audio, region_masks=masks))
    )


def test_masks_for_the_blocks_resolution_are_required():
    block = _block(randomize=True)
    x, audio, _, _ = _inputs(masks_on=True)
    with pytest.raises(ValueError, match="no region masks for 16 tokens"):
        block(x, Context(audio=audio, region_masks=(jnp.ones((3, 3, 4)),)))


SD15_UNET = {"_class_name": "UNet2DConditionModel", "cross_attention_dim": 768, "sample_size": 64}  # the rest default


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_the_hallo_config_is_hallos_model_and_sampler(dtype):
    """configs/hallo.py: from_hallo's model of SD1.5, the compute dtype by flag, and the DDIM steps of Hallo's
    `configs/inference/default.yaml` (its scheduler settings given to diffusers' DDIMScheduler)."""
    torch, diffusers = require("torch"), require("diffusers")
    config = load_config(f"configs/hallo.py:{dtype}")
    assert EMOConfig.from_dict(config.model) == hallo_config(SD15_UNET)
    assert config.compute.dtype == dtype
    assert (config.data.num_frames, config.model.num_motion_frames, config.data.size) == (16, 2, 512)
    peer = diffusers.DDIMScheduler(**HALLO_SCHEDULER)
    peer.set_timesteps(40)
    table = SamplingSettings.from_config(config).table(config)
    np.testing.assert_array_equal(table.timesteps, peer.timesteps.numpy())
    abar = peer.alphas_cumprod.to(torch.float64).numpy()[table.timesteps]
    np.testing.assert_allclose(table.sqrt_abar, np.sqrt(abar), rtol=1e-6, atol=1e-7)


def test_the_hallo_config_refuses_an_unknown_dtype():
    with pytest.raises(ValueError, match="float8"):
        load_config("configs/hallo.py:float8")


def test_convert_names_every_missing_part_of_hallos_folder(tmp_path, capsys):
    from emo_jax.cli import main

    (tmp_path / "hallo").mkdir()
    (tmp_path / "hallo" / "net.pth").write_bytes(b"")
    with pytest.raises(SystemExit) as info:
        main(["convert", "--hallo", str(tmp_path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert info.value.code == 1 and "net.pth" not in err, err
    assert "stable-diffusion-v1-5/unet/config.json" in err and "sd-vae-ft-mse/config.json" in err, err
    assert err.count("fudan-generative-vision/hallo") == 2, err


@pytest.mark.parametrize(
    "flags",
    [["--hallo", "h", "--verify"], ["--hallo", "h", "--variant", "fp16"], ["src", "--config", "configs/hallo.py"]],
)
def test_convert_refuses_flags_of_the_other_kind_of_source(flags, capsys):
    from emo_jax.cli import main

    with pytest.raises(SystemExit) as info:
        main(["convert", *flags, "--out", "out"])
    err = capsys.readouterr().err
    assert info.value.code == 1 and ("--hallo" in err or "--config" in err) and "Traceback" not in err, err


def test_a_converted_hallo_folder_loads_as_a_sampling_bundle(tmp_path):
    """Hallo's pretrained_models layout with tiny random weights (net.pth written by torch) -> convert_folder ->
    load_bundle: every parameter equal to from_hallo's, the VAE's to the diffusers folder's."""
    require("torch"), require("diffusers")
    from hallo_folder import write_pretrained_models
    from tiny import TINY_VAE

    from emo_jax.convert.diffusers import from_diffusers_folder
    from emo_jax.convert.hallo import convert_folder
    from emo_jax.sample import load_bundle

    layout = _layout()
    folder = tmp_path / "pretrained_models"
    net = write_pretrained_models(folder, TINY_VAE)
    overrides = model_sizes(layout)
    config = load_config("configs/hallo.py:float32")
    config.model = hallo_config(layout["unet_config"], **overrides).to_dict()
    written = convert_folder(folder, tmp_path / "bundle", config)
    bundle = load_bundle(tmp_path / "bundle")

    assert EMOConfig.from_dict(bundle.config.model) == EMOConfig.from_dict(written.model) == bundle.model.config
    assert bundle.config.compute.dtype == "float32" and "pretrained_models" in bundle.config.exported_from
    expected = from_hallo(net, layout["unet_config"], **overrides)
    pairs = [(nnx.state(bundle.model, nnx.Param), nnx.state(expected, nnx.Param))]
    pairs.append((nnx.state(bundle.vae, nnx.Param), nnx.state(from_diffusers_folder(folder / "sd-vae-ft-mse"))))
    for got, want in pairs:
        got, want = dict(nnx.to_flat_state(got)), dict(nnx.to_flat_state(want))
        assert got.keys() == want.keys()
        for path in want:
            np.testing.assert_array_equal(np.asarray(got[path][...]), np.asarray(want[path][...]), err_msg=str(path))
