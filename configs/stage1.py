"""EMO stage 1, image: ReferenceNet, backbone and face locator learn from single frames (paper, section 3.3).

One target frame, another frame of the same clip as reference, the face mask the union of the face boxes over
a clip-length window around the target; no temporal, audio or speed layers. Initialised from SD1.5 (a diffusers
UNet folder), batch 48, learning rate 1e-5. `:tiny` is the same stage at CPU size (tests, benchmarks).

    emo-jax train --config configs/stage1.py --config.init.sd15_unet=sd15/unet \\
        --config.vae.checkpoint=converted/sd15/vae --config.data.data_dir=tfds --workdir runs/stage1
"""

import emo_base


def get_config(arg=None):
    size = arg or "sd15"
    c = emo_base.base(size)
    c.stage = 1
    c.model = emo_base.model(size, temporal=False, audio=False, speed=False)
    c.trainable = [r"^reference_net\.", r"^backbone\.", r"^face_locator\."]
    c.data.num_frames, c.data.num_motion_frames, c.data.batch_size = 1, 0, 48
    c.dropout = dict(reference=0.05, audio=0.0, both=0.0, first_clip=0.0)
    return emo_base.cpu_data(c) if size == "tiny" else c
