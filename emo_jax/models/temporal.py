"""AnimateDiff motion modules: transformers over the frame axis, one after each spatial layer of the UNet.

Names mirror diffusers (`AnimateDiffTransformer3D` inside `UNetMotionModel` / `MotionAdapter`), so motion
adapter checkpoints load by the generic rules.
"""

from __future__ import annotations

import dataclasses

import jax
from flax import nnx

from emo_jax.models.attention import BasicTransformerBlock
from emo_jax.models.layers import Compute, group_norm, linear


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


class TemporalTransformer(nnx.Module):
    """diffusers `AnimateDiffTransformer3D`: attention across frames at every pixel.

    GroupNorm over each video's frames and pixels -> proj_in -> blocks of (self-attention over frames twice,
    with sinusoidal frame positions, then GEGLU) -> proj_out (zero-initialised, so a new module starts as the
    identity) -> residual.
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
        compute: Compute,
        rngs: nnx.Rngs,
    ):
        self.norm = group_norm(channels, norm_num_groups, 1e-6, compute, rngs)
        self.proj_in = linear(channels, channels, compute, rngs)
        self.transformer_blocks = nnx.List(
            [
                BasicTransformerBlock(
                    channels,
                    heads=num_attention_heads,
                    dim_head=channels // num_attention_heads,
                    cross_attention_dim=None,
                    max_positions=max_seq_length,
                    compute=compute,
                    rngs=rngs,
                )
                for _ in range(num_layers)
            ]
        )
        self.proj_out = linear(channels, channels, compute, rngs, zero_init=True)

    def __call__(self, x: jax.Array, num_frames: int) -> jax.Array:
        bf, h, w, c = x.shape
        b = bf // num_frames
        video = self.norm(x.reshape(b, num_frames, h, w, c))  # statistics over frames and pixels of a video
        tokens = video.transpose(0, 2, 3, 1, 4).reshape(b * h * w, num_frames, c)  # sequences over frames
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens)
        tokens = self.proj_out(tokens)
        out = tokens.reshape(b, h, w, num_frames, c).transpose(0, 3, 1, 2, 4).reshape(bf, h, w, c)
        return out + x
