"""A pipeline batch -> the model's training inputs, inside the jitted step.

Frames stay uint8 until here (a quarter of fp32's host-to-device bytes); the frozen VAE encodes the clip, the
reference and the (augmented) motion frames on the device. Randomness (latent samples, noise, timesteps,
condition dropout, augmentation) comes from one key per step.

Batch in (B samples, F frames, n motion frames, S pixels): frames [B, F, S, S, 3], reference [B, S, S, 3],
motion_frames [B, n, S, S, 3] (uint8), face_mask [B, S, S, 1], speed [B, F], audio_features [B, F, 2m + 1, L, D].
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from emo_jax.diffusion import loss as diffusion_loss
from emo_jax.diffusion import schedules
from emo_jax.models.vae import AutoencoderKL


@dataclasses.dataclass(frozen=True)
class Dropout:
    """Shares of samples trained without a condition (classifier-free guidance; reference, audio and both
    exclusive), and without motion frames (a video's first clip)."""

    reference: float = 0.0
    audio: float = 0.0
    both: float = 0.0
    first_clip: float = 0.0

    def __post_init__(self):
        if self.reference + self.audio + self.both > 1:
            raise ValueError(f"dropout shares reference + audio + both exceed 1: {self}")


@dataclasses.dataclass(frozen=True)
class MotionAugment:
    """Motion frames are corrupted before encoding, so the model learns not to copy their errors (Hallo2):
    Gaussian pixel noise of `noise_std` (pixels in [-1, 1]) and `patch_size` patches dropped to grey with
    probability `patch_drop`."""

    noise_std: float = 0.0
    patch_drop: float = 0.0
    patch_size: int = 16


def to_pixels(frames: jax.Array) -> jax.Array:
    """uint8 [..., 3] -> float32 in [-1, 1]."""
    return frames.astype(jnp.float32) / 127.5 - 1.0


def keep_masks(key: jax.Array, batch: int, dropout: Dropout) -> dict[str, jax.Array]:
    """[B] 1/0 masks: reference_keep, audio_keep (one uniform draw per sample splits the shares) and has_motion."""
    k_guidance, k_motion = jax.random.split(key)
    u = jax.random.uniform(k_guidance, (batch,))
    drop_reference = (u < dropout.reference) | (
        (u >= dropout.reference + dropout.audio) & (u < dropout.reference + dropout.audio + dropout.both)
    )
    drop_audio = (u >= dropout.reference) & (u < dropout.reference + dropout.audio + dropout.both)
    has_motion = jax.random.uniform(k_motion, (batch,)) >= dropout.first_clip
    as_float = lambda m: m.astype(jnp.float32)
    return dict(
        reference_keep=as_float(~drop_reference), audio_keep=as_float(~drop_audio), has_motion=as_float(has_motion)
    )


def augment_motion(key: jax.Array, pixels: jax.Array, augment: MotionAugment) -> jax.Array:
    """Noise and dropped patches on motion frames [B, n, S, S, 3] in [-1, 1]."""
    k_noise, k_patch = jax.random.split(key)
    if augment.noise_std:
        pixels = pixels + augment.noise_std * jax.random.normal(k_noise, pixels.shape)
    if augment.patch_drop:
        b, n, h, w, _ = pixels.shape
        p = augment.patch_size
        grid = jax.random.uniform(k_patch, (b, n, -(-h // p), -(-w // p), 1)) < augment.patch_drop
        dropped = jnp.repeat(jnp.repeat(grid, p, axis=2), p, axis=3)[:, :, :h, :w]
        pixels = jnp.where(dropped, 0.0, pixels)
    return pixels


def encode(vae: AutoencoderKL, key: jax.Array, pixels: jax.Array) -> jax.Array:
    """Images [..., S, S, 3] in [-1, 1] -> scaled latent samples [..., S / f, S / f, C]."""
    lead = pixels.shape[:-3]
    flat = pixels.reshape((-1,) + pixels.shape[-3:])
    latents = vae.encode(flat).sample(key) * vae.config.scaling_factor
    return jax.lax.stop_gradient(latents.reshape(lead + latents.shape[1:]))


@dataclasses.dataclass(frozen=True)
class Objective:
    """The noising side of the loss: schedule (abar), offset noise, the noise's share common to a clip's frames,
    min-SNR gamma, prediction type."""

    abar: tuple[float, ...]
    prediction_type: str
    offset_noise: float = 0.0
    noise_shared: float = 0.0  # share of each frame's noise variance common to its clip (`loss.frame_noise`)
    snr_gamma: float | None = None
    snr_floor: float = 0.0  # the least weight of the clean sample's error at any noise level (min_snr_weight)
    mouth_weight: float = 0.0  # extra loss weight inside the clip's mouth regions (batch["mouth_mask"]); 0: off

    def __post_init__(self):
        diffusion_loss.check_noise_share(self.noise_shared, "loss.noise_shared")

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> Objective:
        return cls(
            abar=tuple(float(a) for a in schedules.alphas_cumprod(**config.schedule)),
            prediction_type=config.model.prediction_type,
            offset_noise=config.loss.offset_noise,
            noise_shared=float(config.loss.get("noise_shared", 0.0)),
            snr_gamma=config.loss.snr_gamma,
            snr_floor=float(config.loss.get("snr_floor", 0.0)),
            mouth_weight=float(config.loss.get("mouth_weight", 0.0)),
        )


def training_inputs(
    vae: AutoencoderKL,
    batch: dict[str, jax.Array],
    key: jax.Array,
    objective: Objective,
    dropout: Dropout,
    augment: MotionAugment,
) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """-> (keyword arguments of `EMO.__call__`, {x0, noise, timesteps[, weights]}: what the loss compares
    against; weights [B, 1, h, w, 1] where `objective.mouth_weight`, from batch["mouth_mask"])."""
    keys = jax.random.split(key, 6)
    frames = to_pixels(batch["frames"])  # [B, F, S, S, 3]
    b, f = frames.shape[:2]
    images = [frames.reshape((b * f,) + frames.shape[2:]), to_pixels(batch["reference"])]
    if "motion_frames" in batch:
        motion = augment_motion(keys[0], to_pixels(batch["motion_frames"]), augment)
        images.append(motion.reshape((-1,) + motion.shape[2:]))
    latents = encode(vae, keys[1], jnp.concatenate(images))  # one VAE pass over every image of the batch
    x0 = latents[: b * f].reshape((b, f) + latents.shape[1:])  # [B, F, h, w, C]
    timesteps = jax.random.randint(keys[2], (b,), 0, len(objective.abar))
    noise = diffusion_loss.offset_noise(keys[3], x0.shape, objective.offset_noise, objective.noise_shared)
    abar = jnp.asarray(objective.abar)
    inputs = dict(
        noisy=schedules.add_noise(x0, noise, timesteps, abar),
        timesteps=timesteps,
        reference_latent=latents[b * f : b * f + b],
        face_mask=batch["face_mask"].astype(jnp.float32),
        **keep_masks(keys[4], b, dropout),
    )
    if "motion_frames" in batch:
        inputs["motion_latents"] = latents[b * f + b :].reshape((b, -1) + latents.shape[1:])
    else:
        del inputs["has_motion"]
    for name in ("audio_features", "speed"):
        if name in batch:
            inputs[name] = batch[name]
    truth = dict(x0=x0, noise=noise, timesteps=timesteps)
    if objective.mouth_weight:
        if "mouth_mask" not in batch:
            raise ValueError("loss.mouth_weight needs batches with mouth_mask (PipelineConfig.mouth_mask=True)")
        truth["weights"] = diffusion_loss.region_weights(batch["mouth_mask"], x0.shape[2:4], objective.mouth_weight)
    return inputs, truth


def example_batch(
    config: ml_collections.ConfigDict, *, batch_size: int | None = None, abstract: bool = False, seed: int = 0
) -> dict:
    """A batch shaped as the pipeline yields it for `config` (random pixels and conditions), or its
    `jax.ShapeDtypeStruct`s: for benchmarks, compile studies and tests that need no dataset."""
    d = config.data
    b, f, n, s = batch_size or d.batch_size, d.num_frames, d.num_motion_frames, d.size
    shapes = {
        "frames": ((b, f, s, s, 3), np.uint8),
        "reference": ((b, s, s, 3), np.uint8),
        "face_mask": ((b, s, s, 1), np.uint8),
        "speed": ((b, f), np.float32),
    }
    if n:
        shapes["motion_frames"] = ((b, n, s, s, 3), np.uint8)
    if config.loss.get("mouth_weight", 0.0):
        shapes["mouth_mask"] = ((b, s, s, 1), np.uint8)
    audio = config.model.get("audio")
    if audio is not None:
        shapes["audio_features"] = ((b, f, 2 * d.window + 1, audio.blocks, audio.channels), np.float32)
    if abstract:
        return {k: jax.ShapeDtypeStruct(shape, dtype) for k, (shape, dtype) in shapes.items()}
    rng = np.random.default_rng(seed)
    batch = {}
    for name, (shape, dtype) in shapes.items():
        if dtype == np.uint8:
            batch[name] = rng.integers(0, 2 if name.endswith("_mask") else 256, shape, dtype=np.uint8)
        elif name == "speed":
            batch[name] = rng.uniform(0, 2, shape).astype(np.float32)
        else:
            batch[name] = rng.standard_normal(shape).astype(np.float32)
    return batch
