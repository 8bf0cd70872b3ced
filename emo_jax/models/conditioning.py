"""Conditioning embeddings: diffusion timestep, audio projection (later: face locator, speed)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from emo_jax.models.layers import Compute, layer_norm, linear


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


class AudioProjection(nnx.Module):
    """Windowed audio features -> audio context tokens per frame (Hallo's `AudioProjModel`, same names).

    [B, F, W, L, D] (W = 2m + 1 window frames, L feature layers of width D) -> flatten -> proj1 -> ReLU ->
    proj2 -> ReLU -> proj3 -> [B, F, context_tokens, output_dim] -> LayerNorm.
    """

    def __init__(
        self,
        *,
        seq_len: int = 5,
        blocks: int = 12,
        channels: int = 768,
        intermediate_dim: int = 512,
        output_dim: int = 768,
        context_tokens: int = 32,
        compute: Compute = Compute(),
        rngs: nnx.Rngs,
    ):
        self.context_tokens, self.output_dim = context_tokens, output_dim
        self.proj1 = linear(seq_len * blocks * channels, intermediate_dim, compute, rngs)
        self.proj2 = linear(intermediate_dim, intermediate_dim, compute, rngs)
        self.proj3 = linear(intermediate_dim, context_tokens * output_dim, compute, rngs)
        self.norm = layer_norm(output_dim, 1e-5, compute, rngs)

    def __call__(self, audio_features: jax.Array) -> jax.Array:
        b, f = audio_features.shape[:2]
        x = audio_features.reshape(b, f, -1)
        x = jax.nn.relu(self.proj2(jax.nn.relu(self.proj1(x))))
        return self.norm(self.proj3(x).reshape(b, f, self.context_tokens, self.output_dim))
