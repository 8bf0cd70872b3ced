"""Conditioning embeddings: diffusion timestep (later: face locator, speed, audio projection)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from emo_jax.models.layers import Compute, linear


def timestep_embedding(
    timesteps: jax.Array,
    dim: int,
    *,
    flip_sin_to_cos: bool = True,
    freq_shift: float = 0.0,
    max_period: float = 10000.0,
) -> jax.Array:
    """Sinusoidal embedding of (possibly fractional) timesteps. [B] -> [B, dim] float32.

    Frequencies exp(-log(max_period) * i / (dim/2 - freq_shift)); `flip_sin_to_cos` puts cos first
    (diffusers `get_timestep_embedding`, as SD1.5 configures it: flip True, shift 0).
    """
    half = dim // 2
    exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
    args = timesteps.astype(jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
    sin, cos = jnp.sin(args), jnp.cos(args)
    emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class TimestepEmbedding(nnx.Module):
    """MLP on the sinusoidal embedding: linear_1 -> SiLU -> linear_2. [B, Cin] -> [B, Ctime]."""

    def __init__(self, in_channels: int, time_embed_dim: int, *, compute: Compute, rngs: nnx.Rngs):
        self.linear_1 = linear(in_channels, time_embed_dim, compute, rngs)
        self.linear_2 = linear(time_embed_dim, time_embed_dim, compute, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear_2(jax.nn.silu(self.linear_1(x)))
