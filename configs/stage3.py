"""EMO stage 3, speed: temporal layers and the speed encoder learn; audio layers frozen (paper, section 3.3).

Starts from a stage-2 run (`init.checkpoint`); the speed layers start fresh with buckets measured on the data
(`data.report`, the preprocessing report.json). Batch 4, learning rate 1e-5. `:tiny`: CPU size.

    emo-jax train --config configs/stage3.py --config.init.checkpoint=runs/stage2 \\
        --config.vae.checkpoint=converted/sd15/vae --config.data.data_dir=tfds \\
        --config.data.report=prep/report.json --workdir runs/stage3
"""

import emo_base


def get_config(arg=None):
    size = arg or "sd15"
    c = emo_base.base(size)
    c.stage = 3
    c.model = emo_base.model(size, temporal=True, audio=True, speed=True)
    c.trainable = [r"^backbone\..*motion_modules\.", r"^speed_encoder\."]
    c.init.fresh = [r"(attn_speed|norm_speed)\.", r"^speed_encoder\."]
    return emo_base.cpu_data(c) if size == "tiny" else c
