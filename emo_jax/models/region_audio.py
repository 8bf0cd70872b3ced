"""Hallo's hierarchical audio attention: audio cross-attention weighted by full / face / lip region masks.

`RegionAudioBlock` mirrors Hallo's `AudioTemporalBasicTransformerBlock` (hallo/models/attention.py), names
included, so a key of Hallo's `net.pth` such as
`denoising_unet.down_blocks.0.audio_modules.0.transformer_blocks.0.attn2_1.to_q.weight` names our path. In a
UNet built with `UNetConfig.audio_attention='regions'` it sits in a `Transformer2DModel` of its own (Hallo's
`audio_modules`) after each layer's spatial transformer and before its motion module.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from emo_jax.models.attention import Attention, Context, FeedForward
from emo_jax.models.layers import Compute, layer_norm, linear

REGIONS = ("full", "face", "lip")


class RegionAudioBlock(nnx.Module):
    """norm1 -> attn1 (self-attention) + residual; norm2 -> audio cross-attention; norm3 -> ff + residual.

    The audio attention is three attentions, `attn2_0/1/2` (Hallo's `stack_enable_blocks` form, which its
    released model uses in every block; its single-`attn2` form is not built), whose outputs [N, S, C] are
    multiplied by the full / face / lip mask of this resolution ([N, S], 1 inside the region), each passed
    through a 1x1 conv (`zero_conv_full/face/lip`, zero-initialised; a dense layer on channels-last tokens) and
    weighted by `context.motion_scale` [3] (Hallo's pose / face / lip weights; 1 when None) before the sum
    joins the residual.
    `context.audio`: [N, A, Da] tokens per frame; `context.audio_keep` [N] zeroes a dropped sample's tokens
    (Hallo's unconditional branch attends to zero tokens; its attention still adds the output bias).
    `context.region_masks`: per resolution [N, 3, S] (full, face, lip), chosen by S = this block's tokens.
    hidden_states: [N, S, C] -> [N, S, C].
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int,
        dim_head: int,
        cross_attention_dim: int,
        compute: Compute,
        rngs: nnx.Rngs,
    ):
        for region in REGIONS:
            setattr(self, f"zero_conv_{region}", linear(dim, dim, compute, rngs, zero_init=True))
        self.attn1 = Attention(dim, heads=heads, dim_head=dim_head, compute=compute, rngs=rngs)
        self.norm1 = layer_norm(dim, 1e-5, compute, rngs)
        for i in range(len(REGIONS)):
            setattr(
                self,
                f"attn2_{i}",
                Attention(
                    dim,
                    heads=heads,
                    dim_head=dim_head,
                    cross_attention_dim=cross_attention_dim,
                    compute=compute,
                    rngs=rngs,
                ),
            )
        self.norm2 = layer_norm(dim, 1e-5, compute, rngs)
        self.ff = FeedForward(dim, compute=compute, rngs=rngs)
        self.norm3 = layer_norm(dim, 1e-5, compute, rngs)

    def __call__(self, hidden_states: jax.Array, context: Context) -> jax.Array:
        if context.audio is None:
            raise ValueError("RegionAudioBlock: no audio tokens in the context")
        tokens = context.audio
        if context.audio_keep is not None:
            tokens = tokens * context.audio_keep[:, None, None].astype(tokens.dtype)
        hidden_states = hidden_states + self.attn1(self.norm1(hidden_states))
        normed = self.norm2(hidden_states)
        masks = _masks_for(context.region_masks, hidden_states.shape[1])
        scale = jnp.ones((3,)) if context.motion_scale is None else context.motion_scale
        terms = []
        for i, region in enumerate(REGIONS):
            out = getattr(self, f"attn2_{i}")(normed, tokens) * masks[:, i, :, None].astype(normed.dtype)
            terms.append(scale[i].astype(out.dtype) * getattr(self, f"zero_conv_{region}")(out))
        hidden_states = terms[0] + terms[1] + terms[2] + hidden_states  # Hallo's order of the sum
        return hidden_states + self.ff(self.norm3(hidden_states))


def _masks_for(region_masks: tuple[jax.Array, ...] | None, tokens: int) -> jax.Array:
    """The [N, 3, S] masks of the resolution with S == tokens."""
    for masks in region_masks or ():
        if masks.shape[-1] == tokens:
            return masks
    sizes = [m.shape[-1] for m in region_masks or ()]
    raise ValueError(f"RegionAudioBlock: no region masks for {tokens} tokens (masks given for {sizes})")
