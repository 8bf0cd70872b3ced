"""Residual conv block and the down/up-samplers (diffusers `resnet.py`, `downsampling.py`, `upsampling.py`)."""

from __future__ import annotations

import jax
from flax import nnx

from emo_jax.models.layers import Compute, conv, group_norm, linear, upsample_nearest


class ResnetBlock2D(nnx.Module):
    """GroupNorm-SiLU-conv twice, with the time embedding added in between, plus a (1x1 conv) shortcut.

    x: [B, H, W, Cin], temb: [B, T] or None -> [B, H, W, Cout].
    `temb_channels=None` gives the VAE's variant without time embedding.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        temb_channels: int | None,
        groups: int = 32,
        eps: float = 1e-5,
        output_scale_factor: float = 1.0,
        compute: Compute,
        rngs: nnx.Rngs,
    ):
        self.output_scale_factor = output_scale_factor
        self.norm1 = group_norm(in_channels, groups, eps, compute, rngs)
        self.conv1 = conv(in_channels, out_channels, compute, rngs)
        self.time_emb_proj = linear(temb_channels, out_channels, compute, rngs) if temb_channels else None
        self.norm2 = group_norm(out_channels, groups, eps, compute, rngs)
        self.conv2 = conv(out_channels, out_channels, compute, rngs)
        self.conv_shortcut = (
            conv(in_channels, out_channels, compute, rngs, kernel_size=1) if in_channels != out_channels else None
        )

    def __call__(self, x: jax.Array, temb: jax.Array | None = None) -> jax.Array:
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        if self.time_emb_proj is not None:
            h = h + self.time_emb_proj(jax.nn.silu(temb))[:, None, None, :]
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        out = x + h
        return out / self.output_scale_factor if self.output_scale_factor != 1.0 else out


class Downsample2D(nnx.Module):
    """Stride-2 3x3 conv. [B, H, W, C] -> [B, ceil(H/2), ceil(W/2), Cout].

    `padding=1` is the UNet's symmetric padding; `padding=0` is the VAE's, which pads only the bottom and
    right edges by one pixel (diffusers pads (0, 1, 0, 1) before an unpadded conv).
    """

    def __init__(self, channels: int, out_channels: int, *, padding: int = 1, compute: Compute, rngs: nnx.Rngs):
        if padding not in (0, 1):
            raise ValueError(f"Downsample2D: padding must be 0 or 1, got {padding}")
        pads = ((1, 1), (1, 1)) if padding == 1 else ((0, 1), (0, 1))
        self.conv = conv(channels, out_channels, compute, rngs, stride=2, padding=pads)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(x)


class Upsample2D(nnx.Module):
    """Nearest 2x (or to `output_size`, for inputs that were not a multiple of the downsampling) + 3x3 conv.

    x: [B, H, W, C] -> [B, 2H, 2W, Cout] (or [B, *output_size, Cout]).
    """

    def __init__(self, channels: int, out_channels: int, *, compute: Compute, rngs: nnx.Rngs):
        self.conv = conv(channels, out_channels, compute, rngs)

    def __call__(self, x: jax.Array, output_size: tuple[int, int] | None = None) -> jax.Array:
        size = output_size or (2 * x.shape[1], 2 * x.shape[2])
        return self.conv(upsample_nearest(x, tuple(size)))
