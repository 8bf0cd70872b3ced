"""Flax NNX models, channels-last, with parameter names that mirror diffusers / transformers."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from emo_jax.models.layers import Compute
from emo_jax.models.temporal import MotionConfig
from emo_jax.models.unet import UNet, UNetConfig
from emo_jax.models.vae import AutoencoderKL, AutoencoderKLConfig, DiagonalGaussian

M = TypeVar("M", bound=nnx.Module)

# diffusers `_class_name` -> (our model, its config class).
MODEL_CLASSES = {
    "UNet2DConditionModel": (UNet, UNetConfig),
    "UNetMotionModel": (UNet, UNetConfig),
    "AutoencoderKL": (AutoencoderKL, AutoencoderKLConfig),
}


def shapes_only(build: Callable[[], M]) -> M:
    """`build()`'s module with shape/dtype stand-ins for its arrays (`nnx.eval_shape`): nothing is allocated.

    Built with reference variables, then turned back into plain ones (same graph and state as `nnx.eval_shape`
    alone). Why: every `rngs.params()` updates an RNG counter, and under a trace flax's `Variable.set_value`
    asks the traced value for its sharding, for which JAX writes an error message by searching the whole trace
    so far: quadratic in the number of layers (Hallo's two SD1.5-layout UNets: minutes). A reference variable
    is updated in place, without that question."""

    def build_plain() -> M:
        with nnx.var_defaults(ref=True):
            module = build()
        return nnx.with_vars(module, ref=False)

    return nnx.eval_shape(build_plain)


def kernels_in(dtype, state: nnx.State) -> nnx.State:
    """The conv and dense kernels of `state` stored in `dtype` where it is narrower than theirs: those layers cast
    kernels to their compute dtype at every use, so sampling gives the same frames from half the weight memory.
    Biases and norm parameters stay as they are (arrays or, for abstract models, ShapeDtypeStructs)."""
    dtype = jnp.dtype(dtype)

    def cast(path, x):
        if path[-2:] != (jax.tree_util.DictKey("kernel"), jax.tree_util.GetAttrKey("value")):
            return x
        if jnp.dtype(x.dtype).itemsize <= dtype.itemsize:
            return x
        if isinstance(x, jax.ShapeDtypeStruct):
            return jax.ShapeDtypeStruct(x.shape, dtype, sharding=x.sharding)
        return x.astype(dtype)

    return jax.tree_util.tree_map_with_path(cast, state)


def abstract_model(config: Mapping[str, Any], *, compute: Compute = Compute(), source: str = "config") -> nnx.Module:
    """The model a diffusers config.json dict describes, built by `shapes_only`: no weights."""
    class_name = config.get("_class_name")
    if class_name not in MODEL_CLASSES:
        raise ValueError(f"{source}: _class_name={class_name!r}; emo_jax converts {sorted(MODEL_CLASSES)}")
    model_cls, config_cls = MODEL_CLASSES[class_name]
    model_config = config_cls.from_diffusers(config, source=source)
    return shapes_only(lambda: model_cls(model_config, compute=compute, rngs=nnx.Rngs(0)))


def param_counts(model: nnx.Module, paths: Collection[str] | None = None) -> dict[str, int]:
    """Parameters per top-level part, optionally only those whose dotted path is in `paths` (works on
    `shapes_only` models: nothing is allocated). The total is `sum(param_counts(model).values())`."""
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
    "shapes_only",
]
