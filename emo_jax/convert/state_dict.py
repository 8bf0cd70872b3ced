"""Copy a PyTorch-layout state dict into an NNX module whose attribute names mirror the PyTorch one.

The mapping is a few rules, never a per-model table:
  * key `a.0.b.weight` -> path ('a', 0, 'b', 'kernel' | 'scale'); other leaf names map to themselves;
  * conv weights [O, I, *k] -> [*k, I, O]; linear weights [O, I] -> [I, O];
  * a 1x1 conv weight [O, I, 1, 1] loaded into a dense layer -> [I, O] (channels-last 1x1 conv == matmul).
Every state dict key must land on exactly one parameter and every parameter must be filled: anything
else raises `ConversionError` listing the keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

_LIST_PREVIEW = 20


class ConversionError(ValueError):
    """A state dict does not match the model it is loaded into."""


def _path_key(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def _to_flax_layout(array: np.ndarray, target_shape: tuple[int, ...]) -> np.ndarray:
    if array.ndim >= 3 and len(target_shape) == array.ndim:  # conv [O, I, *k] -> [*k, I, O]
        return array.transpose(*range(2, array.ndim), 1, 0)
    if array.ndim == 4 and len(target_shape) == 2 and array.shape[2:] == (1, 1):  # 1x1 conv -> dense
        return array[:, :, 0, 0].T
    if array.ndim == 2 and len(target_shape) == 2:  # linear [O, I] -> [I, O]
        return array.T
    return array


def format_keys(title: str, keys: list[str]) -> str:
    shown = "\n    ".join(sorted(keys)[:_LIST_PREVIEW])
    more = f"\n    ... and {len(keys) - _LIST_PREVIEW} more" if len(keys) > _LIST_PREVIEW else ""
    return f"  {len(keys)} {title}:\n    {shown}{more}"


def load_state_dict(
    module: nnx.Module,
    state_dict: Mapping[str, np.ndarray],
    *,
    source: str,
    rename: Callable[[str], str | None] | None = None,
    only: Callable[[str], bool] | None = None,
) -> nnx.Module:
    """Returns `module` (concrete or from `models.shapes_only`) with every `nnx.Param` taken from `state_dict`.

    state_dict: PyTorch key -> array in PyTorch layout (numpy, any float dtype; cast to each param's dtype).
    source: named in errors (a file or folder path).
    rename: optional map of a PyTorch key to the mirrored key (None drops a key on purpose, e.g. buffers).
    only: optional test of a parameter's dotted path: then only those parameters are loaded (and all of them
      must be), the others keep their values (so `module` must be concrete there).
    """
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    targets = {
        _path_key(path): (path, var) for path, var in nnx.to_flat_state(params) if only is None or only(_path_key(path))
    }

    filled: dict[tuple, jnp.ndarray] = {}
    unexpected, mismatched = [], []
    misshapen: set[tuple] = set()
    for key, array in state_dict.items():
        name = rename(key) if rename else key
        if name is None:
            continue
        stem, _, leaf = name.rpartition(".")
        candidates = [f"{stem}.kernel", f"{stem}.scale"] if leaf == "weight" else [name]
        target = next((c for c in candidates if c in targets), None)
        if target is None:
            unexpected.append(key)
            continue
        path, var = targets[target]
        value = _to_flax_layout(np.asarray(array), tuple(var.shape))
        if tuple(value.shape) != tuple(var.shape):
            mismatched.append(f"{key}: {tuple(np.shape(array))} in the file, model {target} wants {tuple(var.shape)}")
            misshapen.add(path)
            continue
        if path in filled:
            unexpected.append(f"{key} (a second key for {target})")
            continue
        filled[path] = jnp.asarray(value, dtype=var.dtype)

    missing = [k for k, (path, _) in targets.items() if path not in filled and path not in misshapen]
    if missing or unexpected or mismatched:
        parts = [f"{source}: the state dict does not match the model."]
        if missing:
            parts.append(format_keys("model parameters with no key in the state dict", missing))
        if unexpected:
            parts.append(format_keys("state dict keys the model has no parameter for", unexpected))
        if mismatched:
            parts.append(format_keys("keys with the wrong shape", mismatched))
        raise ConversionError("\n".join(parts))

    new_params = nnx.from_flat_state(
        [(path, var.replace(filled[path]) if path in filled else var) for path, var in nnx.to_flat_state(params)]
    )
    return nnx.merge(graphdef, new_params, rest)
