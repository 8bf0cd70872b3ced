"""The tiny models the tests build: EMO models read from the bundled configs (the one place a model is
described), and the SD-layout UNet and VAE whose diffusers twins the parity tests build."""

from __future__ import annotations

from emo_jax.config import load_config
from emo_jax.models import AutoencoderKLConfig, UNetConfig
from emo_jax.models.emo import EMOConfig

# A tiny SD-layout UNet (2 stages, text cross-attention 16) and VAE: the parity tests' diffusers twins.
TINY_UNET = UNetConfig(
    block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=1,
    attention_head_dim=2,
    cross_attention_dim=16,
    norm_num_groups=8,
)
TINY_VAE = AutoencoderKLConfig(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8)


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


def micro_config(stage: int = 0, **data):
    """A stage config shrunk until XLA compiles its training step in seconds: one UNet level of 32 channels,
    16 px frames, a one-level VAE (no downsampling) and a face locator to match; stage 0 (configs/tiny.py) with
    eps prediction and the plain min-SNR loss; everything else as the config says. `data` overrides config.data
    entries."""
    config = stage_config(stage)
    if stage == 0:  # the tiny config's demo-model recipe aside: the tests train the published objective
        config.model.prediction_type = "epsilon"
        config.schedule.rescale_betas_zero_snr = False
        config.loss.update(snr_floor=0.0, mouth_weight=0.0)
    for net in ("reference_net", "backbone"):
        unet = config.model[net]
        unet.update(
            block_out_channels=(32,),
            down_block_types=("CrossAttnDownBlock2D",),
            up_block_types=("CrossAttnUpBlock2D",),
            norm_num_groups=8,
        )
    config.model.face_locator_channels = (8,)
    config.vae.layout.update(block_out_channels=(16,), norm_num_groups=8)
    config.data.update({"size": 16, "batch_size": 2, "worker_count": 0, **data})
    config.train.update(log_every=1, image_every=0)
    return config
