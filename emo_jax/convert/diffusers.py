"""diffusers checkpoints (SD1.5 `UNet2DConditionModel`, `AutoencoderKL`) -> emo_jax models."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from emo_jax.convert.files import read_diffusers_folder
from emo_jax.convert.state_dict import load_state_dict
from emo_jax.models import AutoencoderKL, Compute, MotionConfig, UNet, UNetConfig, abstract_model

# Older VAE checkpoints (e.g. the original SD1.5 vae/diffusion_pytorch_model.bin) name the mid-block
# attention's projections as the pre-2023 `AttentionBlock` did; diffusers renames them on load too.
_DEPRECATED_VAE_ATTENTION = re.compile(r"(\.attentions\.\d+\.)(query|key|value|proj_attn)\.")
_VAE_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _rename_deprecated_vae_attention(key: str) -> str:
    return _DEPRECATED_VAE_ATTENTION.sub(lambda m: f"{m[1]}{_VAE_ATTENTION_NAMES[m[2]]}.", key)


def _drop_position_buffers(key: str) -> str | None:
    # Motion modules' sinusoidal frame positions are a fixed buffer, recomputed from the formula here.
    return None if key.endswith(".pos_embed.pe") else key


_RENAMES = {"AutoencoderKL": _rename_deprecated_vae_attention, "UNetMotionModel": _drop_position_buffers}


def _convert(
    state_dict: Mapping[str, np.ndarray], config: Mapping[str, Any], compute: Compute, source: str
) -> nnx.Module:
    model = abstract_model(config, compute=compute, source=source)
    return load_state_dict(model, state_dict, source=source, rename=_RENAMES.get(config["_class_name"]))


def _from_diffusers(
    class_name: str, state_dict: Mapping[str, np.ndarray], config: Mapping[str, Any], compute: Compute, source: str
) -> nnx.Module:
    config = {**config, "_class_name": config.get("_class_name", class_name)}
    if config["_class_name"] != class_name:
        raise ValueError(f"{source}: config is a {config['_class_name']}, expected {class_name}")
    return _convert(state_dict, config, compute, source)


def from_diffusers_unet(
    state_dict: Mapping[str, np.ndarray],
    config: Mapping[str, Any],
    *,
    motion: MotionConfig | None = None,
    compute: Compute = Compute(),
    source: str = "state dict",
    seed: int = 0,
) -> UNet:
    """A diffusers `UNet2DConditionModel` (or `UNetMotionModel`) state dict (key -> numpy) + its config.json dict
    -> `UNet` (with motion modules for a UNetMotionModel).

    `motion` adds new AnimateDiff motion modules to an image checkpoint: random init from `seed`, output
    projections zero (so the video UNet first reproduces the image UNet on every frame); load trained ones
    with `convert.animatediff.from_animatediff_motion_adapter`.
    """
    class_name = "UNetMotionModel" if config.get("_class_name") == "UNetMotionModel" else "UNet2DConditionModel"
    if motion is None:
        return _from_diffusers(class_name, state_dict, config, compute, source)
    if class_name == "UNetMotionModel":
        raise ValueError(f"{source}: a UNetMotionModel already has motion modules; do not pass motion=")
    unet_config = dataclasses.replace(UNetConfig.from_diffusers(config, source=source), motion=motion)
    unet = UNet(unet_config, compute=compute, rngs=nnx.Rngs(seed))
    return load_state_dict(unet, state_dict, source=source, only=lambda path: ".motion_modules." not in f".{path}")


def from_diffusers_vae(
    state_dict: Mapping[str, np.ndarray],
    config: Mapping[str, Any],
    *,
    compute: Compute = Compute(),
    source: str = "state dict",
) -> AutoencoderKL:
    """A diffusers `AutoencoderKL` state dict (key -> numpy) + its config.json dict -> `AutoencoderKL`."""
    return _from_diffusers("AutoencoderKL", state_dict, config, compute, source)


def from_diffusers_folder(
    folder: str | Path, *, variant: str | None = None, compute: Compute = Compute()
) -> UNet | AutoencoderKL:
    """A diffusers model folder (config.json + weights) -> the matching emo_jax model, chosen by `_class_name`."""
    config, state_dict = read_diffusers_folder(folder, variant=variant)
    return _convert(state_dict, config, compute, str(folder))
