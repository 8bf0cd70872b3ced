"""EMO stage 1, image: ReferenceNet, backbone and face locator train on single frames (batch 48).

SD1.5 size by default, `:tiny` for the CPU size. `emo-jax info --config configs/stage1.py` prints the parameter
counts of this model (built abstractly: no weights allocated).
"""

from emo_jax.config import emo_stage_config


def get_config(arg=None):
    return emo_stage_config(1, size=arg or "sd15")
