"""Attention: the one dispatch function, and the transformer blocks built on it.

Module and attribute names mirror diffusers (`attention_processor.Attention`, `attention.BasicTransformerBlock`,
`transformers.transformer_2d.Transformer2DModel`), so a diffusers key such as
`attentions.0.transformer_blocks.0.attn1.to_q.weight` names the Flax path of the same weight.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx, struct

from emo_jax.kernels import cpu_attention
from emo_jax.models.layers import Compute, group_norm, layer_norm, linear

log = logging.getLogger(__name__)

_CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)
# Query blocks of `chunked_attention`: at most _CHUNK_QUERIES queries, fewer where one block's fp32 logits
# [B, N, chunk, S] would pass _CHUNK_LOGITS_BYTES. Measured on a 2-core AVX-512 CPU (bench unet --profile):
# 128-query blocks beat 256 and 64 at 1024 and 4096 tokens, head dims 8 and 40, forward and backward.
_CHUNK_QUERIES = 128
_CHUNK_LOGITS_BYTES = 16 * 2**20
_warned_fallbacks: set[str] = set()


def _cudnn_unsupported_reason(query: jax.Array) -> str | None:
    if jax.default_backend() != "gpu":
        return f"backend is {jax.default_backend()}"
    if query.dtype not in _CUDNN_DTYPES:
        return f"dtype is {query.dtype} (cuDNN needs bf16 or fp16)"
    if query.shape[-1] > 256:
        return f"head dim is {query.shape[-1]} (> 256)"
    return None


def _heads_first(x: jax.Array) -> jax.Array:
    """[B, T, N, D] -> [B, N, T, D] (and back): both attention matmuls then contract over a minor dimension,
    which XLA:CPU runs 1.3-4x faster than the same einsums over [B, T, N, D] (the [P, V] product at head dim 8
    most)."""
    return x.transpose(0, 2, 1, 3)


def _softmax_attention(query: jax.Array, key: jax.Array, value: jax.Array) -> jax.Array:
    """Plain softmax attention with fp32 logits, heads first. [B, N, T, D], [B, N, S, D] -> [B, N, T, D]."""
    logits = jnp.einsum("bntd,bnsd->bnts", query, key, preferred_element_type=jnp.float32)
    weights = jax.nn.softmax(logits, axis=-1).astype(value.dtype)
    return jnp.einsum("bnts,bnsd->bntd", weights, value)


def _query_chunk(query: jax.Array, key: jax.Array) -> int:
    batch, heads, length, _ = query.shape
    by_bytes = _CHUNK_LOGITS_BYTES // (4 * batch * heads * key.shape[2])
    return max(16, min(_CHUNK_QUERIES, 1 << max(by_bytes, 1).bit_length() - 1))  # a power of two, 16..128


def chunked_attention(query: jax.Array, key: jax.Array, value: jax.Array, *, chunk: int | None = None) -> jax.Array:
    """Softmax attention computed one query block at a time (`lax.map`): blocks of 128 queries, or fewer where a
    block's logits would pass 16 MB (or `chunk` queries per block).

    The same numbers as full attention; on CPU faster than materialising [B, N, T, S] logits, which is
    memory-bound, and its gradient never holds more than one block's logits. [B, T, N, D], [B, S, N, D] ->
    [B, T, N, D].
    """
    batch, length, heads, dim = query.shape
    query, key, value = _heads_first(query * dim**-0.5), _heads_first(key), _heads_first(value)
    chunk = chunk or _query_chunk(query, key)
    if chunk >= length:
        return _heads_first(_softmax_attention(query, key, value))
    blocks = -(-length // chunk)
    padded = jnp.pad(query, ((0, 0), (0, 0), (0, blocks * chunk - length), (0, 0)))
    query_blocks = padded.reshape(batch, heads, blocks, chunk, dim).transpose(2, 0, 1, 3, 4)  # [blocks, B, N, c, D]
    # Each block's logits are recomputed in the backward pass instead of stacked as residuals: the same gradients,
    # 1.6-2.1x faster on CPU (the stacked [blocks, B, N, chunk, S] copies cost more than the recomputation).
    out = jax.lax.map(jax.checkpoint(lambda q: _softmax_attention(q, key, value)), query_blocks)
    out = out.transpose(1, 2, 0, 3, 4).reshape(batch, heads, blocks * chunk, dim)[:, :, :length]
    return _heads_first(out)


_SPLASH_BLOCK = 128  # splash attention's query and key blocks (its default; key blocks must be lane multiples)


def _splash_unsupported_reason(query: jax.Array, key: jax.Array) -> str | None:
    for name, length in (("queries", query.shape[1]), ("keys", key.shape[1])):
        if length % _SPLASH_BLOCK:
            return f"{length} {name} (splash needs a multiple of {_SPLASH_BLOCK})"
    return None


def splash_attention(query: jax.Array, key: jax.Array, value: jax.Array) -> jax.Array:
    """TPU splash attention (`jax.experimental.pallas.ops.tpu.splash_attention`, a Pallas kernel with its own
    backward), no mask, per batch element. Off a TPU it runs in Pallas' interpret mode: the same numbers, slowly
    (for tests). Lengths: multiples of 128 (SD1.5 at 512 px: the 64, 32 and 16 px levels' spatial attention; not
    the 8 px level, temporal or audio attention, which `dot_product_attention` gives to XLA).
    [B, T, N, D], [B, S, N, D] -> [B, T, N, D]."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

    heads, dim, length, keys = query.shape[2], query.shape[3], query.shape[1], key.shape[1]
    b = _SPLASH_BLOCK
    blocks = splash.BlockSizes(
        block_q=b,
        block_kv=b,
        block_kv_compute=b,
        block_q_dkv=b,
        block_kv_dkv=b,
        block_kv_dkv_compute=b,
        block_q_dq=b,
        block_kv_dq=b,
    )
    kernel = splash.make_splash_mha(
        masks.MultiHeadMask([masks.FullMask((length, keys))] * heads),
        block_sizes=blocks,
        head_shards=1,
        q_seq_shards=1,
        interpret=jax.default_backend() != "tpu",
    )
    out = jax.vmap(kernel)(_heads_first(query * dim**-0.5), _heads_first(key), _heads_first(value))
    return _heads_first(out)


def _fall_back(reason: str, what: str, instead: str = "xla") -> str:
    if reason not in _warned_fallbacks:
        _warned_fallbacks.add(reason)
        log.warning("%s attention unavailable (%s); using %s attention", what, reason, instead)
    return instead


def _resolve(implementation: str, query: jax.Array, key: jax.Array, value: jax.Array) -> str:
    if implementation == "auto":
        backend = jax.default_backend()
        if backend == "cpu":
            if jax.device_count() > 1:
                return "chunked"  # the kernel has no sharding rule: no fallback to report
            implementation = "cpu"
        else:
            return "cudnn" if backend == "gpu" and _cudnn_unsupported_reason(query) is None else "xla"
    if implementation == "cpu" and (reason := cpu_attention.unsupported_reason(query, key, value)) is not None:
        return _fall_back(reason, "CPU kernel", "chunked")
    if implementation == "cudnn" and (reason := _cudnn_unsupported_reason(query)) is not None:
        return _fall_back(reason, "cuDNN")
    if implementation == "splash" and (reason := _splash_unsupported_reason(query, key)) is not None:
        return _fall_back(reason, "splash")
    return implementation


def dot_product_attention(
    query: jax.Array, key: jax.Array, value: jax.Array, *, implementation: str = "auto"
) -> jax.Array:
    """Softmax attention, the single entry point every module uses.

    query: [B, T, N, D], key/value: [B, S, N, D] -> [B, T, N, D]; scale 1/sqrt(D); softmax in fp32.
    implementation:
      'xla'     `jax.nn.dot_product_attention` (materialises all logits);
      'cudnn'   its fused cuDNN kernel, falling back to 'xla' where cuDNN cannot run the call (logged once);
      'chunked' `chunked_attention` (query blocks, in XLA);
      'cpu'     `kernels.cpu_attention`: a fused C++ kernel built at first use, the fast choice on CPU; in fp32
                (other float inputs are cast), on one device; falls back to 'chunked' where it cannot run (no
                compiler: logged once);
      'splash'  `splash_attention` (TPU's Pallas kernel; interpreted elsewhere), falling back to 'xla' for
                lengths that are not multiples of 128 (logged once);
      'auto'    'cpu' on CPU (on several devices 'chunked'), 'cudnn' on GPU where it can run,
                else 'xla'.
    """
    implementation = _resolve(implementation, query, key, value)
    if implementation == "cpu":
        return cpu_attention.cpu_attention(query, key, value)
    if implementation == "chunked":
        return chunked_attention(query, key, value)
    if implementation == "splash":
        return splash_attention(query, key, value)
    return jax.nn.dot_product_attention(query, key, value, implementation=implementation)


class Attention(nnx.Module):
    """Multi-head attention (diffusers `Attention`), self or cross.

    With `norm_num_groups` it is the VAE's spatial self-attention: GroupNorm first, residual added.
    hidden_states: [B, T, C] or [B, H, W, C]; encoder_hidden_states: [B, S, Cc] or None (self-attention)
    -> same shape as hidden_states.
    """

    def __init__(
        self,
        query_dim: int,
        *,
        heads: int,
        dim_head: int,
        cross_attention_dim: int | None = None,
        bias: bool = False,
        norm_num_groups: int | None = None,
        norm_eps: float = 1e-6,
        residual_connection: bool = False,
        zero_init_out: bool = False,
        compute: Compute,
        rngs: nnx.Rngs,
    ):
        inner_dim = heads * dim_head
        context_dim = cross_attention_dim or query_dim
        self.heads = heads
        self.residual_connection = residual_connection
        self.attention_impl = compute.attention
        self.group_norm = group_norm(query_dim, norm_num_groups, norm_eps, compute, rngs) if norm_num_groups else None
        self.to_q = linear(query_dim, inner_dim, compute, rngs, use_bias=bias)
        self.to_k = linear(context_dim, inner_dim, compute, rngs, use_bias=bias)
        self.to_v = linear(context_dim, inner_dim, compute, rngs, use_bias=bias)
        # diffusers: to_out = [Linear, Dropout]; the dropout index holds no weights and is not mirrored.
        self.to_out = nnx.List([linear(inner_dim, query_dim, compute, rngs, zero_init=zero_init_out)])

    def __call__(self, hidden_states: jax.Array, encoder_hidden_states: jax.Array | None = None) -> jax.Array:
        residual = hidden_states
        if self.group_norm is not None:
            hidden_states = self.group_norm(hidden_states)
        shape = hidden_states.shape
        x = hidden_states.reshape(shape[0], -1, shape[-1])  # [B, T, C]
        context = x if encoder_hidden_states is None else encoder_hidden_states

        def split_heads(t: jax.Array) -> jax.Array:  # [B, T, N*D] -> [B, T, N, D]
            return t.reshape(t.shape[0], t.shape[1], self.heads, -1)

        out = dot_product_attention(
            split_heads(self.to_q(x)),
            split_heads(self.to_k(context)),
            split_heads(self.to_v(context)),
            implementation=self.attention_impl,
        )
        out = self.to_out[0](out.reshape(out.shape[0], out.shape[1], -1))
        out = out.reshape(shape)
        return out + residual if self.residual_connection else out


class GEGLU(nnx.Module):
    """x -> a * gelu(b), where [a, b] = proj(x) (exact erf GELU, as torch's default). [..., C] -> [..., inner]."""

    def __init__(self, dim: int, inner_dim: int, *, compute: Compute, rngs: nnx.Rngs):
        self.proj = linear(dim, 2 * inner_dim, compute, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        hidden, gate = jnp.split(self.proj(x), 2, axis=-1)
        return hidden * jax.nn.gelu(gate, approximate=False)


class FeedForward(nnx.Module):
    """diffusers `FeedForward` with GEGLU: net = [GEGLU, Dropout, Linear]. [..., C] -> [..., C]."""

    def __init__(self, dim: int, *, mult: int = 4, compute: Compute, rngs: nnx.Rngs):
        inner_dim = dim * mult
        self.net = nnx.List(
            [GEGLU(dim, inner_dim, compute=compute, rngs=rngs), nnx.Dropout(0.0), linear(inner_dim, dim, compute, rngs)]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.net:
            x = layer(x)
        return x


def sinusoidal_positions(length: int, dim: int) -> jax.Array:
    """Transformer positions [length, dim]: sin at even channels, cos at odd, frequencies 10000^(-2i/dim)
    (diffusers `SinusoidalPositionalEmbedding`, AnimateDiff's frame positions)."""
    position = jnp.arange(length, dtype=jnp.float32)[:, None]
    freqs = jnp.exp(jnp.arange(0, dim, 2, dtype=jnp.float32) * (-math.log(10000.0) / dim))
    table = jnp.zeros((length, dim), jnp.float32)
    table = table.at[:, 0::2].set(jnp.sin(position * freqs))
    return table.at[:, 1::2].set(jnp.cos(position * freqs[: dim // 2]))


REFERENCE_MODES = (None, "concat_self", "cross")
# Attention layers EMO adds to SD / AnimateDiff blocks (no PyTorch checkpoint holds them).
EMO_ONLY_LAYERS = re.compile(r"(^|\.)(attn_audio|norm_audio|attn_speed|norm_speed)\.")


@struct.dataclass
class Context:
    """What a UNet's transformer blocks attend to besides their own tokens (N = batch x frames).

    encoder_hidden_states: [N, L, D] for attn2 (SD's text tokens; EMO's 'cross' mode without per-block features).
    reference: transformer-block path -> [N, S, C], ReferenceNet features for reference attention;
      reference_keep: [N] 1/0, a dropped sample's blocks attend as if there were no reference (guidance).
    audio: [N, A, Da] audio tokens; audio_keep: [N] 1/0, multiplies the audio attention's output (a dropped
      sample's audio path is cut, for classifier-free guidance; Hallo's region blocks zero its tokens instead).
    region_masks: per resolution [N, 3, S] full / face / lip masks, and motion_scale [3] their weights, for
      Hallo's region audio blocks (`region_audio.RegionAudioBlock`).
    Per video, for the temporal layers (B videos): motion: motion-module key -> [B, n, S, C], ReferenceNet
      features of the n motion frames; speed: [B, F, K, Ds] speed tokens; speed_keep: [B].
    Inside a temporal module, for its blocks: speed [B * T, K, Ds] per frame, speed_keep [B * T], and `pixels`
      (H * W, static): the blocks' sequences are [B * H * W, T, C] and frame t attends to its own tokens.
    collect: sow what a ReferenceNet provides: each spatial block's normed self-attention input
      (`reference_features`) and each layer's hidden state where a video UNet has a temporal module
      (`motion_input_<layer>`).
    """

    encoder_hidden_states: jax.Array | None = None
    reference: dict[str, jax.Array] | None = None
    reference_keep: jax.Array | None = None
    audio: jax.Array | None = None
    audio_keep: jax.Array | None = None
    region_masks: tuple[jax.Array, ...] | None = None
    motion_scale: jax.Array | None = None
    motion: dict[str, jax.Array] | None = None
    speed: jax.Array | None = None
    speed_keep: jax.Array | None = None
    pixels: int | None = struct.field(pytree_node=False, default=None)
    collect: bool = struct.field(pytree_node=False, default=False)


class BasicTransformerBlock(nnx.Module):
    """Pre-norm block: attn1, attn2, [audio attention], GEGLU feed-forward, each with a residual.

    attn1: self-attention; with `reference_attention='concat_self'` its keys/values are its tokens concatenated
      with this block's reference features (AnimateAnyone / Hallo).
    attn2: cross-attention to `context.encoder_hidden_states` of width `cross_attention_dim` (SD's text), or
      with `reference_attention='cross'` to this block's reference features (the paper's wording; width
      `cross_attention_dim`, or the block's own width when that is None); `double_self_attention`: a second
      self-attention (AnimateDiff's temporal blocks); none of these: no attn2 (EMO without text).
    attn_audio: with `audio_cross_attention_dim`, cross-attention to the audio tokens after the reference
      attention, output projection zero-initialised (a new layer changes nothing).
    attn_speed: likewise with `speed_cross_attention_dim`, to speed tokens, per frame (temporal blocks; see
      `Context.pixels`).
    A sample whose `context.reference_keep` is 0 attends as if it had no reference: 'concat_self' concatenates
    its own tokens instead (softmax over [x, x] equals plain self-attention), 'cross' drops attn2's output.
    `max_positions`: sinusoidal positions added to the normed input of attn1 and attn2 (temporal blocks).
    `path`: this block's key in `context.reference` (set by the UNet that owns it).
    hidden_states: [N, T, C] -> [N, T, C].
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int,
        dim_head: int,
        cross_attention_dim: int | None,
        double_self_attention: bool = False,
        reference_attention: str | None = None,
        audio_cross_attention_dim: int | None = None,
        speed_cross_attention_dim: int | None = None,
        max_positions: int | None = None,
        compute: Compute,
        rngs: nnx.Rngs,
    ):
        if reference_attention not in REFERENCE_MODES:
            raise ValueError(f"reference_attention must be one of {REFERENCE_MODES}, got {reference_attention!r}")
        self.reference_attention = reference_attention
        self.max_positions = max_positions
        self.path = ""
        self.norm1 = layer_norm(dim, 1e-5, compute, rngs)
        self.attn1 = Attention(dim, heads=heads, dim_head=dim_head, compute=compute, rngs=rngs)
        self.cross = cross_attention_dim is not None or reference_attention == "cross"
        if self.cross or double_self_attention:
            self.norm2 = layer_norm(dim, 1e-5, compute, rngs)
            self.attn2 = Attention(
                dim,
                heads=heads,
                dim_head=dim_head,
                cross_attention_dim=cross_attention_dim if self.cross else None,
                compute=compute,
                rngs=rngs,
            )
        else:
            self.norm2 = self.attn2 = None

        def conditioning_attention(width: int | None) -> tuple[nnx.LayerNorm | None, Attention | None]:
            if not width:
                return None, None
            attention = Attention(
                dim,
                heads=heads,
                dim_head=dim_head,
                cross_attention_dim=width,
                zero_init_out=True,
                compute=compute,
                rngs=rngs,
            )
            return layer_norm(dim, 1e-5, compute, rngs), attention

        self.norm_audio, self.attn_audio = conditioning_attention(audio_cross_attention_dim)
        self.norm_speed, self.attn_speed = conditioning_attention(speed_cross_attention_dim)
        self.norm3 = layer_norm(dim, 1e-5, compute, rngs)
        self.ff = FeedForward(dim, compute=compute, rngs=rngs)

    def _positioned(self, x: jax.Array) -> jax.Array:
        if self.max_positions is None:
            return x
        if x.shape[1] > self.max_positions:
            raise ValueError(f"sequence of {x.shape[1]} is longer than the {self.max_positions} learned-for positions")
        return x + sinusoidal_positions(x.shape[1], x.shape[2]).astype(x.dtype)

    def __call__(self, hidden_states: jax.Array, context: Context = Context()) -> jax.Array:
        reference = (context.reference or {}).get(self.path) if self.reference_attention else None
        keep = None if reference is None or context.reference_keep is None else context.reference_keep[:, None, None]
        normed = self._positioned(self.norm1(hidden_states))
        if context.collect:
            self.sow(nnx.Intermediate, "reference_features", normed)
        keys = None
        if self.reference_attention == "concat_self" and reference is not None:
            reference = reference.astype(normed.dtype)
            keys = jnp.concatenate([normed, reference if keep is None else jnp.where(keep > 0, reference, normed)], 1)
        hidden_states = hidden_states + self.attn1(normed, keys)

        if self.attn2 is not None:
            by_reference = self.reference_attention == "cross" and reference is not None
            cross_context = reference if by_reference else context.encoder_hidden_states
            if self.cross and cross_context is None:
                raise ValueError(
                    f"transformer block {self.path or '?'}: attn2 needs encoder_hidden_states or reference features"
                )
            out = self.attn2(self._positioned(self.norm2(hidden_states)), cross_context if self.cross else None)
            hidden_states = hidden_states + (out * keep.astype(out.dtype) if by_reference and keep is not None else out)

        hidden_states = _conditioned(hidden_states, self.norm_audio, self.attn_audio, context.audio, context.audio_keep)
        hidden_states = _conditioned(
            hidden_states, self.norm_speed, self.attn_speed, context.speed, context.speed_keep, context.pixels
        )
        return hidden_states + self.ff(self.norm3(hidden_states))


def _conditioned(
    hidden_states: jax.Array,
    norm: nnx.LayerNorm | None,
    attention: Attention | None,
    tokens: jax.Array | None,
    keep: jax.Array | None,
    pixels: int | None = None,
) -> jax.Array:
    """Residual cross-attention to conditioning tokens [N, S, D]; `keep` [N] (1/0) cuts it per sample.

    With `pixels` (temporal blocks: hidden_states [B * pixels, T, C]) it runs per frame: tokens and keep are
    [B * T, S, D] and [B * T], and frame t's queries (all its pixels) attend to frame t's tokens."""
    if attention is None or tokens is None:
        return hidden_states
    x = norm(hidden_states)
    if pixels is not None:  # [B * P, T, C] -> [B * T, P, C]
        n, t, c = x.shape
        x = x.reshape(n // pixels, pixels, t, c).swapaxes(1, 2).reshape(-1, pixels, c)
    out = attention(x, tokens)
    if keep is not None:
        out = out * keep[:, None, None].astype(out.dtype)
    if pixels is not None:
        out = out.reshape(n // pixels, t, pixels, c).swapaxes(1, 2).reshape(n, t, c)
    return hidden_states + out


class Transformer2DModel(nnx.Module):
    """Spatial transformer over a feature map: GroupNorm, proj_in, blocks, proj_out, residual.

    `make_block()` builds each of the `num_layers` blocks (called as `block(x, context)` on [N, H * W, inner_dim]):
    SD's `BasicTransformerBlock`s, or Hallo's audio module of one `RegionAudioBlock`.
    `proj_in`/`proj_out` are dense layers in both of diffusers' variants: a 1x1 conv on channels-last
    data is the same matmul, and conversion squeezes the conv kernel (`use_linear_projection=False`).
    hidden_states: [N, H, W, C]; context: what the blocks attend to (see `Context`) -> [N, H, W, C].
    """

    def __init__(
        self,
        in_channels: int,
        inner_dim: int,
        make_block: Callable[[], nnx.Module],
        *,
        num_layers: int = 1,
        norm_num_groups: int = 32,
        compute: Compute,
        rngs: nnx.Rngs,
    ):
        self.norm = group_norm(in_channels, norm_num_groups, 1e-6, compute, rngs)
        self.proj_in = linear(in_channels, inner_dim, compute, rngs)
        self.transformer_blocks = nnx.List([make_block() for _ in range(num_layers)])
        self.proj_out = linear(inner_dim, in_channels, compute, rngs)

    def __call__(self, hidden_states: jax.Array, context: Context) -> jax.Array:
        b, h, w, c = hidden_states.shape
        x = self.proj_in(self.norm(hidden_states)).reshape(b, h * w, -1)
        for block in self.transformer_blocks:
            x = block(x, context)
        return self.proj_out(x).reshape(b, h, w, c) + hidden_states
