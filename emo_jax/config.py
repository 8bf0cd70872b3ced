"""Loading ml_collections config files: `path/to/config.py` or `path/to/config.py:arg` (big_vision style)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import ml_collections

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def resolve(spec: str) -> tuple[Path, str | None]:
    """'configs/tiny.py:arg' -> (existing file, 'arg'). Looked up as given, then from the repository root, then
    in the bundled configs/ ('tiny' and 'tiny.py' both mean configs/tiny.py)."""
    path_str, _, arg = spec.partition(":")
    name = path_str if path_str.endswith(".py") else f"{path_str}.py"
    candidates = list(dict.fromkeys([Path(path_str), REPO_CONFIGS.parent / path_str, REPO_CONFIGS / name]))
    for path in candidates:
        if path.is_file():
            return path, arg or None
    raise FileNotFoundError(f"config {spec!r}: no such file (looked at {', '.join(map(str, candidates))})")


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Imports the file and returns its `get_config(arg)` (or `get_config()` when no arg is given); the file's
    folder is importable meanwhile, so configs share a module of defaults."""
    path, arg = resolve(spec)
    module_spec = importlib.util.spec_from_file_location(f"emo_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.path.insert(0, str(path.parent))  # a config imports its siblings (configs/emo_base.py)
    try:
        module_spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    if not hasattr(module, "get_config"):
        raise AttributeError(f"{path}: a config file must define get_config()")
    return module.get_config(arg) if arg is not None else module.get_config()
