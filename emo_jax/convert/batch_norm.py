"""Loading a PyTorch state dict that holds batch-norm running statistics (`running_mean`, `running_var`) as
well as parameters: the evaluation networks (SyncNet, ArcFace), which run with stored statistics."""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from emo_jax.convert.state_dict import ConversionError, format_keys, load_state_dict

_STATISTICS = {"running_mean": "mean", "running_var": "var"}
_IGNORED = ("num_batches_tracked",)  # a training counter; evaluation does not use it


def load_with_statistics(model: nnx.Module, state_dict: Mapping[str, np.ndarray], *, source: str) -> nnx.Module:
    """`model` with every `nnx.Param` (by `load_state_dict`'s rules) and every `nnx.BatchStat` (`x.running_mean`
    -> `x.mean`, `x.running_var` -> `x.var`) from `state_dict`. Strict: one `ConversionError` lists every
    missing, stray or misshapen key (`num_batches_tracked` is ignored on purpose)."""

    def parameters_only(key: str) -> str | None:
        return None if key.rpartition(".")[2] in (*_STATISTICS, *_IGNORED) else key

    stats = {".".join(map(str, p)): (p, v) for p, v in nnx.to_flat_state(nnx.state(model, nnx.BatchStat))}
    filled, unexpected = {}, []
    for key, value in state_dict.items():
        stem, _, leaf = key.rpartition(".")
        if leaf not in _STATISTICS:
            continue
        target = f"{stem}.{_STATISTICS[leaf]}"
        if target not in stats or tuple(stats[target][1].shape) != np.shape(value):
            unexpected.append(f"{key} {np.shape(value)}")
            continue
        path, variable = stats[target]
        filled[target] = (path, variable.replace(jnp.asarray(value, jnp.float32)))
    problems = []
    if missing := sorted(set(stats) - set(filled)):
        problems.append(format_keys("batch-norm statistics with no key", missing))
    if unexpected:
        problems.append(format_keys("statistics keys the model has no place for (or the wrong shape)", unexpected))
    try:
        model = load_state_dict(model, state_dict, source=source, rename=parameters_only)
    except ConversionError as error:  # one error lists every bad key
        raise ConversionError("\n".join([str(error), *problems])) from None
    if problems:
        raise ConversionError("\n".join([f"{source}: the state dict does not match the model.", *problems]))
    nnx.update(model, nnx.from_flat_state(list(filled.values())))
    return model
