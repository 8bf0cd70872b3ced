"""The fused CPU attention kernel (emo_jax/kernels): built here with the system compiler, checked against float64
attention and against XLA's gradients, on shapes that reach each of its paths."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from attention_reference import reference_attention

from emo_jax.kernels import build, cpu_attention
from emo_jax.models import attention


@pytest.fixture(scope="module", autouse=True)
def kernel():
    if jax.default_backend() != "cpu":
        pytest.skip("the kernel is for XLA:CPU")
    if (reason := cpu_attention.unavailable_reason()) is not None:
        pytest.skip(f"the CPU attention kernel cannot be built here: {reason}")


def _qkv(batch, length, keys, heads, dim, seed=0, spread=1.0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((batch, length, heads, dim), dtype=np.float32) * spread
    k = rng.standard_normal((batch, keys, heads, dim), dtype=np.float32) * spread
    v = rng.standard_normal((batch, keys, heads, dim), dtype=np.float32)
    return q, k, v


# (batch, queries, keys, heads, dim): many pairs (units of whole pairs) and one or two pairs (units of row ranges,
# whose dK / dV are summed); keys that fill whole 16-lane vectors or leave a padded tail; query counts that leave
# rows after the 4-row blocks; odd and SD-sized head dims; temporal attention's many short rows.
SHAPES = [
    (2, 100, 37, 3, 8),
    (1, 203, 64, 1, 5),
    (1, 130, 77, 2, 40),
    (64, 8, 8, 4, 8),
    (2, 33, 1, 2, 16),
]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_equals_float64_attention(shape):
    q, k, v = _qkv(*shape)
    out = jax.jit(cpu_attention.cpu_attention)(q, k, v)
    np.testing.assert_allclose(out, reference_attention(q, k, v), atol=2e-6)


def test_large_logits_lose_no_more_than_xla_does():
    # Logits up to ~+-300: softmax is nearly one-hot, and their fp32 rounding alone costs ~1e-5 (XLA's too); the
    # kernel's exp clamp at -87 and polynomial must add nothing beyond that.
    q, k, v = _qkv(2, 50, 40, 2, 8, seed=3, spread=6.0)
    want = reference_attention(q, k, v)
    xla_error = np.abs(jax.nn.dot_product_attention(q, k, v, implementation="xla") - want).max()
    out = cpu_attention.cpu_attention(q, k, v)
    assert np.isfinite(out).all()
    assert np.abs(out - want).max() <= 2 * xla_error + 1e-6


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_gradients_equal_xla_attention(shape):
    q, k, v = (jnp.asarray(a) for a in _qkv(*shape, seed=1))
    cotangent = jnp.asarray(np.random.default_rng(2).standard_normal(q.shape, dtype=np.float32))

    def grads(fn):
        return jax.jit(jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v) * cotangent), argnums=(0, 1, 2)))(q, k, v)

    xla = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="xla")  # noqa: E731
    for got, want in zip(grads(cpu_attention.cpu_attention), grads(xla), strict=True):
        # (one key: dQ is 0 up to the rounding of dO.v against dO.o; the values are O(1) otherwise)
        np.testing.assert_allclose(got, want, atol=1e-5 * max(1.0, float(jnp.abs(want).max())))


def test_vmap_runs_the_kernel_per_element():
    q, k, v = (np.stack([a, 2 * a]) for a in _qkv(2, 20, 9, 2, 8, seed=4))
    out = jax.vmap(cpu_attention.cpu_attention)(q, k, v)
    for i in range(2):
        np.testing.assert_allclose(out[i], reference_attention(q[i], k[i], v[i]), atol=2e-6)


def test_auto_takes_the_kernel_and_half_precision_is_computed_in_fp32():
    q, k, v = (jnp.asarray(a) for a in _qkv(1, 16, 16, 1, 8))
    for dtype in (jnp.float32, jnp.bfloat16):
        inputs = [a.astype(dtype) for a in (q, k, v)]
        text = jax.jit(lambda q, k, v: attention.dot_product_attention(q, k, v)).lower(*inputs).as_text()
        assert "emo_jax_cpu_attention_forward" in text
    half = attention.dot_product_attention(*(a.astype(jnp.bfloat16) for a in (q, k, v)))
    want = reference_attention(*(np.asarray(a.astype(jnp.bfloat16), np.float32) for a in (q, k, v)))
    assert half.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(half, np.float32), want, atol=8e-3)  # bf16's rounding of the output


def test_without_the_kernel_attention_falls_back_to_chunked_and_says_why(monkeypatch, caplog):
    monkeypatch.setattr(cpu_attention, "unavailable_reason", lambda: "no C++ compiler found (test)")
    q, k, v = _qkv(2, 30, 11, 2, 8, seed=5)
    with caplog.at_level("WARNING"):
        out = attention.dot_product_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), implementation="cpu")
    np.testing.assert_allclose(out, reference_attention(q, k, v), atol=2e-6)
    assert "CPU kernel attention unavailable (no C++ compiler found (test)); using chunked attention" in caplog.text


def test_build_caches_per_source_in_the_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EMO_JAX_CACHE_DIR", str(tmp_path))
    library = build.load.__wrapped__("cpu_attention")
    assert not isinstance(library, str), library
    (built,) = (tmp_path / "kernels").glob("cpu_attention-*.so")
    modified = built.stat().st_mtime_ns
    build.load.__wrapped__("cpu_attention")  # found in the cache, not rebuilt
    assert built.stat().st_mtime_ns == modified and len(os.listdir(tmp_path / "kernels")) == 1


def test_build_without_a_compiler_names_what_it_looked_for(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    reason = build.load.__wrapped__("cpu_attention")
    assert reason == "no C++ compiler found (no-such-compiler-xyz not on PATH)"


def test_build_into_an_unwritable_cache_says_where(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")  # the cache dir would have to be inside a file
    monkeypatch.setenv("EMO_JAX_CACHE_DIR", str(blocker / "cache"))
    reason = build.load.__wrapped__("cpu_attention")
    assert isinstance(reason, str)
    assert reason.startswith(f"building cpu_attention.cc into {blocker}/cache/kernels failed")
