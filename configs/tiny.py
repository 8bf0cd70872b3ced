"""Tiny model on CPU: the bundled demo. `emo-jax demo` builds it and runs one denoising step on
`skimage.data.astronaut()`: 12 s on a 2-core CPU (imports, ~2.5 s XLA compile, then ~60 ms a step).

Same code as SD1.5, smaller numbers: 2 UNet stages (32/64 channels), 2 VAE stages (/2 latents).
"""

import ml_collections


def get_config(arg=None):
    del arg
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.resolution = 64  # pixels; the tiny VAE halves it
    config.context_tokens = 8  # cross-attention tokens (audio tokens in the full model)

    config.unet = dict(
        _class_name="UNet2DConditionModel",
        in_channels=4,
        out_channels=4,
        block_out_channels=[32, 64],
        down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
        layers_per_block=1,
        attention_head_dim=4,
        cross_attention_dim=64,
        norm_num_groups=16,
    )
    config.vae = dict(
        _class_name="AutoencoderKL",
        block_out_channels=[32, 64],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        scaling_factor=0.18215,
    )
    # Audio features per video frame: log-mel (no weights) here; 'wav2vec2' with a local folder in real configs.
    config.audio = dict(encoder="logmel", n_mels=80, window=2, fps=25)
    config.schedule = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    config.demo_timestep = 500
    return config
