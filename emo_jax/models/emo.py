"""The EMO model (arXiv 2402.17485, section 3): ReferenceNet, backbone, face locator, audio projection, speed.

Where the paper is silent we follow the closest open peers (AnimateAnyone / Hallo), noted where it happens:
  * reference features are the normed inputs of each spatial self-attention (AnimateAnyone's reference bank);
  * the face locator's features are added after the backbone's conv_in (Hallo, AnimateAnyone);
  * a dropped reference (classifier-free guidance) is zero reference features; a dropped audio or speed
    condition cuts that attention's output for the sample.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from emo_jax.models.conditioning import AudioProjection, FaceLocator, SpeedEncoder
from emo_jax.models.layers import Compute
from emo_jax.models.unet import UNet, UNetConfig

Features = dict[str, jax.Array]  # transformer-block path -> [B, (n,) S, C]


@dataclasses.dataclass(frozen=True)
class AudioProjectionConfig:
    """Hallo's `AudioProjModel` sizes: window frames (2m + 1), wav2vec2 layers and width, tokens out."""

    seq_len: int = 5
    blocks: int = 12
    channels: int = 768
    intermediate_dim: int = 512
    context_tokens: int = 32


@dataclasses.dataclass(frozen=True)
class SpeedConfig:
    """Speed buckets (centres, radii in degrees per frame; derive with `conditioning.speed_buckets`)."""

    centres: tuple[float, ...]
    radii: tuple[float, ...]
    m: int = 2
    hidden_dim: int = 256


@dataclasses.dataclass(frozen=True)
class EMOConfig:
    """reference_net: an image UNet (SD layout, no text: cross_attention_dim None unless the backbone uses
    'cross' reference attention). backbone: the same layout with `reference_attention`, and per stage
    `audio_cross_attention_dim` (audio layers) and `motion` (temporal layers, with `speed_cross_attention_dim`
    for the speed layers). audio / speed: None switches that path off."""

    reference_net: UNetConfig
    backbone: UNetConfig
    audio: AudioProjectionConfig | None = None
    speed: SpeedConfig | None = None
    face_locator_channels: tuple[int, ...] = (16, 32, 64, 128)
    num_motion_frames: int = 4

    def __post_init__(self):
        b = self.backbone
        if b.reference_attention is None:
            raise ValueError("EMOConfig: the backbone needs reference_attention ('concat_self' or 'cross')")
        if (self.audio is None) != (b.audio_cross_attention_dim is None):
            raise ValueError("EMOConfig: audio projection and backbone.audio_cross_attention_dim go together")
        speed_dim = b.motion.speed_cross_attention_dim if b.motion else None
        if (self.speed is None) != (speed_dim is None):
            raise ValueError("EMOConfig: speed and backbone.motion.speed_cross_attention_dim go together")


class EMO(nnx.Module):
    """All trained parts of EMO.

    Sampling: `reference = model.encode_reference(ref_latent)` once per video, `motion =
    model.encode_motion(motion_latents, has_motion)` once per clip, then `model.denoise(...)` per step.
    Training: `model(...)` does all three.
    """

    def __init__(self, config: EMOConfig, *, compute: Compute = Compute(), rngs: nnx.Rngs):
        self.config = config
        self.reference_net = UNet(config.reference_net, compute=compute, rngs=rngs)
        self.backbone = UNet(config.backbone, compute=compute, rngs=rngs)
        self.face_locator = FaceLocator(
            config.backbone.block_out_channels[0],
            block_out_channels=config.face_locator_channels,
            compute=compute,
            rngs=rngs,
        )
        a = config.audio
        self.audio_projection = (
            AudioProjection(
                seq_len=a.seq_len,
                blocks=a.blocks,
                channels=a.channels,
                intermediate_dim=a.intermediate_dim,
                output_dim=config.backbone.audio_cross_attention_dim,
                context_tokens=a.context_tokens,
                compute=compute,
                rngs=rngs,
            )
            if a
            else None
        )
        s = config.speed
        self.speed_encoder = (
            SpeedEncoder(
                s.centres,
                s.radii,
                m=s.m,
                hidden_dim=s.hidden_dim,
                dim=config.backbone.motion.speed_cross_attention_dim,
                compute=compute,
                rngs=rngs,
            )
            if s
            else None
        )

    def encode_reference(self, latents: jax.Array) -> Features:
        """ReferenceNet at t = 0 on clean latents [B, h, w, 4] -> {block path: [B, h_b * w_b, C_b]}.

        Its layers after the last block's self-attention input (that block's attention and feed-forward,
        conv_out) affect no feature, so they get no gradient: the unused tail of the peers' ReferenceNet.
        """
        run = nnx.capture(self.reference_net, nnx.Intermediate)
        _, sown = run(latents, jnp.zeros((latents.shape[0],), jnp.int32), collect_reference=True)
        return {".".join(str(p) for p in path[:-1]): var.get_value()[0] for path, var in nnx.to_flat_state(sown)}

    def encode_motion(self, latents: jax.Array, has_motion: jax.Array) -> Features:
        """Motion frames [B, n, h, w, 4] -> {block path: [B, n, S, C]}; zero maps where `has_motion` [B] is 0
        (a video's first clip has no previous frames)."""
        b, n = latents.shape[:2]
        features = self.encode_reference(latents.reshape((b * n,) + latents.shape[2:]))
        return _per_sample({k: v.reshape((b, n) + v.shape[1:]) for k, v in features.items()}, has_motion)

    def denoise(
        self,
        noisy: jax.Array,
        timesteps: jax.Array,
        reference: Features,
        *,
        face_mask: jax.Array,
        motion: Features | None = None,
        audio_features: jax.Array | None = None,
        speed: jax.Array | None = None,
        audio_keep: jax.Array | None = None,
        speed_keep: jax.Array | None = None,
    ) -> jax.Array:
        """One backbone prediction (noise or v, as trained).

        noisy: [B, F, h, w, 4]; timesteps: [] or [B]; reference: `encode_reference` output;
        face_mask: [B, F, H, W, 1] (union of the clip's face boxes, pixels); motion: `encode_motion` output;
        audio_features: [B, F, 2m + 1, L, D] (`audio.frame_features`); speed: [B, F] degrees per frame;
        audio_keep, speed_keep: [B] 1/0 -> [B, F, h, w, 4].
        """
        b, f = noisy.shape[:2]
        face = self.face_locator(face_mask.reshape((b * f,) + face_mask.shape[2:]))
        audio = (
            self.audio_projection(audio_features)
            if self.audio_projection is not None and audio_features is not None
            else None
        )
        speed_tokens = self.speed_encoder(speed) if self.speed_encoder is not None and speed is not None else None
        return self.backbone(
            noisy,
            timesteps,
            reference=reference,
            motion=motion,
            audio=audio,
            audio_keep=audio_keep,
            speed=speed_tokens,
            speed_keep=speed_keep,
            conv_in_residual=face.reshape((b, f) + face.shape[1:]),
        )

    def __call__(
        self,
        noisy: jax.Array,
        timesteps: jax.Array,
        reference_latent: jax.Array,
        *,
        face_mask: jax.Array,
        motion_latents: jax.Array | None = None,
        has_motion: jax.Array | None = None,
        audio_features: jax.Array | None = None,
        speed: jax.Array | None = None,
        reference_keep: jax.Array | None = None,
        audio_keep: jax.Array | None = None,
        speed_keep: jax.Array | None = None,
    ) -> jax.Array:
        """Training forward. reference_latent: [B, h, w, 4]; motion_latents: [B, n, h, w, 4] with has_motion
        [B]; *_keep: [B] 1/0 condition dropout. Other arguments as `denoise`. -> [B, F, h, w, 4]."""
        reference = self.encode_reference(reference_latent)
        if reference_keep is not None:
            reference = _per_sample(reference, reference_keep)
        motion = None
        if motion_latents is not None and self.config.backbone.motion is not None:
            if has_motion is None:
                has_motion = jnp.ones((noisy.shape[0],))
            motion = self.encode_motion(motion_latents, has_motion)
        return self.denoise(
            noisy,
            timesteps,
            reference,
            face_mask=face_mask,
            motion=motion,
            audio_features=audio_features,
            speed=speed,
            audio_keep=audio_keep,
            speed_keep=speed_keep,
        )


def _per_sample(features: Features, keep: jax.Array) -> Features:
    """Multiplies every feature map [B, ...] by its sample's `keep` [B] (1 keeps, 0 gives zero maps)."""
    return {k: v * keep.reshape((-1,) + (1,) * (v.ndim - 1)).astype(v.dtype) for k, v in features.items()}


@dataclasses.dataclass(frozen=True)
class _Size:
    layout: dict
    audio: AudioProjectionConfig  # matches the audio encoder of configs of this size
    audio_dim: int  # audio (and speed) token width
    motion_heads: int


_SIZES = {
    # SD1.5's UNet; wav2vec2-base features (12 layers of 768) as Hallo.
    "sd15": _Size(
        layout=dict(
            block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, attention_head_dim=8, norm_num_groups=32
        ),
        audio=AudioProjectionConfig(),
        audio_dim=768,
        motion_heads=8,
    ),
    # The same structure at CPU size; log-mel audio features (1 layer of 80 bands, configs/tiny.py).
    "tiny": _Size(
        layout=dict(
            block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            layers_per_block=1,
            attention_head_dim=4,
            norm_num_groups=16,
        ),
        audio=AudioProjectionConfig(blocks=1, channels=80, intermediate_dim=64, context_tokens=4),
        audio_dim=32,
        motion_heads=4,
    ),
}
# Until `conditioning.speed_buckets` has seen the data: 9 buckets over 0-3 degrees per frame.
PLACEHOLDER_SPEED_BUCKETS = (tuple(float(c) for c in np.linspace(0.15, 2.85, 9)), (0.17,) * 9)


def emo_config(
    size: str = "sd15",
    *,
    stage: int = 2,
    reference_attention: str = "concat_self",
    speed_buckets: tuple[tuple[float, ...], tuple[float, ...]] = PLACEHOLDER_SPEED_BUCKETS,
) -> EMOConfig:
    """The EMO model of a training stage (paper, section 3.3).

    stage 1 (image): ReferenceNet + backbone + face locator; no temporal, audio or speed layers.
    stage 2 (video): + temporal layers and audio layers.  stage 3 (speed): + speed layers.
    Neither net has text cross-attention; with 'cross' reference attention attn2 attends to each block's
    reference features at the block's width.
    """
    if size not in _SIZES:
        raise ValueError(f"size must be one of {sorted(_SIZES)}, got {size!r}")
    if stage not in (1, 2, 3):
        raise ValueError(f"stage must be 1, 2 or 3, got {stage}")
    sz = _SIZES[size]
    video = stage >= 2
    motion = dict(
        motion_num_attention_heads=sz.motion_heads, speed_cross_attention_dim=sz.audio_dim if stage == 3 else None
    )
    backbone = UNetConfig(
        **sz.layout,
        cross_attention_dim=None,
        reference_attention=reference_attention,
        audio_cross_attention_dim=sz.audio_dim if video else None,
        motion=motion if video else None,
    )
    centres, radii = speed_buckets
    return EMOConfig(
        reference_net=UNetConfig(**sz.layout, cross_attention_dim=None),
        backbone=backbone,
        audio=sz.audio if video else None,
        speed=SpeedConfig(centres=tuple(centres), radii=tuple(radii)) if stage == 3 else None,
    )
