"""An SD1.5 UNet checkpoint (and an AnimateDiff motion adapter) -> the EMO model's ReferenceNet and backbone.

Both nets take SD's spatial weights. What EMO changes in them, and so does not load, is fixed by rules:
  * no text: spatial attn2 (and its norm2) do not exist unless the net keeps text cross-attention
    (`cross_attention_dim`) -> SD's attn2 keys are left out;
  * 'cross' reference attention at the blocks' own width: attn2.to_q / to_out / norm2 load from SD's attn2;
    to_k / to_v (768-wide text projections in SD) load from the same block's attn1.to_k / to_v, which were
    trained to read exactly what reference features are (a block's normed hidden states), so the reference
    enters at step 0 through pretrained projections rather than random ones;
  * layers SD has no counterpart for (motion modules, audio and speed attention) keep their init, the motion
    modules until `from_animatediff_motion_adapter` fills them.
Every other key must match exactly (`load_state_dict`'s errors).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

import numpy as np

from emo_jax.convert.animatediff import from_animatediff_motion_adapter
from emo_jax.convert.state_dict import load_state_dict
from emo_jax.models.attention import EMO_ONLY_LAYERS
from emo_jax.models.emo import EMO
from emo_jax.models.unet import UNet

log = logging.getLogger(__name__)

_SPATIAL_ATTN2 = re.compile(r"\.transformer_blocks\.\d+\.(attn2|norm2)\.")
_SPATIAL_ATTN2_KV = re.compile(r"\.transformer_blocks\.\d+\.attn2\.(to_k|to_v)\.")
_FROM_ATTN1 = "#from_attn1"


def _sd_into(net: UNet, state_dict: Mapping[str, np.ndarray], source: str) -> UNet:
    config = net.config
    if config.cross_attention_dim is not None:
        left_out = None  # text cross-attention kept as in SD
    elif config.reference_attention == "cross":
        left_out = _SPATIAL_ATTN2_KV
    else:
        left_out = _SPATIAL_ATTN2
    dropped = [k for k in state_dict if left_out is not None and left_out.search(f".{k}")]
    if dropped:
        log.info("%s: %d SD keys left out (EMO has no text cross-attention), e.g. %s", source, len(dropped), dropped[0])

    if left_out is _SPATIAL_ATTN2_KV:  # attn2's keys/values from the block's attn1
        copies = {k.replace(".attn1.", ".attn2.") + _FROM_ATTN1: v for k, v in state_dict.items() if ".attn1." in k}
        state_dict = {**state_dict, **{k: v for k, v in copies.items() if _SPATIAL_ATTN2_KV.search(f".{k}")}}

    def rename(key: str) -> str | None:
        if key.endswith(_FROM_ATTN1):
            return key[: -len(_FROM_ATTN1)]
        return None if left_out is not None and left_out.search(f".{key}") else key

    def from_sd(path: str) -> bool:
        return ".motion_modules." not in f".{path}" and not EMO_ONLY_LAYERS.search(path)

    return load_state_dict(net, state_dict, source=source, rename=rename, only=from_sd)


def emo_from_diffusers(
    model: EMO,
    unet_state_dict: Mapping[str, np.ndarray],
    *,
    motion_adapter: Mapping[str, np.ndarray] | None = None,
    source: str = "SD UNet",
) -> EMO:
    """Fills a (concrete, freshly initialised) EMO model from an SD1.5-layout `UNet2DConditionModel` state dict,
    and its backbone's motion modules from a motion adapter state dict if given. Returns the same object."""
    model.reference_net = _sd_into(model.reference_net, unet_state_dict, f"{source} -> reference_net")
    model.backbone = _sd_into(model.backbone, unet_state_dict, f"{source} -> backbone")
    if motion_adapter is not None:
        model.backbone = from_animatediff_motion_adapter(
            motion_adapter, model.backbone, source="motion adapter -> backbone"
        )
    return model
