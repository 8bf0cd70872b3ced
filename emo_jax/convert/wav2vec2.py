"""transformers `Wav2Vec2Model` checkpoints (e.g. facebook/wav2vec2-base-960h) -> `models.wav2vec2.Wav2Vec2Model`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from emo_jax.convert.files import read_transformers_folder
from emo_jax.convert.state_dict import ConversionError, load_state_dict
from emo_jax.models import Compute, shapes_only
from emo_jax.models.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model

log = logging.getLogger(__name__)

_POS_CONV = "encoder.pos_conv_embed.conv."
# (magnitude g, direction v) key names of torch's weight norm: the old hook and the parametrization API.
_WEIGHT_NORM_NAMES = (
    ("weight_g", "weight_v"),
    ("parametrizations.weight.original0", "parametrizations.weight.original1"),
)
# Trained only for masked pretraining; unused when encoding audio.
_UNUSED = ("masked_spec_embed",)


def fold_weight_norm(g: np.ndarray, v: np.ndarray) -> np.ndarray:
    """torch `weight_norm(conv, dim=2)`: w = g * v / ||v||, the norm over every axis but 2 (the kernel axis)."""
    norm = np.sqrt(np.sum(np.square(v.astype(np.float64)), axis=(0, 1), keepdims=True))
    return (g * v / norm).astype(v.dtype)


def _model_keys(state_dict: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Keys of the bare Wav2Vec2Model: a CTC / pretraining checkpoint's `wav2vec2.` submodule, heads dropped."""
    if any(k.startswith("wav2vec2.") for k in state_dict):
        dropped = sorted({k.split(".")[0] for k in state_dict if not k.startswith("wav2vec2.")})
        if dropped:
            log.info("%s: using the wav2vec2 submodule; leaving out %s", source, ", ".join(dropped))
        state_dict = {k[len("wav2vec2.") :]: v for k, v in state_dict.items() if k.startswith("wav2vec2.")}
    state_dict = {k: v for k, v in state_dict.items() if k not in _UNUSED}
    for g_name, v_name in _WEIGHT_NORM_NAMES:
        g, v = state_dict.pop(_POS_CONV + g_name, None), state_dict.pop(_POS_CONV + v_name, None)
        if g is not None and v is not None:
            state_dict[_POS_CONV + "weight"] = fold_weight_norm(np.asarray(g), np.asarray(v))
    if _POS_CONV + "weight" not in state_dict:
        raise ConversionError(f"{source}: no positional conv weight ({_POS_CONV}weight, or its weight-norm g/v pair)")
    return state_dict


def from_hf_wav2vec2(
    state_dict: Mapping[str, np.ndarray],
    config: Mapping[str, Any],
    *,
    compute: Compute = Compute(),
    source: str = "state dict",
) -> Wav2Vec2Model:
    """A transformers wav2vec2 state dict (key -> numpy; bare model, CTC or pretraining) + its config.json dict."""
    model_config = Wav2Vec2Config.from_hf(config, source=source)
    model = shapes_only(lambda: Wav2Vec2Model(model_config, compute=compute, rngs=nnx.Rngs(0)))
    return load_state_dict(model, _model_keys(state_dict, source), source=source)


def from_hf_wav2vec2_folder(folder: str | Path, *, compute: Compute = Compute()) -> Wav2Vec2Model:
    """A transformers wav2vec2 folder (config.json + model.safetensors or pytorch_model.bin) -> `Wav2Vec2Model`."""
    config, state_dict = read_transformers_folder(folder)
    return from_hf_wav2vec2(state_dict, config, compute=compute, source=str(folder))
