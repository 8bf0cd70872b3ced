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
    c.motion_augment = dict(noise_std=0.02, patch_drop=0.1, patch_size=16)
    if size == "tiny":
        c.audio.encoder = "logmel"
        c.data.size, c.data.batch_size, c.data.num_frames, c.data.num_motion_frames = 64, 2, 4, 2
        c.model.num_motion_frames = 2
        c.motion_augment.patch_size = 8
    return c
