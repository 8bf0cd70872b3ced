"""Model weights on disk as Orbax checkpoints, next to the diffusers-style config.json that describes them.

Layout of a saved model folder:
    config.json   the diffusers config dict (with `_class_name`), so `load_model` can rebuild the model
    params/       Orbax checkpoint of `nnx.state(model, nnx.Param)`
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

import jax
import orbax.checkpoint as ocp
from flax import nnx

from emo_jax.models import AutoencoderKL, Compute, UNet, abstract_model, kernels_in
from emo_jax.paths import location

PARAMS_DIR = "params"
M = TypeVar("M", bound=nnx.Module)


def save_model(directory: str | Path, model: UNet | AutoencoderKL) -> Path:
    """Writes `model`'s config.json and parameters under `directory` (created; an existing save is replaced)."""
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(model.config.to_diffusers(), indent=2) + "\n")
    save_params(directory / PARAMS_DIR, model)
    return directory


def save_params(directory: str | Path, model: nnx.Module) -> None:
    """`nnx.state(model, nnx.Param)` as an Orbax checkpoint at `directory` (an existing one is replaced)."""
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(Path(directory).absolute(), nnx.state(model, nnx.Param), force=True)


def restore_params(directory: str | Path, model: M, *, kernel_dtype=None) -> M:
    """`model` (abstract, from `models.shapes_only`) with its parameters restored from `save_params`' checkpoint
    at `directory` (local or gs://), on the first device. kernel_dtype: conv and dense kernels are cast to it as
    they are read, where it is narrower (`models.kernels_in`: what sampling in that compute dtype keeps), so the
    device never holds the wider copy."""
    graphdef, abstract_params, rest = nnx.split(model, nnx.Param, ...)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract_params)
    if kernel_dtype is not None:
        target = kernels_in(kernel_dtype, target)
    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(directory, target)
    return nnx.merge(graphdef, params, rest)


def load_model(directory: str | Path, *, compute: Compute = Compute()) -> UNet | AutoencoderKL:
    """Rebuilds the model saved by `save_model` (a local folder or gs://...; abstractly, then restores its
    parameters into it)."""
    directory = location(directory)
    config_path = directory / "config.json"
    if not config_path.is_file() or not (directory / PARAMS_DIR).is_dir():
        raise FileNotFoundError(f"{directory}: not a saved emo_jax model (needs config.json and {PARAMS_DIR}/)")
    model = abstract_model(json.loads(config_path.read_text()), compute=compute, source=str(config_path))
    return restore_params(directory / PARAMS_DIR, model)
