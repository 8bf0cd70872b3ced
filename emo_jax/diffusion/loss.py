"""The denoising objective: noise (partly shared by a clip's frames, with an offset), the target per prediction
type, min-SNR-gamma weights.

Pure functions over arrays [B, ...] (video latents [B, F, h, w, C]); the trainer draws the randomness.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from emo_jax.diffusion import schedules


def check_noise_share(shared: float, name: str = "noise_shared") -> None:
    """Refuses a share of the noise's variance outside [0, 1], naming the setting it came from."""
    if not 0 <= shared <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {shared}")


def frame_noise(
    key: jax.Array, shape: tuple[int, ...], shared: float = 0.0, common: jax.Array | None = None
) -> jax.Array:
    """Standard normal noise [B, F, ...] whose F frames share `shared` of their variance: sqrt(shared) z_clip +
    sqrt(1 - shared) z_frame, so each frame is still N(0, 1) while a clip's frames are correlated by `shared`
    (0: independent draws, exactly `jax.random.normal(key, shape)`; 1: one draw for all frames). Training with it
    (`loss.noise_shared`, the mixed noise of Ge et al. 2023, PYoCo) and sampling with the same share keeps
    sampling in distribution. `common`: the key z_clip is drawn from (default: one split from `key`); sampling
    gives every clip of a video the same one, so consecutive clips start from the same shared part."""
    check_noise_share(shared)
    if not shared:
        return jax.random.normal(key, shape)
    k_clip, k_frame = jax.random.split(key)
    clip = jax.random.normal(k_clip if common is None else common, (shape[0], 1, *shape[2:]))
    return math.sqrt(shared) * clip + math.sqrt(1 - shared) * jax.random.normal(k_frame, shape)


def offset_noise(key: jax.Array, shape: tuple[int, ...], offset: float, shared: float = 0.0) -> jax.Array:
    """`frame_noise` [B, F, ...] (`shared` of each frame's variance common to its clip) plus `offset` x one
    Gaussian per sample and channel, shared by every frame and pixel (Guttenberg's offset noise; peers use 0.05),
    so the model learns to shift overall brightness."""
    k_noise, k_offset = jax.random.split(key)
    noise = frame_noise(k_noise, shape, shared).astype(jnp.float32)
    if offset:
        per_channel = (shape[0],) + (1,) * (len(shape) - 2) + (shape[-1],)
        noise = noise + offset * jax.random.normal(k_offset, per_channel, jnp.float32)
    return noise


def min_snr_weight(snr: jax.Array, gamma: float | None, prediction_type: str, floor: float = 0.0) -> jax.Array:
    """Per-sample loss weight of min-SNR-gamma (Hang et al. 2023) for a loss on the model's own target:
    epsilon: min(snr, gamma) / snr; v: min(snr, gamma) / (snr + 1). gamma None: 1. A zero SNR (the last step of
    a zero-terminal-SNR schedule) gets weight 0 for epsilon, where x_t is pure noise and eps is trivial. [B] -> [B].

    Either way the clean sample's error counts min(snr, gamma) times, which vanishes at high noise: where the
    noisy frames no longer show what a condition (the audio, for the mouth) decides, that condition is barely
    trained. `floor` (with a gamma) keeps the clean-sample weight at least `floor`: max(min(snr, gamma), floor)."""
    if gamma is None:
        return jnp.ones_like(snr)
    clipped = jnp.maximum(jnp.minimum(snr, gamma), floor)
    if prediction_type == "epsilon":
        return jnp.where(snr > 0, clipped / jnp.where(snr > 0, snr, 1.0), 0.0)
    if prediction_type == "v_prediction":
        return clipped / (snr + 1.0)
    raise ValueError(f"prediction_type must be one of {schedules.PREDICTION_TYPES}, got {prediction_type!r}")


def per_sample_mse(prediction: jax.Array, target: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Mean squared error per sample, in fp32; with `weights` (broadcastable to the error, e.g. [B, 1, h, w, 1])
    the weighted mean sum(w err) / sum(w). [B, ...] x2 -> [B]."""
    err = (prediction.astype(jnp.float32) - target.astype(jnp.float32)) ** 2
    if weights is None:
        return err.reshape(err.shape[0], -1).mean(axis=1)
    weights = jnp.broadcast_to(weights.astype(jnp.float32), err.shape)
    total = lambda x: x.reshape(x.shape[0], -1).sum(axis=1)  # noqa: E731
    return total(weights * err) / total(weights)


def region_share(mask: jax.Array, latent_hw: tuple[int, int]) -> jax.Array:
    """The share of each latent pixel inside `mask` (pixels [B, S, S, 1], 0/1), shaped for `per_sample_mse` over
    video latents [B, F, h, w, C]: -> [B, 1, h, w, 1]."""
    b, size = mask.shape[0], mask.shape[1]
    h, w = latent_hw
    share = mask.astype(jnp.float32).reshape(b, h, size // h, w, size // w).mean(axis=(2, 4))
    return share[:, None, :, :, None]


def region_weights(mask: jax.Array, latent_hw: tuple[int, int], weight: float) -> jax.Array:
    """1 + weight x `region_share`: the loss weights of a region that counts 1 + weight times. -> [B, 1, h, w, 1]."""
    return 1.0 + weight * region_share(mask, latent_hw)


def denoising_loss(
    prediction: jax.Array,
    x0: jax.Array,
    noise: jax.Array,
    timesteps: jax.Array,
    abar: jax.Array,
    *,
    prediction_type: str,
    snr_gamma: float | None,
    weights: jax.Array | None = None,
    snr_floor: float = 0.0,
) -> tuple[jax.Array, jax.Array]:
    """-> (scalar loss: weighted mean over samples, per-sample MSE [B] for logging: weighted over pixels by
    `weights` where given, unweighted over timesteps)."""
    mse = per_sample_mse(prediction, schedules.target(prediction_type, x0, noise, timesteps, abar), weights)
    weight = min_snr_weight(schedules.snr(abar, timesteps), snr_gamma, prediction_type, snr_floor)
    return jnp.mean(weight * mse), mse
