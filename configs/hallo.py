"""Hallo's released model (fudan-generative-vision/hallo) as an emo-jax config: the layout `from_hallo` loads
`net.pth` into, and the settings of Hallo's `configs/inference/default.yaml` and `scripts/inference.py`.

`:float16` (the default, Hallo's `weight_dtype`), `:bfloat16` or `:float32` picks the compute dtype (parameters
stay fp32). Hallo samples 16 frames per clip chained by 2 motion frames at 512 px and 25 fps, with DDIM over 40
trailing steps of a v-prediction, zero-terminal-SNR schedule with linear betas 0.00085-0.012, and one guidance
scale of 3.5 whose unconditional branch drops every condition (guidance_audio = guidance_reference).

    emo-jax info --config configs/hallo.py:bfloat16
"""

import emo_base

from emo_jax.convert.hallo import hallo_config

# The SD1.5 UNet (runwayml/stable-diffusion-v1-5 unet/config.json) that Hallo's two UNets are built from.
SD15_UNET = dict(
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    attention_head_dim=8,
    cross_attention_dim=768,
    norm_num_groups=32,
    in_channels=4,
    out_channels=4,
)
DTYPES = ("float16", "bfloat16", "float32")


def get_config(arg=None):
    dtype = arg or "float16"
    if dtype not in DTYPES:
        raise ValueError(f"configs/hallo.py:{dtype}: the compute dtype must be one of {DTYPES}")
    c = emo_base.base("sd15")
    c.model = hallo_config(SD15_UNET, source="configs/hallo.py SD15_UNET").to_dict()
    c.compute.dtype = dtype
    c.schedule.update(beta_schedule="linear", rescale_betas_zero_snr=True)
    c.data.update(num_frames=16, num_motion_frames=2, size=512, fps=25.0)
    c.audio.update(encoder="wav2vec2", layers="all")  # wav2vec2-base-960h, its 12 transformer layers
    c.sample.update(sampler="ddim", steps=40, eta=0.0, guidance_audio=3.5, guidance_reference=3.5)
    c.trainable = []  # converted, not trained here
    return c
