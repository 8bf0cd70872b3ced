"""AnimateDiff motion modules -> the motion modules of a video `UNet` (`UNetConfig.motion`).

Two checkpoint layouts: diffusers `MotionAdapter` (`down_blocks.0.motion_modules.0.transformer_blocks.0.attn1...`)
and the original AnimateDiff `mm_sd_v15*.ckpt` (`...motion_modules.0.temporal_transformer.transformer_blocks.0.
attention_blocks.0...`), renamed here to the former. Positional-encoding buffers are dropped (recomputed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from emo_jax.convert.state_dict import ConversionError, load_state_dict
from emo_jax.models import MotionConfig, UNet
from emo_jax.models.attention import EMO_ONLY_LAYERS

# original AnimateDiff name -> diffusers MotionAdapter name
_ORIGINAL_NAMES = [
    (re.compile(r"\.temporal_transformer\."), "."),
    (re.compile(r"\.attention_blocks\.(\d)\."), lambda m: f".attn{int(m[1]) + 1}."),
    (re.compile(r"\.norms\.(\d)\."), lambda m: f".norm{int(m[1]) + 1}."),
    (re.compile(r"\.ff_norm\."), ".norm3."),
]
_POSITION_BUFFER = re.compile(r"\.(pos_encoder|pos_embed)\.pe$")


def motion_key(key: str) -> str | None:
    """An AnimateDiff motion-module key (either layout) -> the diffusers name (None: a position buffer)."""
    if _POSITION_BUFFER.search(key):
        return None
    for pattern, replacement in _ORIGINAL_NAMES:
        key = pattern.sub(replacement, key)
    return key


def from_animatediff_motion_adapter(
    state_dict: Mapping[str, np.ndarray], unet: UNet, *, source: str = "motion adapter"
) -> UNet:
    """Loads every motion-module parameter of `unet` from a motion adapter state dict (either layout);
    the spatial weights of `unet`, and EMO's speed attention inside the motion modules, are kept. The adapter
    must hold exactly `unet`'s motion modules (e.g. a mid-block module only where `motion.use_motion_mid_block`)."""
    if unet.config.motion is None:
        raise ConversionError(f"{source}: the UNet has no motion modules (UNetConfig.motion is None)")

    def is_motion(path: str) -> bool:
        return ".motion_modules." in f".{path}" and not EMO_ONLY_LAYERS.search(path)

    return load_state_dict(unet, state_dict, source=source, rename=motion_key, only=is_motion)


def motion_config_from_adapter(config: Mapping, *, source: str = "motion adapter config") -> MotionConfig:
    """A diffusers `MotionAdapter` config.json dict -> `MotionConfig` (per-block variants are not supported)."""
    values = {
        "motion_num_attention_heads": config.get("motion_num_attention_heads", 8),
        "motion_max_seq_length": config.get("motion_max_seq_length", 32),
        "temporal_transformer_layers_per_block": config.get("motion_transformer_layers_per_block", 1),
        "temporal_transformer_layers_per_mid_block": config.get("motion_transformer_layers_per_mid_block", 1),
        "use_motion_mid_block": config.get("use_motion_mid_block", True),
    }
    for key, value in values.items():
        if not isinstance(value, (int, bool)):
            raise ConversionError(f"{source}: per-block {key}={value!r} is not supported; give one value")
    if config.get("motion_mid_block_layers_per_block", 1) != 1 or config.get("conv_in_channels"):
        raise ConversionError(f"{source}: only adapters with one mid motion module and no conv_in are supported")
    return MotionConfig(**values)
