"""wav2vec2 (transformers `Wav2Vec2Model`) in Flax NNX: 16 kHz waveform -> all hidden states.

Attribute names mirror transformers (`feature_extractor.conv_layers.0.conv`, `encoder.layers.3.attention.q_proj`),
so `convert.wav2vec2.from_hf_wav2vec2` is the generic state-dict copy plus folding the positional conv's weight
norm. Both encoder variants: post-norm (`do_stable_layer_norm=False`, wav2vec2-base) and layer-norm-first
(`do_stable_layer_norm=True`, large / XLS-R); both feature-extractor norms ('group' and 'layer').
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from emo_jax.models.attention import dot_product_attention
from emo_jax.models.hf_config import read_hf_config
from emo_jax.models.layers import Compute, group_norm, layer_norm, linear

_SUPPORTED_ONLY = {
    "feat_extract_activation": ("gelu",),
    "hidden_act": ("gelu",),
    "feat_extract_norm": ("group", "layer"),
    "add_adapter": (False,),
    "position_embeddings_type": (None, "conv"),
}
# Training-only knobs (dropouts, masking, CTC / pretraining heads) change nothing at inference.
_NO_EFFECT = {
    "activation_dropout",
    "attention_dropout",
    "hidden_dropout",
    "feat_proj_dropout",
    "final_dropout",
    "layerdrop",
    "feat_quantizer_dropout",
    "mask_time_prob",
    "mask_time_length",
    "mask_time_min_masks",
    "mask_feature_prob",
    "mask_feature_length",
    "mask_feature_min_masks",
    "apply_spec_augment",
    "ctc_loss_reduction",
    "ctc_zero_infinity",
    "vocab_size",
    "num_codevectors_per_group",
    "num_codevector_groups",
    "contrastive_logits_temperature",
    "num_negatives",
    "codevector_dim",
    "proj_codevector_dim",
    "diversity_loss_weight",
    "use_weighted_layer_sum",
    "classifier_proj_size",
    "tdnn_dim",
    "tdnn_kernel",
    "tdnn_dilation",
    "xvector_output_dim",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "architectures",
    "model_type",
    "transformers_version",
    "gradient_checkpointing",
    "torch_dtype",
    "dtype",
    "initializer_range",
    "output_hidden_size",
    "num_adapter_layers",
    "adapter_kernel_size",
    "adapter_stride",
    "adapter_attn_dim",
    "feat_extract_dropout",
    "feat_extract_norm_eps",
    "num_feat_extract_layers",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    "id2label",
    "label2id",
    "problem_type",
    "tie_word_embeddings",
    "chunk_size_feed_forward",
    "is_encoder_decoder",
    "add_cross_attention",
    "tokenizer_class",
    "layer_norm_eps_feat",
}


@dataclasses.dataclass(frozen=True)
class Wav2Vec2Config:
    """Architecture; names and defaults as transformers' `Wav2Vec2Config` (wav2vec2-base)."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    layer_norm_eps: float = 1e-5
    feat_extract_norm: str = "group"
    conv_dim: tuple[int, ...] = (512, 512, 512, 512, 512, 512, 512)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_bias: bool = False
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    do_stable_layer_norm: bool = False

    def __post_init__(self):
        for name in ("conv_dim", "conv_stride", "conv_kernel"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not len(self.conv_dim) == len(self.conv_stride) == len(self.conv_kernel):
            raise ValueError("Wav2Vec2Config: conv_dim, conv_stride and conv_kernel must have the same length")

    @classmethod
    def from_hf(cls, config: Mapping[str, Any], *, source: str = "config") -> Wav2Vec2Config:
        """Reads a transformers config.json dict; unsupported features raise, naming the key."""
        return cls(**read_hf_config(cls, config, supported_only=_SUPPORTED_ONLY, no_effect=_NO_EFFECT, source=source))

    @property
    def samples_per_frame(self) -> int:
        """Waveform samples per output frame (320 for base: 20 ms at 16 kHz)."""
        return int(np.prod(self.conv_stride))

    @property
    def receptive_field(self) -> int:
        """Waveform samples one output frame reads (400 for base)."""
        return self.conv_kernel[0] + sum(
            (k - 1) * int(np.prod(self.conv_stride[:i])) for i, k in enumerate(self.conv_kernel) if i > 0
        )


def _conv1d(in_channels, out_channels, kernel, stride, *, use_bias, groups=1, padding=0, compute, rngs) -> nnx.Conv:
    return nnx.Conv(
        in_channels,
        out_channels,
        kernel_size=(kernel,),
        strides=(stride,),
        padding=((padding, padding),),
        feature_group_count=groups,
        use_bias=use_bias,
        dtype=compute.dtype,
        param_dtype=compute.param_dtype,
        rngs=rngs,
    )


class FeatureExtractorConvLayer(nnx.Module):
    """conv1d (no padding) -> norm -> GELU. [B, T, Cin] -> [B, T', Cout].

    norm: 'group' (per-channel GroupNorm over time; transformers uses it on the first layer only),
    'layer' (LayerNorm over channels, every layer) or None.
    """

    def __init__(self, config: Wav2Vec2Config, layer_id: int, norm: str | None, *, compute: Compute, rngs: nnx.Rngs):
        c = config
        in_dim = c.conv_dim[layer_id - 1] if layer_id > 0 else 1
        out_dim = c.conv_dim[layer_id]
        self.conv = _conv1d(
            in_dim,
            out_dim,
            c.conv_kernel[layer_id],
            c.conv_stride[layer_id],
            use_bias=c.conv_bias,
            compute=compute,
            rngs=rngs,
        )
        if norm == "group":
            self.layer_norm = group_norm(out_dim, out_dim, 1e-5, compute, rngs)
        elif norm == "layer":
            self.layer_norm = layer_norm(out_dim, 1e-5, compute, rngs)
        else:
            self.layer_norm = None

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv(x)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return jax.nn.gelu(x, approximate=False)


class FeatureEncoder(nnx.Module):
    """Waveform [B, S] -> conv features [B, T, conv_dim[-1]], T ~ S / 320."""

    def __init__(self, config: Wav2Vec2Config, *, compute: Compute, rngs: nnx.Rngs):
        n = len(config.conv_dim)
        norms = ["group"] + [None] * (n - 1) if config.feat_extract_norm == "group" else ["layer"] * n
        self.conv_layers = nnx.List(
            [FeatureExtractorConvLayer(config, i, norms[i], compute=compute, rngs=rngs) for i in range(n)]
        )

    def __call__(self, waveform: jax.Array) -> jax.Array:
        x = waveform[:, :, None]
        for layer in self.conv_layers:
            x = layer(x)
        return x


class FeatureProjection(nnx.Module):
    """LayerNorm + linear. [B, T, conv_dim[-1]] -> [B, T, hidden]."""

    def __init__(self, config: Wav2Vec2Config, *, compute: Compute, rngs: nnx.Rngs):
        self.layer_norm = layer_norm(config.conv_dim[-1], config.layer_norm_eps, compute, rngs)
        self.projection = linear(config.conv_dim[-1], config.hidden_size, compute, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.projection(self.layer_norm(x))


class PositionalConvEmbedding(nnx.Module):
    """Grouped conv over time (weight norm folded at conversion), 'same' length, GELU. [B, T, H] -> [B, T, H]."""

    def __init__(self, config: Wav2Vec2Config, *, compute: Compute, rngs: nnx.Rngs):
        k = config.num_conv_pos_embeddings
        self.conv = _conv1d(
            config.hidden_size,
            config.hidden_size,
            k,
            1,
            use_bias=True,
            groups=config.num_conv_pos_embedding_groups,
            padding=k // 2,
            compute=compute,
            rngs=rngs,
        )
        self.num_pad_remove = 1 if k % 2 == 0 else 0

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv(x)
        if self.num_pad_remove:
            y = y[:, : -self.num_pad_remove]
        return jax.nn.gelu(y, approximate=False)


class Wav2Vec2Attention(nnx.Module):
    """Multi-head self-attention with biased projections. [B, T, H] -> [B, T, H]."""

    def __init__(self, config: Wav2Vec2Config, *, compute: Compute, rngs: nnx.Rngs):
        h = config.hidden_size
        self.heads = config.num_attention_heads
        self.attention_impl = compute.attention
        self.q_proj = linear(h, h, compute, rngs)
        self.k_proj = linear(h, h, compute, rngs)
        self.v_proj = linear(h, h, compute, rngs)
        self.out_proj = linear(h, h, compute, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, h = x.shape
        split = lambda y: y.reshape(b, t, self.heads, h // self.heads)  # noqa: E731
        out = dot_product_attention(
            split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)), implementation=self.attention_impl
        )
        return self.out_proj(out.reshape(b, t, h))


class Wav2Vec2FeedForward(nnx.Module):
    """intermediate_dense -> GELU -> output_dense. [B, T, H] -> [B, T, H]."""

    def __init__(self, config: Wav2Vec2Config, *, compute: Compute, rngs: nnx.Rngs):
        self.intermediate_dense = linear(config.hidden_size, config.intermediate_size, compute, rngs)
        self.output_dense = linear(config.intermediate_size, config.hidden_size, compute, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.output_dense(jax.nn.gelu(self.intermediate_dense(x), approximate=False))


class Wav2Vec2EncoderLayer(nnx.Module):
    """One transformer layer; `stable_layer_norm` puts the norms first (pre-norm), else after (post-norm)."""

    def __init__(self, config: Wav2Vec2Config, *, compute: Compute, rngs: nnx.Rngs):
        self.stable_layer_norm = config.do_stable_layer_norm
        self.attention = Wav2Vec2Attention(config, compute=compute, rngs=rngs)
        self.layer_norm = layer_norm(config.hidden_size, config.layer_norm_eps, compute, rngs)
        self.feed_forward = Wav2Vec2FeedForward(config, compute=compute, rngs=rngs)
        self.final_layer_norm = layer_norm(config.hidden_size, config.layer_norm_eps, compute, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.stable_layer_norm:
            x = x + self.attention(self.layer_norm(x))
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.layer_norm(x + self.attention(x))
        return self.final_layer_norm(x + self.feed_forward(x))


@struct.dataclass
class Wav2Vec2Output:
    """hidden_states: L + 1 states [B, T, H], the first layer's input then each layer's output (as transformers
    5.x returns them); last_hidden_state: the final output, after the closing LayerNorm of pre-norm encoders."""

    hidden_states: list[jax.Array]
    last_hidden_state: jax.Array


class Wav2Vec2Encoder(nnx.Module):
    """Positional conv + transformer layers. [B, T, H] -> Wav2Vec2Output."""

    def __init__(self, config: Wav2Vec2Config, *, compute: Compute, rngs: nnx.Rngs):
        self.stable_layer_norm = config.do_stable_layer_norm
        self.pos_conv_embed = PositionalConvEmbedding(config, compute=compute, rngs=rngs)
        self.layer_norm = layer_norm(config.hidden_size, config.layer_norm_eps, compute, rngs)
        self.layers = nnx.List(
            [Wav2Vec2EncoderLayer(config, compute=compute, rngs=rngs) for _ in range(config.num_hidden_layers)]
        )

    def __call__(self, x: jax.Array) -> Wav2Vec2Output:
        x = x + self.pos_conv_embed(x)
        if not self.stable_layer_norm:
            x = self.layer_norm(x)
        states = [x]
        for layer in self.layers:
            x = layer(x)
            states.append(x)
        return Wav2Vec2Output(states, self.layer_norm(x) if self.stable_layer_norm else x)


def interpolate_frames(x: jax.Array, num_frames: int) -> jax.Array:
    """[B, T, C] -> [B, num_frames, C]: linear interpolation with the end frames kept in place (torch's
    `F.interpolate(mode='linear', align_corners=True)` along T)."""
    length = x.shape[1]
    positions = jnp.arange(num_frames, dtype=jnp.float32) * ((length - 1) / max(num_frames - 1, 1))
    low = jnp.floor(positions).astype(jnp.int32)
    high = jnp.minimum(low + 1, length - 1)
    weight = (positions - low)[None, :, None].astype(x.dtype)
    return x[:, low] * (1 - weight) + x[:, high] * weight


class Wav2Vec2Model(nnx.Module):
    """`model(waveform[B, S]) -> Wav2Vec2Output` with T ~ S / 320 frames (20 ms each at 16 kHz), or with
    `num_frames` frames: the conv features linearly resampled to that many before the transformer (Hallo's
    `Wav2VecModel`, which gives one frame per video frame).

    The waveform is 16 kHz mono, normalised as the checkpoint's feature extractor expects (zero mean, unit
    variance for wav2vec2-base-960h).
    """

    def __init__(self, config: Wav2Vec2Config, *, compute: Compute = Compute(), rngs: nnx.Rngs):
        self.config = config
        self.feature_extractor = FeatureEncoder(config, compute=compute, rngs=rngs)
        self.feature_projection = FeatureProjection(config, compute=compute, rngs=rngs)
        self.encoder = Wav2Vec2Encoder(config, compute=compute, rngs=rngs)

    def __call__(self, waveform: jax.Array, num_frames: int | None = None) -> Wav2Vec2Output:
        features = self.feature_extractor(waveform)
        if num_frames is not None:
            features = interpolate_frames(features, num_frames)
        return self.encoder(self.feature_projection(features))
