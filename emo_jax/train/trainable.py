"""Which parameters a training stage updates: a list of regular expressions over parameter paths.

A path is the dotted attribute path of a parameter, e.g. `backbone.down_blocks.0.motion_modules.1.proj_out.kernel`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from flax import nnx


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def trainable_filter(patterns: Sequence[str]):
    """An NNX filter: the `nnx.Param`s whose path matches any pattern (`re.search`)."""
    compiled = [re.compile(p) for p in patterns]

    def is_trainable(path: tuple, value) -> bool:
        return isinstance(value, nnx.Param) and any(c.search(_dotted(path)) for c in compiled)

    return is_trainable


def trainable_paths(model: nnx.Module, patterns: Sequence[str]) -> list[str]:
    """The dotted paths of the parameters `patterns` select; a pattern that selects nothing is an error
    (a typo would otherwise freeze what was meant to train)."""
    params = [_dotted(path) for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))]
    for pattern in patterns:
        if not any(re.search(pattern, p) for p in params):
            raise ValueError(f"trainable pattern {pattern!r} matches no parameter")
    return [p for p in params if any(re.search(pattern, p) for pattern in patterns)]
