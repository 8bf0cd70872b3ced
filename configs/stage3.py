"""EMO stage 3, speed: temporal layers and the speed encoder train; audio layers frozen (batch 4).

SD1.5 size by default, `:tiny` for the CPU size. `emo-jax info --config configs/stage3.py` prints the parameter
counts of this model (built abstractly: no weights allocated).
"""

from emo_jax.config import emo_stage_config


def get_config(arg=None):
    return emo_stage_config(3, size=arg or "sd15")
