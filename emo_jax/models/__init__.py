"""Flax NNX models, channels-last, with parameter names that mirror diffusers / transformers."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
from flax import nnx

from emo_jax.models.layers import Compute
from emo_jax.models.temporal import MotionConfig
from emo_jax.models.unet import UNet, UNetConfig
from emo_jax.models.vae import AutoencoderKL, AutoencoderKLConfig, DiagonalGaussian

# diffusers `_class_name` -> (our model, its config class).
MODEL_CLASSES = {
    "UNet2DConditionModel": (UNet, UNetConfig),
    "UNetMotionModel": (UNet, UNetConfig),
    "AutoencoderKL": (AutoencoderKL, AutoencoderKLConfig),
}


def abstract_model(config: Mapping[str, Any], *, compute: Compute = Compute(), source: str = "config") -> nnx.Module:
    """The model a diffusers config.json dict describes, built with `nnx.eval_shape`: shapes only, no weights."""
    class_name = config.get("_class_name")
    if class_name not in MODEL_CLASSES:
        raise ValueError(f"{source}: _class_name={class_name!r}; emo_jax converts {sorted(MODEL_CLASSES)}")
    model_cls, config_cls = MODEL_CLASSES[class_name]
    model_config = config_cls.from_diffusers(config, source=source)
    return nnx.eval_shape(lambda: model_cls(model_config, compute=compute, rngs=nnx.Rngs(0)))


def param_counts(model: nnx.Module, paths: Collection[str] | None = None) -> dict[str, int]:
    """Parameters per top-level part, optionally only those whose dotted path is in `paths` (works on
    `nnx.eval_shape` models: nothing is allocated). The total is `sum(param_counts(model).values())`."""
    counts: dict[str, int] = {}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        if paths is None or ".".join(str(p) for p in path) in paths:
            counts[str(path[0])] = counts.get(str(path[0]), 0) + int(np.prod(var.shape))
    return counts


__all__ = [
    "MODEL_CLASSES",
    "AutoencoderKL",
    "AutoencoderKLConfig",
    "Compute",
    "DiagonalGaussian",
    "MotionConfig",
    "UNet",
    "UNetConfig",
    "abstract_model",
    "param_counts",
]
