"""Loading ml_collections config files: `path/to/config.py` or `path/to/config.py:arg` (big_vision style)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import ml_collections

REPO_ROOT = Path(__file__).resolve().parents[1]  # a checkout's root (the package's parent folder)
# The repository's configs/ inside the package: a link to ../configs in a checkout, a copy in a wheel, so
# `--config tiny` or `configs/hallo.py` work where emo-jax was pip-installed too.
PACKAGE_CONFIGS = Path(__file__).parent / "configs"


def resolve(spec: str) -> tuple[Path, str | None]:
    """'configs/tiny.py:arg' -> (existing file, 'arg'). Looked up as given, then from the repository root, then
    in the package's configs/ ('configs/tiny.py', 'tiny' and 'tiny.py' all mean configs/tiny.py)."""
    path_str, _, arg = spec.partition(":")
    name = path_str if path_str.endswith(".py") else f"{path_str}.py"
    candidates = [Path(path_str), REPO_ROOT / path_str, PACKAGE_CONFIGS.parent / path_str, PACKAGE_CONFIGS / name]
    candidates = list(dict.fromkeys(candidates))
    for path in candidates:
        if path.is_file():
            return path, arg or None
    raise FileNotFoundError(f"config {spec!r}: no such file (looked at {', '.join(map(str, candidates))})")


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Imports the file and returns its `get_config(arg)` (or `get_config()` when no arg is given); the file's
    folder is importable meanwhile, so configs share a module of defaults (read afresh on every load)."""
    path, arg = resolve(spec)
    module_spec = importlib.util.spec_from_file_location(f"emo_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.path.insert(0, str(path.parent))  # a config imports its siblings (configs/emo_base.py)
    before = set(sys.modules)
    try:
        module_spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
        for name in set(sys.modules) - before:  # siblings are read afresh by the next load, from its own folder
            if Path(getattr(sys.modules[name], "__file__", None) or "/").parent == path.parent:
                del sys.modules[name]
    if not hasattr(module, "get_config"):
        raise AttributeError(f"{path}: a config file must define get_config()")
    return module.get_config(arg) if arg is not None else module.get_config()


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[str]) -> ml_collections.ConfigDict:
    """`--config.a.b=value` overrides (ml_collections `config_flags` style), applied in place.

    The value is read as the type the entry already has: str as given, bool from true/false/1/0, numbers,
    and tuples/lists/None as Python literals ('(1,8,1)', 'None'). An unknown key is an error naming it."""
    for item in overrides:
        if not item.startswith("--config.") or "=" not in item:
            raise ValueError(f"unknown argument {item!r}: overrides look like --config.train.steps=100")
        dotted, value = item[len("--config.") :].split("=", 1)
        parent, _, name = dotted.rpartition(".")
        node = config
        for part in filter(None, parent.split(".")):
            if part not in node:
                raise ValueError(f"--config.{dotted}: the config has no entry {part!r}")
            node = node[part]
        if name not in node:
            raise ValueError(f"--config.{dotted}: the config has no entry {name!r}")
        node[name] = _parse(value, node[name], dotted)
    return config


def _parse(text: str, current, key: str):
    import ast

    if isinstance(current, str):
        return text
    if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"--config.{key}: expected true or false, got {text!r}")
        return text.lower() in ("true", "1")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if current is None:
            return text
        raise ValueError(f"--config.{key}: cannot read {text!r} as {type(current).__name__}") from None
    if isinstance(current, float) and isinstance(value, int):
        value = float(value)
    return value
