"""Reading Hugging Face config.json dicts (diffusers, transformers) into our config dataclasses, and back."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

# For a key whose other values select features we lack: the accepted values, or a test of the value.
Supported = tuple[Any, ...] | Callable[[Any], bool]


def read_hf_config(
    config_cls: type,
    config: Mapping[str, Any],
    *,
    supported_only: Mapping[str, Supported],
    no_effect: set[str],
    source: str,
) -> dict[str, Any]:
    """The `config_cls` fields found in a diffusers or transformers config.json dict.

    A key in `supported_only` with another value raises ValueError naming `source`, the key and the value;
    keys in `no_effect` and '_'-prefixed bookkeeping are skipped; any other key is logged and ignored.
    """
    fields = {f.name for f in dataclasses.fields(config_cls)}
    kwargs = {}
    for key, value in config.items():
        if key in fields:
            kwargs[key] = value
        elif key in supported_only:
            accepted = supported_only[key]
            if not (accepted(value) if callable(accepted) else value in accepted):
                hint = "" if callable(accepted) else f" (supported: {accepted})"
                raise ValueError(f"{source}: {key}={value!r} is not supported by emo_jax's {config_cls.__name__}{hint}")
        elif key not in no_effect and not key.startswith("_"):
            log.warning("%s: ignoring unknown %s key %r=%r", source, config_cls.__name__, key, value)
    return kwargs


def to_diffusers_config(config: Any, class_name: str) -> dict[str, Any]:
    """A config dataclass as the config.json dict of the diffusers class `class_name` (tuples as lists)."""
    d = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
    return {"_class_name": class_name, **d}
