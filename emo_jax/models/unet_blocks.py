"""The down, mid and up stages shared by the UNet and the VAE (diffusers `unet_2d_blocks.py`).

One class per stage kind. Whether a stage has attention after each resnet is the `make_attention`
argument (a factory `channels -> module`, or None), so diffusers' CrossAttnDownBlock2D / DownBlock2D /
DownEncoderBlock2D are one `DownBlock2D`, and likewise up and mid.
An attention module is called as `attn(x, context)`; in the VAE, context is None and the spatial
attention attends to its own input. With `Compute(remat=True)` each resnet, attention and motion module is
recomputed in the backward pass. Video UNets add `make_motion` (a factory of AnimateDiff temporal
transformers, called as `motion(x, num_frames)` on [B * F, H, W, C]) after each layer's spatial attention.
Hallo's layout adds `make_audio` (layer index -> an audio transformer, called as `audio(x, context)`) between
the two.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from emo_jax.models.attention import Context
from emo_jax.models.layers import Compute
from emo_jax.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D

AttentionFactory = Callable[[int], nnx.Module]
LayerFactory = Callable[[int], nnx.Module]  # layer index -> module (its widths are the caller's business)


def _modules(factory: AttentionFactory | None, channels: int, count: int) -> nnx.List | None:
    return nnx.List([factory(channels) for _ in range(count)]) if factory else None


def _layers(factory: LayerFactory | None, count: int) -> nnx.List | None:
    return nnx.List([factory(i) for i in range(count)]) if factory else None


def _resnets(
    in_channels: Sequence[int],
    out_channels: int,
    *,
    temb_channels: int | None,
    groups: int,
    eps: float,
    output_scale_factor: float = 1.0,
    compute: Compute,
    rngs: nnx.Rngs,
) -> nnx.List:
    """One ResnetBlock2D per entry of `in_channels`, each to `out_channels`."""
    return nnx.List(
        [
            ResnetBlock2D(
                c,
                out_channels,
                temb_channels=temb_channels,
                groups=groups,
                eps=eps,
                output_scale_factor=output_scale_factor,
                compute=compute,
                rngs=rngs,
            )
            for c in in_channels
        ]
    )


def _run(stage: nnx.Module, context: Context | None, fn: Callable, module: nnx.Module, *arrays) -> jax.Array:
    """fn(module, *arrays); recomputed in the backward pass (`nnx.remat`) where the stage was built with
    `Compute(remat=True)`, except while a ReferenceNet collects features (sowing needs the forward's values)."""
    if stage.remat and not (context is not None and context.collect):
        return nnx.remat(fn)(module, *arrays)
    return fn(module, *arrays)


def _resnet(stage: nnx.Module, i: int, x: jax.Array, temb: jax.Array | None, context: Context | None) -> jax.Array:
    return _run(stage, context, lambda m, x, temb: m(x, temb), stage.resnets[i], x, temb)


def _attend(stage: nnx.Module, i: int, x: jax.Array, context: Context | None, num_frames: int | None) -> jax.Array:
    """Layer i's spatial attention, [audio module,] then its temporal module, where the stage has them. A
    ReferenceNet (`context.collect`) sows the hidden state here as `motion_input_<i>`: what a temporal module
    would read."""
    if stage.attentions is not None:
        x = _run(stage, context, lambda m, x, ctx: m(x, ctx), stage.attentions[i], x, context)
    if stage.audio_modules is not None:
        x = _run(stage, context, lambda m, x, ctx: m(x, ctx), stage.audio_modules[i], x, context)
    if context is not None and context.collect:
        stage.sow(nnx.Intermediate, f"motion_input_{i}", x)
    if stage.motion_modules is not None:
        x = _run(stage, context, lambda m, x, ctx: m(x, num_frames, ctx), stage.motion_modules[i], x, context)
    return x


class DownBlock2D(nnx.Module):
    """`num_layers` x (resnet [-> attention] [-> motion]) then an optional stride-2 downsampler.

    x: [B, H, W, Cin] -> ([B, H', W', Cout], skips), one skip per resnet and one after the downsampler.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        num_layers: int,
        temb_channels: int | None,
        add_downsample: bool,
        make_attention: AttentionFactory | None = None,
        make_motion: AttentionFactory | None = None,
        make_audio: LayerFactory | None = None,
        resnet_groups: int = 32,
        resnet_eps: float = 1e-5,
        downsample_padding: int = 1,
        compute: Compute,
        rngs: nnx.Rngs,
    ):
        self.resnets = _resnets(
            [in_channels] + [out_channels] * (num_layers - 1),
            out_channels,
            temb_channels=temb_channels,
            groups=resnet_groups,
            eps=resnet_eps,
            compute=compute,
            rngs=rngs,
        )
        self.attentions = _modules(make_attention, out_channels, num_layers)
        self.motion_modules = _modules(make_motion, out_channels, num_layers)
        self.audio_modules = _layers(make_audio, num_layers)
        self.remat = compute.remat
        self.downsamplers = (
            nnx.List([Downsample2D(out_channels, out_channels, padding=downsample_padding, compute=compute, rngs=rngs)])
            if add_downsample
            else None
        )

    def __call__(
        self,
        x: jax.Array,
        temb: jax.Array | None = None,
        context: Context | None = None,
        num_frames: int | None = None,
    ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        skips = []
        for i in range(len(self.resnets)):
            x = _resnet(self, i, x, temb, context)
            x = _attend(self, i, x, context, num_frames)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, tuple(skips)


class MidBlock2D(nnx.Module):
    """resnet, then `num_layers` x (attention [-> motion] -> resnet). [B, H, W, C] -> [B, H, W, C].

    diffusers `UNetMidBlock2DCrossAttn` (transformer attention) and `UNetMidBlock2D` (VAE spatial attention).
    """

    def __init__(
        self,
        channels: int,
        *,
        temb_channels: int | None,
        make_attention: AttentionFactory | None,
        make_motion: AttentionFactory | None = None,
        make_audio: LayerFactory | None = None,
        num_layers: int = 1,
        resnet_groups: int = 32,
        resnet_eps: float = 1e-5,
        output_scale_factor: float = 1.0,
        compute: Compute,
        rngs: nnx.Rngs,
    ):
        self.resnets = _resnets(
            [channels] * (num_layers + 1),
            channels,
            temb_channels=temb_channels,
            groups=resnet_groups,
            eps=resnet_eps,
            output_scale_factor=output_scale_factor,
            compute=compute,
            rngs=rngs,
        )
        self.attentions = _modules(make_attention, channels, num_layers)
        self.motion_modules = _modules(make_motion, channels, num_layers)
        self.audio_modules = _layers(make_audio, num_layers)
        self.remat = compute.remat

    def __call__(
        self,
        x: jax.Array,
        temb: jax.Array | None = None,
        context: Context | None = None,
        num_frames: int | None = None,
    ) -> jax.Array:
        x = _resnet(self, 0, x, temb, context)
        for i in range(len(self.resnets) - 1):
            x = _attend(self, i, x, context, num_frames)
            x = _resnet(self, i + 1, x, temb, context)
        return x


class UpBlock2D(nnx.Module):
    """`num_layers` x ([concat skip ->] resnet [-> attention] [-> motion]) then an optional 2x upsampler.

    With `skip_channels` (the UNet), resnet i reads the running features concatenated with skip
    `skip_channels[i]` channels wide, consumed from the end of the down path; without (the VAE decoder)
    it reads the running features alone.
    x: [B, H, W, Cprev] -> [B, 2H, 2W, Cout] (or [B, *upsample_size, Cout]).
    """

    def __init__(
        self,
        prev_output_channel: int,
        out_channels: int,
        *,
        num_layers: int,
        temb_channels: int | None,
        add_upsample: bool,
        skip_channels: Sequence[int] | None = None,
        make_attention: AttentionFactory | None = None,
        make_motion: AttentionFactory | None = None,
        make_audio: LayerFactory | None = None,
        resnet_groups: int = 32,
        resnet_eps: float = 1e-5,
        compute: Compute,
        rngs: nnx.Rngs,
    ):
        if skip_channels is not None and len(skip_channels) != num_layers:
            raise ValueError(f"UpBlock2D: {num_layers} layers but {len(skip_channels)} skip widths")
        self.uses_skips = skip_channels is not None
        self.resnets = _resnets(
            [
                (prev_output_channel if i == 0 else out_channels) + (skip_channels[i] if skip_channels else 0)
                for i in range(num_layers)
            ],
            out_channels,
            temb_channels=temb_channels,
            groups=resnet_groups,
            eps=resnet_eps,
            compute=compute,
            rngs=rngs,
        )
        self.attentions = _modules(make_attention, out_channels, num_layers)
        self.motion_modules = _modules(make_motion, out_channels, num_layers)
        self.audio_modules = _layers(make_audio, num_layers)
        self.remat = compute.remat
        self.upsamplers = (
            nnx.List([Upsample2D(out_channels, out_channels, compute=compute, rngs=rngs)]) if add_upsample else None
        )

    def __call__(
        self,
        x: jax.Array,
        skips: Sequence[jax.Array] = (),
        temb: jax.Array | None = None,
        context: Context | None = None,
        upsample_size: tuple[int, int] | None = None,
        num_frames: int | None = None,
    ) -> jax.Array:
        skips = list(skips)
        for i in range(len(self.resnets)):
            if self.uses_skips:
                x = jnp.concatenate([x, skips.pop()], axis=-1)
            x = _resnet(self, i, x, temb, context)
            x = _attend(self, i, x, context, num_frames)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, upsample_size)
        return x
