"""The tiny EMO models the tests build, read from the bundled configs (the one place a model is described)."""

from __future__ import annotations

from emo_jax.config import load_config
from emo_jax.models.emo import EMOConfig


def emo_config(stage: int = 3, **changes) -> EMOConfig:
    """The `configs/stage<stage>.py:tiny` model (stage 0: `configs/tiny.py`), with `changes` to its model dict
    (e.g. reference_attention='cross' reaches the backbone)."""
    config = load_config("tiny.py" if stage == 0 else f"stage{stage}.py:tiny")
    model = config.model.to_dict()
    if "reference_attention" in changes:
        model["backbone"]["reference_attention"] = changes.pop("reference_attention")
    return EMOConfig.from_dict({**model, **changes})


def stage_config(stage: int):
    return load_config("tiny.py" if stage == 0 else f"stage{stage}.py:tiny")
