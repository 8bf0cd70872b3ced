"""Noise schedules as pure functions (diffusers `DDPMScheduler` conventions, SD1.5 defaults)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def alphas_cumprod(
    num_train_timesteps: int = 1000,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    beta_schedule: str = "scaled_linear",
) -> np.ndarray:
    """abar_t = prod_{s<=t} (1 - beta_s), t = 0..T-1. 'scaled_linear' (SD) interpolates sqrt(beta). -> [T] float32."""
    if beta_schedule == "scaled_linear":
        betas = np.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=np.float64) ** 2
    elif beta_schedule == "linear":
        betas = np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64)
    else:
        raise ValueError(f"beta_schedule must be 'scaled_linear' or 'linear', got {beta_schedule!r}")
    return np.cumprod(1.0 - betas).astype(np.float32)


def add_noise(x0: jax.Array, noise: jax.Array, timesteps: jax.Array, abar: jax.Array) -> jax.Array:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise. x0, noise: [B, ...]; timesteps: [B] int -> [B, ...]."""
    a = jnp.asarray(abar)[timesteps].reshape((-1,) + (1,) * (x0.ndim - 1)).astype(x0.dtype)
    return jnp.sqrt(a) * x0 + jnp.sqrt(1.0 - a) * noise
