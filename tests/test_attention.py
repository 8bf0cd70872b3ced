"""The attention dispatch: every implementation computes the same softmax attention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from attention_reference import reference_attention

from emo_jax.models.attention import chunked_attention, dot_product_attention


def _qkv(t, s, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((2, t, 3, 8), dtype=np.float32)
    k = rng.standard_normal((2, s, 3, 8), dtype=np.float32)
    v = rng.standard_normal((2, s, 3, 8), dtype=np.float32)
    return q, k, v


@pytest.mark.parametrize("implementation", ["auto", "xla", "chunked"])
def test_implementations_agree_with_reference(implementation):
    """Splash (whose lengths must be multiples of 128) and cuDNN (bf16 / fp16 on a GPU) have their own tests."""
    q, k, v = _qkv(100, 37)
    out = dot_product_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), implementation=implementation)
    np.testing.assert_allclose(out, reference_attention(q, k, v), atol=2e-6)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_cudnn_attention_agrees_with_reference(dtype):
    """cuDNN's fused kernel itself (it takes half-precision inputs only; fp32 ones fall back to XLA)."""
    from emo_jax.models.attention import _cudnn_unsupported_reason

    if jax.default_backend() != "gpu":
        pytest.skip("cuDNN attention needs a GPU (elsewhere it falls back to XLA: nothing of cuDNN to test)")
    q, k, v = (jnp.asarray(a, dtype) for a in _qkv(100, 37))
    assert _cudnn_unsupported_reason(q) is None  # the kernel runs, not the fallback
    out = dot_product_attention(q, k, v, implementation="cudnn")
    want = reference_attention(*(np.asarray(a, np.float32) for a in (q, k, v)))
    np.testing.assert_allclose(np.asarray(out, np.float32), want, atol=2e-2 if dtype == "bfloat16" else 4e-3)


def test_splash_attention_over_several_blocks_and_its_gradients_equal_xla():
    """TPU's Pallas kernel, here in Pallas' interpret mode (no TPU): the same numbers and gradients."""
    from emo_jax.models.attention import splash_attention

    q, k, v = (jnp.asarray(a) for a in _qkv(256, 384, seed=4))  # 2 query blocks x 3 key blocks of 128
    np.testing.assert_allclose(splash_attention(q, k, v), reference_attention(q, k, v), atol=2e-6)
    cotangent = jnp.asarray(np.random.default_rng(5).standard_normal(q.shape, dtype=np.float32))

    def grads(attention):
        return jax.grad(lambda q, k, v: jnp.sum(attention(q, k, v) * cotangent), argnums=(0, 1, 2))(q, k, v)

    xla = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="xla")  # noqa: E731
    for got, want in zip(grads(splash_attention), grads(xla), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_splash_falls_back_to_xla_for_lengths_it_cannot_block(caplog):
    q, k, v = _qkv(256, 37, seed=6)  # 37 keys (e.g. audio tokens): not a multiple of 128
    with caplog.at_level("WARNING"):
        out = dot_product_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), implementation="splash")
    np.testing.assert_allclose(out, reference_attention(q, k, v), atol=2e-6)
    assert "37 keys (splash needs a multiple of 128)" in caplog.text


@pytest.mark.parametrize("chunk", [16, 32, 64, 100, 128])
def test_chunked_attention_blocks_and_padding_are_exact(chunk):
    # 100 queries: blocks of 16/32/64 leave a padded last block; 100/128 take the unchunked path.
    q, k, v = _qkv(100, 37, seed=1)
    out = jax.jit(chunked_attention, static_argnames="chunk")(
        jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), chunk=chunk
    )
    assert out.shape == q.shape
    np.testing.assert_allclose(out, reference_attention(q, k, v), atol=2e-6)


@pytest.mark.parametrize("chunk", [16, 100])
def test_chunked_attention_gradients_equal_full_attention(chunk):
    # The blocks are recomputed in the backward pass (jax.checkpoint); the gradients must not notice.
    q, k, v = (jnp.asarray(a) for a in _qkv(100, 37, seed=2))
    cotangent = jnp.asarray(np.random.default_rng(3).standard_normal(q.shape, dtype=np.float32))

    def grads(attention):
        return jax.jit(jax.grad(lambda q, k, v: jnp.sum(attention(q, k, v) * cotangent), argnums=(0, 1, 2)))(q, k, v)

    chunked = grads(lambda q, k, v: chunked_attention(q, k, v, chunk=chunk))
    full = grads(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="xla"))
    for got, want in zip(chunked, full, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("implementation", ["xla", "chunked", "auto"])
def test_bf16_inputs_take_fp32_logits(implementation):
    # Logits 128.25 and 128 (head dim 4, scale 1/2): bf16 rounds both to 128 (weights 0.5/0.5), fp32 keeps
    # them apart (weights sigmoid(0.25) = 0.562 / 0.438). Values 1 and 0 read the first weight out.
    q = np.array([16, 1, 0, 0], np.float32).reshape(1, 1, 1, 4)
    k = np.array([[16, 0.5, 0, 0], [16, 0, 0, 0]], np.float32).reshape(1, 2, 1, 4)
    v = np.array([[1, 0, 0, 0], [0, 0, 0, 0]], np.float32).reshape(1, 2, 1, 4)
    out = dot_product_attention(*(jnp.asarray(a, jnp.bfloat16) for a in (q, k, v)), implementation=implementation)
    assert out.dtype == jnp.bfloat16
    assert abs(float(out[0, 0, 0, 0]) - 1 / (1 + np.exp(-0.25))) < 4e-3


def test_unknown_implementation_is_refused():
    from emo_jax.models import Compute

    with pytest.raises(ValueError, match="Compute.attention"):
        Compute(attention="flash")
