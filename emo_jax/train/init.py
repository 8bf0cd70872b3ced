"""The weights a training stage starts from (config.init), loaded strictly.

  * `sd15_unet`: a diffusers SD1.5 UNet (folder, or a .safetensors/.bin file) fills ReferenceNet and backbone
    (`convert.emo.emo_from_diffusers`: stage 1);
  * `checkpoint`: the previous stage's run (workdir or step folder) fills every parameter the two models share;
  * `motion_adapter`: an AnimateDiff motion adapter fills the backbone's temporal modules (stage 2);
  * `fresh`: patterns of the parameters that stay at their initialisation (layers new in this stage).
Everything else is an error that names the source and its first bad keys: a parameter nothing fills, a saved
weight the model has no place for, or one of the wrong shape.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from emo_jax.convert.animatediff import from_animatediff_motion_adapter
from emo_jax.convert.emo import emo_from_diffusers
from emo_jax.convert.files import read_diffusers_folder, read_state_dict
from emo_jax.convert.state_dict import ConversionError, format_keys
from emo_jax.models.emo import EMO
from emo_jax.paths import local_copy
from emo_jax.train.checkpointing import read_stage_params

log = logging.getLogger(__name__)


def _read_weights(path: str) -> dict[str, np.ndarray]:
    p = Path(local_copy(path))
    return read_diffusers_folder(p)[1] if p.is_dir() else read_state_dict(p)


def _dotted_params(model: nnx.Module) -> dict[str, nnx.Variable]:
    return {".".join(str(k) for k in path): var for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def load_stage(model: EMO, saved: dict[str, np.ndarray], *, keep: list[str], source: str) -> dict[str, int]:
    """Copies every saved weight into `model`. Parameters the save lacks must match a `keep` pattern (they keep
    their current values); anything else raises ConversionError. -> counts of loaded and kept parameters."""
    params = _dotted_params(model)
    unexpected = [k for k in saved if k not in params]
    misshapen = [
        f"{k}: {saved[k].shape} saved, model wants {tuple(params[k].shape)}"
        for k in saved
        if k in params and tuple(saved[k].shape) != tuple(params[k].shape)
    ]
    missing = [k for k in params if k not in saved and not any(re.search(p, k) for p in keep)]
    if unexpected or misshapen or missing:
        parts = [f"{source}: the saved stage does not fit this model."]
        if missing:
            parts.append(
                format_keys("model parameters it does not hold (and no init.fresh pattern or adapter fills)", missing)
            )
        if unexpected:
            parts.append(format_keys("saved weights this model has no parameter for", unexpected))
        if misshapen:
            parts.append(format_keys("weights with the wrong shape", misshapen))
        raise ConversionError("\n".join(parts))
    flat = []
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        key = ".".join(str(k) for k in path)
        flat.append((path, var.replace(jnp.asarray(saved[key], var.dtype)) if key in saved else var))
    nnx.update(model, nnx.from_flat_state(flat))
    return {"loaded": len(saved), "kept": len(params) - len(saved)}


def initialise(model: EMO, config: ml_collections.ConfigDict) -> list[str]:
    """Fills `model` (concrete, freshly initialised) from config.init; returns what it did, one line each."""
    i = config.init
    done = []
    adapter = _read_weights(i.motion_adapter) if i.motion_adapter else None
    if i.sd15_unet and i.checkpoint:
        raise ValueError("config.init: give sd15_unet (stage 1) or checkpoint (later stages), not both")
    if i.sd15_unet:
        emo_from_diffusers(model, _read_weights(i.sd15_unet), motion_adapter=adapter, source=i.sd15_unet)
        done.append(f"ReferenceNet and backbone from SD UNet {i.sd15_unet}")
        if adapter is not None:
            done.append(f"temporal modules from motion adapter {i.motion_adapter}")
    elif i.checkpoint:
        keep = list(i.fresh)
        if adapter is not None:  # the adapter fills the temporal modules after this
            keep.append(r"\.motion_modules\.")
        counts = load_stage(model, read_stage_params(i.checkpoint), keep=keep, source=i.checkpoint)
        done.append(f"{counts['loaded']} weights from the previous stage {i.checkpoint}")
        if adapter is not None:
            model.backbone = from_animatediff_motion_adapter(adapter, model.backbone, source=i.motion_adapter)
            done.append(f"temporal modules from motion adapter {i.motion_adapter}")
    elif adapter is not None:
        model.backbone = from_animatediff_motion_adapter(adapter, model.backbone, source=i.motion_adapter)
        done.append(f"temporal modules from motion adapter {i.motion_adapter}")
    fresh = [k for k in _dotted_params(model) if any(re.search(p, k) for p in i.fresh)]
    if fresh:
        done.append(f"{len(fresh)} parameters fresh (init.fresh: {', '.join(i.fresh)})")
    if not done:
        done.append("every parameter at its random initialisation (config.init is empty)")
    for line in done:
        log.info("init: %s", line)
    return done
