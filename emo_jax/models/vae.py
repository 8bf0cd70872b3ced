"""The SD VAE (diffusers `AutoencoderKL`), channels-last: images <-> latents at 1/8 resolution."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, struct

from emo_jax.models.attention import Attention
from emo_jax.models.hf_config import read_hf_config, to_diffusers_config
from emo_jax.models.layers import Compute, conv, group_norm
from emo_jax.models.unet_blocks import DownBlock2D, MidBlock2D, UpBlock2D

_SUPPORTED_ONLY = {
    "act_fn": ("silu",),
    "down_block_types": lambda types: all(t == "DownEncoderBlock2D" for t in types),
    "up_block_types": lambda types: all(t == "UpDecoderBlock2D" for t in types),
    "shift_factor": (None, 0.0),
    "latents_mean": (None,),
    "latents_std": (None,),
    "use_quant_conv": (True,),
    "use_post_quant_conv": (True,),
}
_NO_EFFECT = {"sample_size", "force_upcast"}


@dataclasses.dataclass(frozen=True)
class AutoencoderKLConfig:
    """Architecture of the VAE; names and defaults as in diffusers' config.json of sd-vae-ft-mse."""

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    scaling_factor: float = 0.18215
    mid_block_add_attention: bool = True

    def __post_init__(self):
        object.__setattr__(self, "block_out_channels", tuple(self.block_out_channels))

    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any], *, source: str = "config") -> AutoencoderKLConfig:
        """Reads a diffusers `AutoencoderKL` config.json dict; unsupported features raise, naming the key."""
        return cls(**read_hf_config(cls, config, supported_only=_SUPPORTED_ONLY, no_effect=_NO_EFFECT, source=source))

    def to_diffusers(self) -> dict[str, Any]:
        """The diffusers config.json dict of this architecture (`AutoencoderKL(**d)` builds its twin)."""
        n = len(self.block_out_channels)
        return {
            **to_diffusers_config(self, "AutoencoderKL"),
            "down_block_types": ["DownEncoderBlock2D"] * n,
            "up_block_types": ["UpDecoderBlock2D"] * n,
        }


@struct.dataclass
class DiagonalGaussian:
    """The encoder's posterior N(mean, exp(logvar)) over latents [B, h, w, C] (logvar clipped to [-30, 20])."""

    mean: jax.Array
    logvar: jax.Array

    @property
    def std(self) -> jax.Array:
        return jnp.exp(0.5 * self.logvar)

    def sample(self, key: jax.Array) -> jax.Array:
        return self.mean + self.std * jax.random.normal(key, self.mean.shape, self.mean.dtype)

    def mode(self) -> jax.Array:
        return self.mean


def _mid_block(channels: int, c: AutoencoderKLConfig, compute: Compute, rngs: nnx.Rngs) -> MidBlock2D:
    def spatial_attention(ch: int) -> Attention:
        # One-head self-attention with GroupNorm and residual, as diffusers' VAE mid block.
        return Attention(
            ch,
            heads=1,
            dim_head=ch,
            bias=True,
            norm_num_groups=c.norm_num_groups,
            residual_connection=True,
            compute=compute,
            rngs=rngs,
        )

    return MidBlock2D(
        channels,
        temb_channels=None,
        make_attention=spatial_attention if c.mid_block_add_attention else None,
        resnet_groups=c.norm_num_groups,
        resnet_eps=1e-6,
        compute=compute,
        rngs=rngs,
    )


class Encoder(nnx.Module):
    """[B, H, W, 3] -> [B, H/2^(n-1), W/2^(n-1), 2 * latent_channels] (mean and logvar stacked)."""

    def __init__(self, c: AutoencoderKLConfig, *, compute: Compute, rngs: nnx.Rngs):
        ch = c.block_out_channels
        self.conv_in = conv(c.in_channels, ch[0], compute, rngs)
        self.down_blocks = nnx.List(
            [
                DownBlock2D(
                    ch[max(i - 1, 0)],
                    ch[i],
                    num_layers=c.layers_per_block,
                    temb_channels=None,
                    add_downsample=i < len(ch) - 1,
                    resnet_groups=c.norm_num_groups,
                    resnet_eps=1e-6,
                    downsample_padding=0,
                    compute=compute,
                    rngs=rngs,
                )
                for i in range(len(ch))
            ]
        )
        self.mid_block = _mid_block(ch[-1], c, compute, rngs)
        self.conv_norm_out = group_norm(ch[-1], c.norm_num_groups, 1e-6, compute, rngs)
        self.conv_out = conv(ch[-1], 2 * c.latent_channels, compute, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x, _ = block(x)
        x = self.mid_block(x)
        return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


class Decoder(nnx.Module):
    """[B, h, w, latent_channels] -> [B, h * 2^(n-1), w * 2^(n-1), out_channels]."""

    def __init__(self, c: AutoencoderKLConfig, *, compute: Compute, rngs: nnx.Rngs):
        rev = c.block_out_channels[::-1]
        self.conv_in = conv(c.latent_channels, rev[0], compute, rngs)
        self.mid_block = _mid_block(rev[0], c, compute, rngs)
        self.up_blocks = nnx.List(
            [
                UpBlock2D(
                    rev[max(i - 1, 0)],
                    rev[i],
                    num_layers=c.layers_per_block + 1,
                    temb_channels=None,
                    add_upsample=i < len(rev) - 1,
                    resnet_groups=c.norm_num_groups,
                    resnet_eps=1e-6,
                    compute=compute,
                    rngs=rngs,
                )
                for i in range(len(rev))
            ]
        )
        self.conv_norm_out = group_norm(rev[-1], c.norm_num_groups, 1e-6, compute, rngs)
        self.conv_out = conv(rev[-1], c.out_channels, compute, rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


class AutoencoderKL(nnx.Module):
    """`vae.encode(x[B,H,W,3]) -> DiagonalGaussian`, `vae.decode(z[B,h,w,4]) -> [B,H,W,3]`; pixels in [-1, 1].

    Latents for diffusion are `posterior.sample(key) * config.scaling_factor`; decode takes unscaled latents,
    as in diffusers.
    """

    def __init__(self, config: AutoencoderKLConfig, *, compute: Compute = Compute(), rngs: nnx.Rngs):
        self.config = config
        self.encoder = Encoder(config, compute=compute, rngs=rngs)
        self.decoder = Decoder(config, compute=compute, rngs=rngs)
        moments = 2 * config.latent_channels
        self.quant_conv = conv(moments, moments, compute, rngs, kernel_size=1)
        self.post_quant_conv = conv(config.latent_channels, config.latent_channels, compute, rngs, kernel_size=1)

    def encode(self, x: jax.Array) -> DiagonalGaussian:
        mean, logvar = jnp.split(self.quant_conv(self.encoder(x)), 2, axis=-1)
        return DiagonalGaussian(mean=mean, logvar=jnp.clip(logvar, -30.0, 20.0))

    def decode(self, z: jax.Array) -> jax.Array:
        return self.decoder(self.post_quant_conv(z))

    def __call__(self, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """Reconstruction: decode(sample) with `key`, else decode(mean). [B, H, W, 3] -> [B, H, W, 3]."""
        posterior = self.encode(x)
        return self.decode(posterior.sample(key) if key is not None else posterior.mode())
