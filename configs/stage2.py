"""EMO stage 2, video: temporal and audio layers learn on 4 motion + 12 frame clips (paper, section 3.3).

Starts from a stage-1 run (`init.checkpoint`) with the temporal modules from an AnimateDiff motion adapter
(`init.motion_adapter`); audio layers start fresh. Batch 4, learning rate 1e-5. `:tiny`: CPU size.

    emo-jax train --config configs/stage2.py --config.init.checkpoint=runs/stage1 \\
        --config.init.motion_adapter=mm_sd_v15_v2.ckpt --config.vae.checkpoint=converted/sd15/vae \\
        --config.data.data_dir=tfds --config.data.report=prep/report.json --workdir runs/stage2
"""

import emo_base


def get_config(arg=None):
    size = arg or "sd15"
    c = emo_base.base(size)
    c.stage = 2
    c.model = emo_base.model(size, temporal=True, audio=True, speed=False)
    c.trainable = [r"^backbone\..*motion_modules\.", r"^backbone\..*(attn_audio|norm_audio)\.", r"^audio_projection\."]
    c.init.fresh = [r"(attn_audio|norm_audio)\.", r"^audio_projection\."]
    return emo_base.cpu_data(c) if size == "tiny" else c
