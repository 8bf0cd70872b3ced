"""Loading ml_collections config files: `path/to/config.py` or `path/to/config.py:arg` (big_vision style)."""

from __future__ import annotations

import importlib.util
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
    """Imports the file and returns its `get_config(arg)` (or `get_config()` when no arg is given)."""
    path, arg = resolve(spec)
    module_spec = importlib.util.spec_from_file_location(f"emo_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise AttributeError(f"{path}: a config file must define get_config()")
    return module.get_config(arg) if arg is not None else module.get_config()


# What each EMO training stage updates (paper, section 3.3), as patterns over parameter paths.
STAGE_TRAINABLE = {
    1: [r"^reference_net\.", r"^backbone\.", r"^face_locator\."],
    2: [r"^backbone\..*motion_modules\.", r"^backbone\..*(attn_audio|norm_audio)\.", r"^audio_projection\."],
    3: [r"^backbone\..*motion_modules\.", r"^speed_encoder\."],
}
# Paper's settings per stage: clip frames, motion frames, batch (the learning rate is 1e-5 throughout).
_STAGE_DATA = {1: (1, 0, 48), 2: (12, 4, 4), 3: (12, 4, 4)}


def emo_stage_config(stage: int, size: str = "sd15") -> ml_collections.ConfigDict:
    """The config of an EMO training stage; `size` 'sd15' (the paper's) or 'tiny' (CPU)."""
    num_frames, num_motion_frames, batch = _STAGE_DATA[stage]
    config = ml_collections.ConfigDict()
    config.model = dict(size=size, stage=stage, reference_attention="concat_self")
    config.trainable = STAGE_TRAINABLE[stage]
    config.num_frames = num_frames
    config.num_motion_frames = num_motion_frames
    config.batch_size = batch
    config.learning_rate = 1e-5
    config.audio = (
        dict(encoder="wav2vec2", wav2vec2_path="", layers="all", window=2, fps=25)
        if size == "sd15"
        else dict(encoder="logmel", n_mels=80, window=2, fps=25)
    )
    return config
