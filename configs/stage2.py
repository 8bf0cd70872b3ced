"""EMO stage 2, video: temporal and audio layers train on 4 motion + 12 frame clips (batch 4).

SD1.5 size by default, `:tiny` for the CPU size. `emo-jax info --config configs/stage2.py` prints the parameter
counts of this model (built abstractly: no weights allocated).
"""

from emo_jax.config import emo_stage_config


def get_config(arg=None):
    return emo_stage_config(2, size=arg or "sd15")
