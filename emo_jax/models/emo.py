"""The EMO model (arXiv 2402.17485, section 3): ReferenceNet, backbone, face locator, audio projection, speed.

Where the paper is silent we follow the closest open peers (AnimateAnyone / Hallo), noted where it happens:
  * reference features are the normed inputs of each spatial self-attention (AnimateAnyone's reference bank);
  * the face locator's features are added after the backbone's conv_in (Hallo, AnimateAnyone);
  * a dropped reference (classifier-free guidance) makes the sample's blocks attend as if there were no
    reference (`reference_keep`); a dropped audio or speed condition cuts that attention's output for the sample;
    a video's first clip has zero motion features (`has_motion`).
The architecture of each training stage is described in configs/ (`configs/emo_base.py`); `EMOConfig.from_dict`
reads it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from emo_jax.diffusion.schedules import PREDICTION_TYPES
from emo_jax.models.conditioning import AudioProjection, FaceLocator, ImageProjection, SpeedEncoder
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
    """Speed buckets (centres, radii in degrees per frame; derive with `conditioning.speed_buckets`), the +/-m
    window and the tokens per frame the temporal layers attend to."""

    centres: tuple[float, ...]
    radii: tuple[float, ...]
    m: int = 2
    hidden_dim: int = 256
    tokens: int = 1

    def __post_init__(self):
        object.__setattr__(self, "centres", tuple(float(c) for c in self.centres))
        object.__setattr__(self, "radii", tuple(float(r) for r in self.radii))


@dataclasses.dataclass(frozen=True)
class ImageEmbeddingConfig:
    """A face-identity embedding (Hallo: insightface's 512-d) projected to `tokens` context tokens of the
    UNets' `cross_attention_dim` (Hallo's `ImageProjModel`), read by both UNets' attn2."""

    dim: int = 512
    tokens: int = 4


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
    image_embedding: ImageEmbeddingConfig | None = None
    face_locator_conditioning_channels: int = 1
    guidance_drops_face: bool = False
    # Hallo's reference bank: the features handed from ReferenceNet to the backbone are rounded to this dtype
    # (its `ReferenceAttentionControl.update` casts them to float16 whatever the model's dtype) ...
    reference_feature_dtype: str | None = None
    # ... and backbone frame row i (of B x F) reads the reference of video i mod B (its bank is tiled over frames
    # with torch `.repeat`; with classifier-free guidance half of a branch's frames read the other branch's).
    reference_interleaved: bool = False
    face_locator_channels: tuple[int, ...] = (16, 32, 64, 128)  # len - 1 stride-2 stages: the VAE's factor
    num_motion_frames: int = 4
    prediction_type: str = "epsilon"  # what the backbone predicts: 'epsilon' or 'v_prediction'

    def __post_init__(self):
        object.__setattr__(self, "face_locator_channels", tuple(self.face_locator_channels))
        b = self.backbone
        if b.reference_attention is None:
            raise ValueError("EMOConfig: the backbone needs reference_attention ('concat_self' or 'cross')")
        if (self.audio is None) != (b.audio_cross_attention_dim is None):
            raise ValueError("EMOConfig: audio projection and backbone.audio_cross_attention_dim go together")
        speed_dim = b.motion.speed_cross_attention_dim if b.motion else None
        if (self.speed is None) != (speed_dim is None):
            raise ValueError("EMOConfig: speed and backbone.motion.speed_cross_attention_dim go together")
        if self.image_embedding is not None and (
            b.cross_attention_dim is None or self.reference_net.cross_attention_dim != b.cross_attention_dim
        ):
            raise ValueError("EMOConfig: image_embedding needs one cross_attention_dim in reference_net and backbone")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"EMOConfig.prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}"
            )

    @property
    def mask_factor(self) -> int:
        """Pixels per latent pixel the face locator assumes (2 ** its stride-2 stages)."""
        return 2 ** (len(self.face_locator_channels) - 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain (JSON-able) dict; `EMOConfig.from_dict(config.to_dict()) == config`."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EMOConfig:
        """From `to_dict`'s output or a config file's `model` block (an `ml_collections.ConfigDict` works)."""
        d = dict(d.to_dict() if hasattr(d, "to_dict") else d)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"EMOConfig: unknown keys {sorted(unknown)}")

        def part(name: str, config_cls):
            value = d.get(name)
            if value is None or isinstance(value, config_cls):
                return value
            return config_cls(**dict(value))

        return cls(
            **{
                **d,
                "reference_net": part("reference_net", UNetConfig),
                "backbone": part("backbone", UNetConfig),
                "audio": part("audio", AudioProjectionConfig),
                "speed": part("speed", SpeedConfig),
                "image_embedding": part("image_embedding", ImageEmbeddingConfig),
            }
        )


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
            conditioning_channels=config.face_locator_conditioning_channels,
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
                tokens=s.tokens,
                compute=compute,
                rngs=rngs,
            )
            if s
            else None
        )
        e = config.image_embedding
        self.image_projection = (
            ImageProjection(e.dim, config.backbone.cross_attention_dim, tokens=e.tokens, compute=compute, rngs=rngs)
            if e
            else None
        )

    def image_tokens(self, embedding: jax.Array, keep: jax.Array | None = None) -> jax.Array:
        """Face embeddings [B, D] -> context tokens [B, T, cross_attention_dim]; `keep` [B] 1/0 replaces a
        dropped sample's embedding by zeros before the projection (Hallo's unconditional branch)."""
        if self.image_projection is None:
            raise ValueError("EMO: this model has no image_embedding (EMOConfig.image_embedding is None)")
        _expect("face embedding", embedding, (None, self.config.image_embedding.dim))
        if keep is not None:
            embedding = embedding * keep[:, None].astype(embedding.dtype)
        return self.image_projection(embedding)

    def _collect(self, latents: jax.Array, tokens: jax.Array | None = None) -> tuple[Features, Features]:
        """ReferenceNet at t = 0 on clean latents [N, h, w, 4] (with context tokens [N, T, D] for its attn2)
        -> (normed self-attention inputs keyed by transformer-block path [N, S, C], hidden states keyed by
        `<stage>.motion_input_<layer>` [N, S, C])."""
        run = nnx.capture(self.reference_net, nnx.Intermediate)
        _, sown = run(latents, jnp.zeros((latents.shape[0],), jnp.int32), tokens, collect_reference=True)
        attention_inputs, hidden = {}, {}
        rounding = self.config.reference_feature_dtype
        for path, var in nnx.to_flat_state(sown):
            value = var.get_value()[0]
            if rounding is not None:
                value = value.astype(rounding).astype(value.dtype)
            if path[-1] == "reference_features":
                attention_inputs[".".join(str(p) for p in path[:-1])] = value
            else:
                hidden[".".join(str(p) for p in path)] = value.reshape(value.shape[0], -1, value.shape[-1])
        return attention_inputs, hidden

    def encode_reference(self, latents: jax.Array, image_tokens: jax.Array | None = None) -> Features:
        """ReferenceNet at t = 0 on the clean reference latent [B, h, w, 4] -> {block path: [B, h_b * w_b, C_b]}:
        the normed input of each spatial self-attention. image_tokens: [B, T, D] (`image_tokens`), Hallo."""
        _expect("reference latent", latents, (None, None, None, self.config.backbone.in_channels))
        return self._collect(latents, image_tokens)[0]

    def encode_motion(
        self, latents: jax.Array, has_motion: jax.Array, image_tokens: jax.Array | None = None
    ) -> Features:
        """Motion frames [B, n, h, w, 4] -> {motion key: [B, n, S, C]} (what `backbone.motion.motion_features`
        names); zero maps where `has_motion` [B] is 0 (a video's first clip has no previous frames).
        image_tokens: [B, T, D] (a video's tokens for all its frames) or [B, n, T, D] (per frame), read by the
        ReferenceNet's attn2 (Hallo)."""
        _expect("motion latents", latents, (None, None, None, None, self.config.backbone.in_channels))
        b, n = latents.shape[:2]
        _expect("has_motion", has_motion, (b,))
        tokens = image_tokens
        if tokens is not None:
            tokens = jnp.repeat(tokens, n, axis=0) if tokens.ndim == 3 else tokens.reshape((b * n,) + tokens.shape[2:])
        attention_inputs, hidden = self._collect(latents.reshape((b * n,) + latents.shape[2:]), tokens)
        motion = self.config.backbone.motion
        features = hidden if motion is None or motion.motion_features == "residual" else attention_inputs
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
        reference_keep: jax.Array | None = None,
        audio_keep: jax.Array | None = None,
        speed_keep: jax.Array | None = None,
        image_tokens: jax.Array | None = None,
        region_masks: tuple[jax.Array, ...] | None = None,
        motion_scale: jax.Array | None = None,
    ) -> jax.Array:
        """One backbone prediction (`config.prediction_type`: noise or v).

        noisy: [B, F, h, w, 4]; timesteps: [] or [B]; reference: `encode_reference` output;
        face_mask: [B, H, W, `face_locator_conditioning_channels`] in [0, 1], the union of the clip's face boxes
        at H = h * `config.mask_factor` (encoded once, shared by the clip's frames); motion: `encode_motion`
        output; audio_features: [B, F, 2m + 1, L, D] (`audio.frame_features`); speed: [B, F] degrees per frame;
        reference_keep, audio_keep, speed_keep: [B] 1/0 (guidance). Hallo: image_tokens [B, T, D]
        (`image_tokens`); region_masks: per backbone resolution [B, 3, S] full / face / lip masks;
        motion_scale [3], their weights. -> [B, F, h, w, 4].
        """
        c = self.config
        _expect("noisy latents", noisy, (None, None, None, None, c.backbone.in_channels))
        b, f, h, w = noisy.shape[:4]
        _expect("face_mask", face_mask, (b, h * c.mask_factor, w * c.mask_factor, c.face_locator_conditioning_channels))
        for name, keep in (("reference_keep", reference_keep), ("audio_keep", audio_keep), ("speed_keep", speed_keep)):
            if keep is not None:
                _expect(name, keep, (b,))
        audio = None
        if self.audio_projection is not None and audio_features is not None:
            a = c.audio
            _expect("audio_features", audio_features, (b, f, a.seq_len, a.blocks, a.channels))
            audio = self.audio_projection(audio_features)
        speed_tokens = None
        if self.speed_encoder is not None and speed is not None:
            _expect("speed", speed, (b, f))
            speed_tokens = self.speed_encoder(speed)
        if c.reference_interleaved:
            reference = {k: v[jnp.arange(b * f) % b].reshape((b, f) + v.shape[1:]) for k, v in reference.items()}
        face = self.face_locator(face_mask.astype(noisy.dtype))  # [B, h, w, C0], every frame
        if c.guidance_drops_face and reference_keep is not None:
            face = face * reference_keep[:, None, None, None].astype(face.dtype)
        return self.backbone(
            noisy,
            timesteps,
            image_tokens,
            reference=reference,
            reference_keep=reference_keep,
            motion=motion,
            audio=audio,
            audio_keep=audio_keep,
            speed=speed_tokens,
            speed_keep=speed_keep,
            region_masks=region_masks,
            motion_scale=motion_scale,
            conv_in_residual=face,
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
        [B] (default all 1); *_keep: [B] 1/0 condition dropout. Other arguments as `denoise`. -> [B, F, h, w, 4]."""
        b = noisy.shape[0]
        if motion_latents is None or self.config.backbone.motion is None:
            reference, motion = self.encode_reference(reference_latent), None
        else:  # one ReferenceNet pass over the reference and the motion frames together: [B + B * n, h, w, C]
            _expect("motion latents", motion_latents, (b, None) + reference_latent.shape[1:])
            n = motion_latents.shape[1]
            latents = jnp.concatenate([reference_latent, motion_latents.reshape((b * n,) + motion_latents.shape[2:])])
            attention_inputs, hidden = self._collect(latents)
            reference = {k: v[:b] for k, v in attention_inputs.items()}
            features = hidden if self.config.backbone.motion.motion_features == "residual" else attention_inputs
            has_motion = jnp.ones((b,)) if has_motion is None else has_motion
            motion = _per_sample({k: v[b:].reshape((b, n) + v.shape[1:]) for k, v in features.items()}, has_motion)
        return self.denoise(
            noisy,
            timesteps,
            reference,
            face_mask=face_mask,
            motion=motion,
            audio_features=audio_features,
            speed=speed,
            reference_keep=reference_keep,
            audio_keep=audio_keep,
            speed_keep=speed_keep,
        )


def _expect(name: str, array: jax.Array, shape: tuple[int | None, ...]) -> None:
    """Raises a ValueError naming the argument unless `array` has `shape` (None: any size there)."""
    actual = tuple(array.shape)
    if len(actual) != len(shape) or any(want is not None and want != got for want, got in zip(shape, actual)):
        wanted = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"EMO: {name} has shape {list(actual)}, expected {wanted}")


def _per_sample(features: Features, keep: jax.Array) -> Features:
    """Multiplies every feature map [B, ...] by its sample's `keep` [B] (1 keeps, 0 gives zero maps)."""
    return {k: v * keep.reshape((-1,) + (1,) * (v.ndim - 1)).astype(v.dtype) for k, v in features.items()}
