"""Loading ml_collections config files: `path/to/config.py` or `path/to/config.py:arg` (big_vision style)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import ml_collections

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def resolve(spec: str) -> tuple[Path, str | None]:
    """'configs/tiny.py:arg' -> (existing file, 'arg'); a bare name such as 'tiny' means the bundled configs/tiny.py."""
    path_str, _, arg = spec.partition(":")
    candidates = [Path(path_str)]
    if not path_str.endswith(".py"):
        candidates.append(REPO_CONFIGS / f"{path_str}.py")
    elif not Path(path_str).is_absolute():
        candidates.append(REPO_CONFIGS.parent / path_str)
    for path in candidates:
        if path.is_file():
            return path, arg or None
    raise FileNotFoundError(f"config {spec!r}: no such file (looked at {', '.join(map(str, candidates))})")


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Imports the file and returns its `get_config(arg)` (or `get_config()` when no arg is given)."""
    path, arg = resolve(spec)
    module_spec = importlib.util.spec_from_file_location(f"emo_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise AttributeError(f"{path}: a config file must define get_config()")
    return module.get_config(arg) if arg is not None else module.get_config()
