"""Conditioning embeddings: diffusion timestep, audio projection, face embedding, face locator, head speed."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from emo_jax.models.layers import Compute, conv, layer_norm, linear


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


class ImageProjection(nnx.Module):
    """A face embedding -> context tokens for the UNets' cross-attention (Hallo's `ImageProjModel`, IP-Adapter's
    shape, same names): proj, reshape to tokens, LayerNorm. [B, embedding_dim] -> [B, tokens, dim]."""

    def __init__(self, embedding_dim: int, dim: int, *, tokens: int = 4, compute: Compute = Compute(), rngs: nnx.Rngs):
        self.tokens, self.dim = tokens, dim
        self.proj = linear(embedding_dim, tokens * dim, compute, rngs)
        self.norm = layer_norm(dim, 1e-5, compute, rngs)

    def __call__(self, embedding: jax.Array) -> jax.Array:
        return self.norm(self.proj(embedding).reshape(-1, self.tokens, self.dim))


class FaceLocator(nnx.Module):
    """Face-region mask -> features added to the backbone's first feature map (Hallo's `FaceLocator`, the
    AnimateAnyone pose-guider shape, same names).

    conv_in, then per stage a 3x3 conv and a stride-2 3x3 conv (SiLU after each), then a zero-initialised
    conv_out, so a new locator adds nothing. Three stride-2 stages take the mask to latent resolution (/8).
    The paper adds it "to the noisy latent"; like Hallo (and AnimateAnyone) we add it to the output of the
    UNet's conv_in, which has `conditioning_embedding_channels` channels.
    mask: [N, H, W, conditioning_channels] in [0, 1] -> [N, H / 8, W / 8, conditioning_embedding_channels].
    """

    def __init__(
        self,
        conditioning_embedding_channels: int = 320,
        *,
        conditioning_channels: int = 1,
        block_out_channels: tuple[int, ...] = (16, 32, 64, 128),
        compute: Compute = Compute(),
        rngs: nnx.Rngs,
    ):
        ch = block_out_channels
        self.conv_in = conv(conditioning_channels, ch[0], compute, rngs)
        blocks = []
        for c_in, c_out in zip(ch[:-1], ch[1:]):
            blocks += [conv(c_in, c_in, compute, rngs), conv(c_in, c_out, compute, rngs, stride=2)]
        self.blocks = nnx.List(blocks)
        self.conv_out = conv(ch[-1], conditioning_embedding_channels, compute, rngs, zero_init=True)

    def __call__(self, mask: jax.Array) -> jax.Array:
        x = jax.nn.silu(self.conv_in(mask))
        for block in self.blocks:
            x = jax.nn.silu(block(x))
        return self.conv_out(x)


def speed_buckets(speeds, num_buckets: int = 9, min_radius: float = 0.05) -> tuple[list[float], list[float]]:
    """Bucket centres and radii from observed head-rotation speeds (degrees per frame).

    Centres at the speeds' (i + 0.5) / d quantiles, so each bucket holds as many frames; radius i is half the
    distance to the nearer neighbouring centre, at least `min_radius` (label noise: where slow frames crowd the
    low quantiles, centres a few hundredths apart would otherwise turn tanh ramps into steps that flip on noise).
    """
    speeds = np.asarray(speeds, np.float64).ravel()
    if speeds.size < num_buckets:
        raise ValueError(f"need at least {num_buckets} speed samples, got {speeds.size}")
    centres = np.quantile(speeds, (np.arange(num_buckets) + 0.5) / num_buckets)
    gaps = np.diff(centres)
    nearest = np.minimum(np.r_[gaps[:1], gaps], np.r_[gaps, gaps[-1:]]) if num_buckets > 1 else np.ones(1)
    return centres.tolist(), np.maximum(nearest / 2, min_radius).tolist()


def window_indices(num_frames: int, m: int) -> np.ndarray:
    """[F, 2m + 1] frame indices f-m .. f+m for each frame f, clipped to the clip (edges repeated): the +/-m
    window of audio features and of speed vectors (paper, section 3)."""
    return np.clip(np.arange(num_frames)[:, None] + np.arange(-m, m + 1)[None, :], 0, num_frames - 1)


def speed_window(speed: jax.Array, centres, radii, m: int) -> jax.Array:
    """Per-frame head speed -> bucketed and windowed speed features (paper, section 3.2).

    s_i = tanh(3 (w_f - c_i) / r_i) for the d buckets, then for frame f the vectors of frames f-m .. f+m
    (edges repeated), concatenated. speed: [B, F] degrees per frame -> [B, F, (2m + 1) d].
    """
    centres, radii = jnp.asarray(centres, jnp.float32), jnp.asarray(radii, jnp.float32)
    buckets = jnp.tanh(3.0 * (speed[..., None] - centres) / radii)  # [B, F, d]
    num_frames = speed.shape[1]
    return buckets[:, window_indices(num_frames, m)].reshape(speed.shape[0], num_frames, -1)


class SpeedEncoder(nnx.Module):
    """Head speed -> `tokens` speed tokens per frame, which the temporal layers attend to per frame.

    speed: [B, F] degrees per frame -> `speed_window` [B, F, (2m + 1) d] -> linear_1 -> SiLU -> linear_2
    -> [B, F, tokens, dim] (frame f's tokens carry the speeds of frames f-m .. f+m).
    """

    def __init__(
        self,
        centres,
        radii,
        *,
        m: int = 2,
        hidden_dim: int = 256,
        dim: int = 768,
        tokens: int = 1,
        compute: Compute = Compute(),
        rngs: nnx.Rngs,
    ):
        if len(centres) != len(radii):
            raise ValueError(f"SpeedEncoder: {len(centres)} bucket centres but {len(radii)} radii")
        self.centres, self.radii, self.m, self.tokens, self.dim = tuple(centres), tuple(radii), m, tokens, dim
        self.linear_1 = linear((2 * m + 1) * len(centres), hidden_dim, compute, rngs)
        self.linear_2 = linear(hidden_dim, tokens * dim, compute, rngs)

    def __call__(self, speed: jax.Array) -> jax.Array:
        x = self.linear_2(jax.nn.silu(self.linear_1(speed_window(speed, self.centres, self.radii, self.m))))
        return x.reshape(speed.shape + (self.tokens, self.dim))
