"""AnimateDiff motion modules: transformers over the frame axis, one after each spatial layer of the UNet.

Names mirror diffusers (`AnimateDiffTransformer3D` inside `UNetMotionModel` / `MotionAdapter`), so motion
adapter checkpoints load by the generic rules.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from emo_jax.models.attention import BasicTransformerBlock, Context
from emo_jax.models.layers import Compute, group_norm, linear

MOTION_FEATURES = ("residual", "attention_input")


@dataclasses.dataclass(frozen=True)
class MotionConfig:
    """The temporal layers of a video UNet; names as diffusers' `UNetMotionModel` config.

    GroupNorm groups are the UNet's `norm_num_groups`; head dim = channels / heads.
    """

    motion_num_attention_heads: int = 8
    motion_max_seq_length: int = 32
    temporal_transformer_layers_per_block: int = 1
    temporal_transformer_layers_per_mid_block: int = 1
    use_motion_mid_block: bool = True
    speed_cross_attention_dim: int | None = None  # EMO: temporal blocks attend to speed tokens of this width
    # GroupNorm statistics per frame (original AnimateDiff, Hallo, EMO) or over all frames of a video together
    # (diffusers' `AnimateDiffTransformer3D`, for parity with converted `UNetMotionModel`s).
    norm_per_frame: bool = False
    # Which ReferenceNet features of the motion frames a module reads: 'residual' (EMO: the ReferenceNet's hidden
    # state at the point where this module reads the backbone's, at every temporal module) or 'attention_input'
    # (Hallo: the normed self-attention input of the spatial block before it; modules after a block without
    # spatial attention get no motion frames).
    motion_features: str = "residual"
    # Motion modules also in the stages without spatial attention (SD's last down and first up stage). Hallo's
    # inference runs none there (its UNet's checkpointed path calls only those stages' resnets): False.
    in_plain_stages: bool = True

    def __post_init__(self):
        if self.motion_features not in MOTION_FEATURES:
            raise ValueError(
                f"MotionConfig.motion_features must be one of {MOTION_FEATURES}, got {self.motion_features!r}"
            )


class TemporalTransformer(nnx.Module):
    """diffusers `AnimateDiffTransformer3D`: attention across frames at every pixel.

    GroupNorm (over each frame's pixels with `norm_per_frame`, else over a video's frames and pixels) -> proj_in
    -> blocks of (self-attention over frames twice, with sinusoidal frame positions, [speed cross-attention,]
    then GEGLU) -> proj_out (zero-initialised, so a new module starts as the identity) -> residual.
    EMO: `context.motion[self.motion_key]` ([B, n, H * W, C], ReferenceNet features of the n motion frames, see
    `MotionConfig.motion_features`) are prepended as frames; the module runs over n + F frames and returns the
    last F. `context.speed` [B, F, K, Ds] (K tokens per frame) is attended per frame by every block: frame f's
    tokens by frame f only (`speed_cross_attention_dim`); motion frames attend to none.
    x: [B * F, H, W, C] with frames contiguous per video -> [B * F, H, W, C].
    """

    def __init__(
        self,
        channels: int,
        *,
        num_attention_heads: int,
        num_layers: int,
        norm_num_groups: int,
        max_seq_length: int,
        speed_cross_attention_dim: int | None = None,
        norm_per_frame: bool = False,
        compute: Compute,
        rngs: nnx.Rngs,
    ):
        self.motion_key: str | None = None  # set by the owning UNet: its key in `context.motion`
        self.norm_per_frame = norm_per_frame
        self.norm = group_norm(channels, norm_num_groups, 1e-6, compute, rngs)
        self.proj_in = linear(channels, channels, compute, rngs)
        self.transformer_blocks = nnx.List(
            [
                BasicTransformerBlock(
                    channels,
                    heads=num_attention_heads,
                    dim_head=channels // num_attention_heads,
                    cross_attention_dim=None,
                    double_self_attention=True,
                    max_positions=max_seq_length,
                    speed_cross_attention_dim=speed_cross_attention_dim,
                    compute=compute,
                    rngs=rngs,
                )
                for _ in range(num_layers)
            ]
        )
        self.proj_out = linear(channels, channels, compute, rngs, zero_init=True)

    def __call__(self, x: jax.Array, num_frames: int, context: Context = Context()) -> jax.Array:
        bf, h, w, c = x.shape
        b = bf // num_frames
        video = x.reshape(b, num_frames, h, w, c)
        motion = (context.motion or {}).get(self.motion_key) if self.motion_key else None
        if motion is not None:  # motion frames first: [B, n + F, H, W, C]
            video = jnp.concatenate([motion.reshape(b, -1, h, w, c).astype(video.dtype), video], axis=1)
        frames = video.shape[1]
        if self.norm_per_frame:  # statistics over each frame's pixels
            video = self.norm(video.reshape(b * frames, h, w, c)).reshape(b, frames, h, w, c)
        else:  # over a video's frames and pixels together
            video = self.norm(video)
        tokens = video.transpose(0, 2, 3, 1, 4).reshape(b * h * w, frames, c)  # sequences over frames
        tokens = self.proj_in(tokens)
        block_context = Context()
        if context.speed is not None:  # per frame: [B * (n + F), K, Ds], motion frames without tokens
            extra = frames - num_frames
            speed = jnp.pad(context.speed, ((0, 0), (extra, 0), (0, 0), (0, 0)))
            keep = jnp.ones((b,)) if context.speed_keep is None else context.speed_keep
            keep = jnp.concatenate([jnp.zeros((b, extra)), jnp.broadcast_to(keep[:, None], (b, num_frames))], 1)
            block_context = Context(
                speed=speed.reshape((b * frames,) + speed.shape[2:]), speed_keep=keep.reshape(-1), pixels=h * w
            )
        for block in self.transformer_blocks:
            tokens = block(tokens, block_context)
        tokens = self.proj_out(tokens)
        out = tokens.reshape(b, h, w, frames, c).transpose(0, 3, 1, 2, 4)[:, frames - num_frames :]
        return out.reshape(bf, h, w, c) + x
