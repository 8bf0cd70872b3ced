"""What every EMO training config shares: the model layouts by size and the training defaults.

The stage files (stage1.py, stage2.py, stage3.py, tiny.py) start from `base(size)` and say what their stage
changes; nothing about a stage lives in the package. `model(...)` returns the `EMOConfig` dict
(`emo_jax.models.emo.EMOConfig.from_dict`), so every layer of the model is visible in the config that is saved
beside each checkpoint.
"""

import ml_collections

# UNet layouts (diffusers config names) shared by ReferenceNet and backbone, and the audio/speed widths.
LAYOUTS = {
    # SD1.5's UNet; wav2vec2-base features (12 layers of 768) as Hallo.
    "sd15": dict(
        unet=dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, attention_head_dim=8),
        norm_num_groups=32,
        audio=dict(seq_len=5, blocks=12, channels=768, intermediate_dim=512, context_tokens=32),
        token_dim=768,
        motion_heads=8,
        face_locator_channels=(16, 32, 64, 128),  # /8, the SD VAE's factor
        speed_tokens=4,
        vae=dict(),  # sd-vae-ft-mse's layout (the defaults); its weights: config.vae.checkpoint
    ),
    # The same structure at CPU size; log-mel audio features (1 layer of 80 bands); a 2-stage VAE (/2).
    "tiny": dict(
        unet=dict(
            block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),  # like SD1.5's last level: no attention
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            layers_per_block=1,
            attention_head_dim=4,
        ),
        norm_num_groups=16,
        audio=dict(seq_len=5, blocks=1, channels=80, intermediate_dim=64, context_tokens=4),
        token_dim=32,
        motion_heads=4,
        face_locator_channels=(16, 32),  # /2, the tiny VAE's factor
        speed_tokens=2,
        # No attention in the VAE's mid block: at 64 px it cost a quarter of the VAE's FLOPs.
        vae=dict(
            block_out_channels=(32, 64),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=16,
            mid_block_add_attention=False,
        ),
    ),
}
# Until a preprocessing report.json gives measured buckets (config.data.report): 9 buckets over 0-3 deg/frame.
PLACEHOLDER_SPEED_BUCKETS = dict(
    centres=(0.15, 0.4875, 0.825, 1.1625, 1.5, 1.8375, 2.175, 2.5125, 2.85), radii=(0.17,) * 9
)


def model(
    size: str,
    *,
    temporal: bool,
    audio: bool,
    speed: bool,
    reference_attention: str = "concat_self",
    prediction_type: str = "epsilon",
    num_motion_frames: int = 4,
) -> dict:
    """The EMOConfig dict: ReferenceNet and backbone of `size`, with the stage's temporal/audio/speed layers."""
    layout = LAYOUTS[size]
    unet = dict(layout["unet"], norm_num_groups=layout["norm_num_groups"], cross_attention_dim=None)
    motion = dict(
        motion_num_attention_heads=layout["motion_heads"],
        speed_cross_attention_dim=layout["token_dim"] if speed else None,
        norm_per_frame=True,  # as original AnimateDiff trained mm_sd_v15, and Hallo
        motion_features="residual",
    )
    backbone = dict(
        unet,
        reference_attention=reference_attention,
        audio_cross_attention_dim=layout["token_dim"] if audio else None,
        motion=motion if temporal else None,
    )
    return dict(
        reference_net=unet,
        backbone=backbone,
        audio=layout["audio"] if audio else None,
        speed=dict(PLACEHOLDER_SPEED_BUCKETS, m=2, hidden_dim=256, tokens=layout["speed_tokens"]) if speed else None,
        face_locator_channels=layout["face_locator_channels"],
        num_motion_frames=num_motion_frames,
        prediction_type=prediction_type,
    )


def cpu_data(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A stage's data at the tiny size: log-mel audio, 64 px, batch 2, and 4 + 2 frames for the video stages."""
    c.audio.encoder = "logmel"
    c.data.size, c.data.batch_size = 64, 2
    c.motion_augment.patch_size = 8
    if c.data.num_frames > 1:
        c.data.num_frames = 4
        c.data.num_motion_frames = c.model.num_motion_frames = 2
    return c


def base(size: str) -> ml_collections.ConfigDict:
    """Defaults every stage shares; a stage file overrides what it changes."""
    if size not in LAYOUTS:
        raise ValueError(f"size must be one of {sorted(LAYOUTS)}, got {size!r}")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.stage = 0
    c.size = size
    c.model = ml_collections.ConfigDict()  # the stage's `model(...)`
    c.trainable = []  # regular expressions over parameter paths (emo_jax.train.trainable)
    c.compute = dict(dtype="float32", attention="auto", remat=False)  # remat: recompute blocks in the backward
    c.schedule = dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        rescale_betas_zero_snr=False,
    )
    # snr_gamma None: plain MSE; snr_floor: min-SNR's clean-sample weight never below it (0: as published).
    # mouth_weight: the loss inside each clip's mouth regions (the lower middle of its face boxes) counts
    # 1 + mouth_weight times; 0 is the paper's plain loss. noise_shared: the share of each frame's noise variance
    # common to its clip (mixed noise, PYoCo); sampling uses the same share unless sample.noise_shared says else.
    c.loss = dict(snr_gamma=5.0, snr_floor=0.0, offset_noise=0.05, mouth_weight=0.0, noise_shared=0.0)
    # Condition dropout for classifier-free guidance (shares of samples; reference, audio and both are exclusive),
    # and first clips: the share of samples trained without motion frames (a video's first clip).
    c.dropout = dict(reference=0.05, audio=0.05, both=0.05, first_clip=0.05)
    # Motion-frame augmentation against drift in long videos (Hallo2): pixel noise and dropped patches.
    c.motion_augment = dict(noise_std=0.02, patch_drop=0.1, patch_size=16)
    c.optimizer = dict(
        learning_rate=1e-5, warmup_steps=500, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-2, clip_norm=1.0
    )
    c.ema = dict(decay=0.0)  # 0: no EMA; e.g. 0.9999 keeps an EMA of the trainable weights
    c.mesh = dict(shape=(-1, 1, 1))  # ('data', 'fsdp', 'tensor'); -1: all remaining devices
    c.data = dict(
        data_dir="",  # TFDS data_dir holding emo_clips/<dataset> (emo-jax build-dataset)
        report="",  # the preprocessing report.json: speed buckets
        num_frames=12,
        num_motion_frames=4,
        size=512,
        fps=30.0,  # the paper's frame rate (section 4.1)
        window=2,  # m
        batch_size=4,  # global: split over the data-parallel devices and hosts
        mask_window=12,  # stage 1: frames around the target whose face boxes make the mask
        worker_count=2,
    )
    # The frozen VAE: a converted checkpoint folder (emo-jax convert), or random weights where `random` (tiny).
    # Audio features: the encoder names the dataset training reads (emo_clips/<encoder>, built with the same
    # settings: `build-dataset --config wav2vec2 --wav2vec2 DIR`) and what sampling runs on a new track.
    c.audio = dict(encoder="wav2vec2", wav2vec2_path="", layers="all", n_mels=80)
    c.vae = dict(checkpoint="", layout=LAYOUTS[size]["vae"], scaling_factor=0.18215, random=size == "tiny")
    # Where the stage starts: an emo-jax training workdir/step of the previous stage, and for new layers a
    # diffusers SD1.5 UNet folder and an AnimateDiff motion adapter file.
    c.init = dict(checkpoint="", sd15_unet="", motion_adapter="", fresh=[])
    # Sampling defaults (emo-jax sample; its flags override them): what this model is sampled with.
    c.sample = dict(
        sampler="ddim",
        steps=40,
        eta=0.0,
        guidance_audio=3.5,
        guidance_reference=3.5,
        speed="normal",
        mask_expand=1.2,
    )
    c.train = dict(
        steps=100_000,
        log_every=10,
        checkpoint_every=1000,
        keep_checkpoints=3,
        image_every=1000,  # predicted clean frames beside the truth, PNG + TensorBoard
        on_nan="stop",  # 'stop' (after saving the last good state) or 'skip' the batch
    )
    return c
