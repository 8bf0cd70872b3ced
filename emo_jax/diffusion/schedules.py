"""Noise schedules and the forward process as pure functions (diffusers `DDPMScheduler` conventions).

abar_t = prod_{s<=t} (1 - beta_s) for t = 0..T-1; x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps.
Arrays shaped [B, ...] (images [B, H, W, C] or video [B, F, H, W, C]) with one timestep per sample.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

BETA_SCHEDULES = ("scaled_linear", "linear")
PREDICTION_TYPES = ("epsilon", "v_prediction")


def betas(
    num_train_timesteps: int = 1000,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    beta_schedule: str = "scaled_linear",
    rescale_betas_zero_snr: bool = False,
) -> np.ndarray:
    """beta_t, t = 0..T-1 -> [T] float64. 'scaled_linear' (SD) interpolates sqrt(beta); `rescale_betas_zero_snr`
    shifts and scales sqrt(abar) so that abar_{T-1} = 0 and abar_0 is unchanged (Lin et al. 2023, Algorithm 1)."""
    if beta_schedule == "scaled_linear":
        b = np.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=np.float64) ** 2
    elif beta_schedule == "linear":
        b = np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64)
    else:
        raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {beta_schedule!r}")
    if rescale_betas_zero_snr:
        root = np.sqrt(np.cumprod(1.0 - b))
        first, last = root[0], root[-1]
        root = (root - last) * first / (first - last)
        abar = root**2
        b = 1.0 - np.concatenate([abar[:1], abar[1:] / abar[:-1]])
    return b


def alphas_cumprod(
    num_train_timesteps: int = 1000,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    beta_schedule: str = "scaled_linear",
    rescale_betas_zero_snr: bool = False,
) -> np.ndarray:
    """abar_t -> [T] float32 (arguments as `betas`)."""
    b = betas(num_train_timesteps, beta_start, beta_end, beta_schedule, rescale_betas_zero_snr)
    return np.cumprod(1.0 - b).astype(np.float32)


def _at(abar: jax.Array, timesteps: jax.Array, like: jax.Array) -> jax.Array:
    """abar[timesteps] [B] -> [B, 1, ...] broadcastable against `like` [B, ...], in fp32."""
    return jnp.asarray(abar, jnp.float32)[timesteps].reshape((-1,) + (1,) * (like.ndim - 1))


def add_noise(x0: jax.Array, noise: jax.Array, timesteps: jax.Array, abar: jax.Array) -> jax.Array:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise. x0, noise: [B, ...]; timesteps: [B] int -> [B, ...]."""
    a = _at(abar, timesteps, x0)
    return (jnp.sqrt(a) * x0 + jnp.sqrt(1.0 - a) * noise).astype(x0.dtype)


def velocity(x0: jax.Array, noise: jax.Array, timesteps: jax.Array, abar: jax.Array) -> jax.Array:
    """v = sqrt(abar_t) noise - sqrt(1 - abar_t) x0 (diffusers `get_velocity`). -> [B, ...]."""
    a = _at(abar, timesteps, x0)
    return (jnp.sqrt(a) * noise - jnp.sqrt(1.0 - a) * x0).astype(x0.dtype)


def snr(abar: jax.Array, timesteps: jax.Array) -> jax.Array:
    """Signal-to-noise ratio abar_t / (1 - abar_t) -> [B] fp32 (0 at a zero-terminal-SNR schedule's last step)."""
    a = jnp.asarray(abar, jnp.float32)[timesteps]
    return a / (1.0 - a)


def target(prediction_type: str, x0: jax.Array, noise: jax.Array, timesteps: jax.Array, abar: jax.Array) -> jax.Array:
    """What a model of `prediction_type` is trained to output: the noise ('epsilon') or v ('v_prediction')."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return velocity(x0, noise, timesteps, abar)
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def predict_x0(
    prediction_type: str, model_output: jax.Array, x_t: jax.Array, timesteps: jax.Array, abar: jax.Array
) -> jax.Array:
    """The clean sample a prediction implies: eps -> (x_t - sqrt(1 - abar) eps) / sqrt(abar) (abar > 0);
    v -> sqrt(abar) x_t - sqrt(1 - abar) v. -> [B, ...]."""
    a = _at(abar, timesteps, x_t)
    if prediction_type == "epsilon":
        return ((x_t - jnp.sqrt(1.0 - a) * model_output) / jnp.sqrt(jnp.maximum(a, 1e-12))).astype(x_t.dtype)
    if prediction_type == "v_prediction":
        return (jnp.sqrt(a) * x_t - jnp.sqrt(1.0 - a) * model_output).astype(x_t.dtype)
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
