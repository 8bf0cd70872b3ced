"""Conversion from diffusers checkpoints: file formats, folders, errors, Orbax round trip, dtypes."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from peers import nchw, nhwc, rel_err, require, state_dict_numpy
from tiny import TINY_UNET, TINY_VAE

from emo_jax.checkpoint import load_model, save_model
from emo_jax.convert import ConversionError, from_diffusers_folder, from_diffusers_unet, read_state_dict
from emo_jax.models import AutoencoderKLConfig, Compute, UNetConfig, abstract_model


@pytest.fixture(scope="module")
def peer_unet():
    torch = require("torch")
    diffusers = require("diffusers")
    torch.manual_seed(0)
    return diffusers.UNet2DConditionModel(**TINY_UNET.to_diffusers()).eval()


def _inputs(batch=1, size=8):
    rng = np.random.default_rng(0)
    return (
        jnp.asarray(rng.standard_normal((batch, size, size, 4), dtype=np.float32)),
        jnp.asarray([321] * batch),
        jnp.asarray(rng.standard_normal((batch, 5, 16), dtype=np.float32)),
    )


@pytest.mark.parity
def test_bad_state_dict_names_every_bad_key(peer_unet):
    state_dict = state_dict_numpy(peer_unet)
    del state_dict["conv_in.bias"]
    state_dict["down_blocks.0.extra.weight"] = np.zeros(3, np.float32)
    state_dict["conv_out.weight"] = np.zeros((4, 32, 1, 1), np.float32)
    with pytest.raises(ConversionError) as info:
        from_diffusers_unet(state_dict, dict(peer_unet.config), source="my_unet.safetensors")
    message = str(info.value)
    assert "my_unet.safetensors" in message
    assert "conv_in.bias" in message  # missing
    assert "down_blocks.0.extra.weight" in message  # unexpected
    assert "conv_out.weight: (4, 32, 1, 1)" in message and "(3, 3, 32, 4)" in message  # misshapen


def test_unsupported_config_names_the_key():
    with pytest.raises(ValueError, match="class_embed_type"):
        UNetConfig.from_diffusers({**TINY_UNET.to_diffusers(), "class_embed_type": "timestep"}, source="cfg.json")
    with pytest.raises(ValueError, match="up_block_types"):
        AutoencoderKLConfig.from_diffusers({**TINY_VAE.to_diffusers(), "up_block_types": ["AttnUpDecoderBlock2D"] * 2})


@pytest.mark.parity
@pytest.mark.parametrize("safe_serialization", [True, False], ids=["safetensors", "bin"])
def test_diffusers_folder_in_both_formats(peer_unet, tmp_path, safe_serialization):
    torch = require("torch")
    peer_unet.save_pretrained(tmp_path, safe_serialization=safe_serialization)
    model = from_diffusers_folder(tmp_path)
    sample, t, context = _inputs()
    with torch.no_grad():
        expected = peer_unet(
            torch.from_numpy(nchw(sample)), torch.from_numpy(np.array(t)), torch.from_numpy(np.array(context))
        ).sample
    assert rel_err(model(sample, t, context), nhwc(expected.numpy())) < 1e-5


@pytest.mark.parity
def test_bf16_safetensors_read_as_bf16(peer_unet, tmp_path):
    torch = require("torch")
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in peer_unet.state_dict().items()}, str(path))
    state_dict = read_state_dict(path)
    assert state_dict["conv_in.weight"].dtype == jnp.bfloat16
    model = from_diffusers_unet(state_dict, dict(peer_unet.config))
    assert model.conv_in.kernel.dtype == jnp.float32  # cast to the model's param dtype


def test_unreadable_inputs_name_the_file(tmp_path):
    with pytest.raises(ConversionError, match="no config.json"):
        from_diffusers_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(TINY_UNET.to_diffusers()))
    with pytest.raises(ConversionError, match="no diffusion_pytorch_model"):
        from_diffusers_folder(tmp_path)
    (tmp_path / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ConversionError, match="diffusion_pytorch_model.safetensors: not a readable"):
        from_diffusers_folder(tmp_path)
    with pytest.raises(ConversionError, match="unknown weights format"):
        read_state_dict(tmp_path / "config.json")


def test_orbax_round_trip_is_exact(tmp_path):
    from flax import nnx

    from emo_jax.models import UNet

    model = UNet(TINY_UNET, rngs=nnx.Rngs(3))
    save_model(tmp_path / "unet", model)
    restored = load_model(tmp_path / "unet")
    assert restored.config == model.config
    np.testing.assert_array_equal(restored(*_inputs()), model(*_inputs()))


def test_parameters_restore_with_kernels_in_a_narrower_dtype(tmp_path):
    """restore_params(kernel_dtype=bf16): conv and dense kernels arrive in bf16, equal to the saved ones cast (what
    sampling would cast them to), everything else in fp32; the model runs the same as with the cast applied."""
    from flax import nnx

    from emo_jax.checkpoint import restore_params, save_params
    from emo_jax.models import UNet, kernels_in, shapes_only

    compute = Compute(dtype=jnp.bfloat16)
    model = UNet(TINY_UNET, compute=compute, rngs=nnx.Rngs(3))
    save_params(tmp_path / "params", model)
    abstract = shapes_only(lambda: UNet(TINY_UNET, compute=compute, rngs=nnx.Rngs(0)))
    restored = restore_params(tmp_path / "params", abstract, kernel_dtype=jnp.bfloat16)
    want = dict(nnx.to_flat_state(kernels_in(jnp.bfloat16, nnx.state(model, nnx.Param))))
    got = dict(nnx.to_flat_state(nnx.state(restored, nnx.Param)))
    assert got.keys() == want.keys()
    dtypes = {path[-1]: set() for path in got}
    for path, variable in got.items():
        dtypes[path[-1]].add(jnp.dtype(variable[...].dtype).name)
        np.testing.assert_array_equal(np.asarray(variable[...], np.float32), np.asarray(want[path][...], np.float32))
    assert dtypes["kernel"] == {"bfloat16"} and dtypes["bias"] == {"float32"}
    np.testing.assert_array_equal(
        np.asarray(restored(*_inputs()), np.float32), np.asarray(model(*_inputs()), np.float32)
    )


def test_bf16_compute_keeps_fp32_params_and_stays_close():
    from flax import nnx

    from emo_jax.models import UNet

    fp32 = UNet(TINY_UNET, rngs=nnx.Rngs(0))
    bf16 = UNet(TINY_UNET, compute=Compute(dtype=jnp.bfloat16), rngs=nnx.Rngs(0))
    assert {x.dtype for x in jax.tree.leaves(nnx.state(bf16, nnx.Param))} == {jnp.dtype(jnp.float32)}
    out = bf16(*_inputs())
    assert out.dtype == jnp.bfloat16
    assert rel_err(np.asarray(out, np.float32), fp32(*_inputs())) < 3e-2


@pytest.mark.parity
def test_sd15_sizes_build_abstractly_and_match_diffusers_counts():
    torch = require("torch")
    diffusers = require("diffusers")
    sd15_unet = UNetConfig().to_diffusers()  # our defaults are SD1.5's
    sd_vae = AutoencoderKLConfig().to_diffusers()
    for config, peer_cls in ((sd15_unet, diffusers.UNet2DConditionModel), (sd_vae, diffusers.AutoencoderKL)):
        model = abstract_model(config)  # shapes only: no weights allocated
        leaves = jax.tree.leaves(model)
        assert leaves and all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
        ours = sum(int(np.prod(x.shape)) for x in leaves)
        with torch.device("meta"):
            theirs = sum(
                p.numel() for p in peer_cls(**{k: v for k, v in config.items() if k != "_class_name"}).parameters()
            )
        assert ours == theirs
