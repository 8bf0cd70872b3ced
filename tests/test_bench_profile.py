"""bench_profile: XLA ops and PyTorch ops sorted into the same kinds, and a traced call's time found in them."""

import jax
import jax.numpy as jnp
import pytest

from emo_jax.bench_profile import KINDS, Breakdown, hlo_kinds, table, torch_kind, xla_breakdown


def _conv_then_dot(x, w, m):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(jax.nn.softmax(y.reshape(y.shape[0], -1, y.shape[-1]) @ m, axis=-1))


def _inputs():
    # Large enough that the ops (~10 ms), not the call's dispatch, fill a traced call, on a busy machine too.
    key = jax.random.key(0)
    return (
        jax.random.normal(key, (4, 64, 64, 32)),
        jax.random.normal(key, (3, 3, 32, 32)),
        jax.random.normal(key, (32, 64)),
    )


def test_hlo_kinds_names_the_heavy_op_of_each_fusion():
    function = jax.jit(jax.grad(_conv_then_dot, argnums=(0, 1, 2)))
    kinds = hlo_kinds(function.lower(*_inputs()).compile().as_text())
    found = set(kinds.values())
    assert {"convolution", "matmul", "reduction"} <= found
    assert found <= set(KINDS) | {"container"}


def test_the_cpu_attention_kernel_counts_as_matmul_like_torchs_fused_attention():
    from emo_jax.kernels import cpu_attention

    if jax.default_backend() != "cpu" or (reason := cpu_attention.unavailable_reason()) is not None:
        pytest.skip(f"no CPU attention kernel here: {reason if jax.default_backend() == 'cpu' else 'not a CPU'}")
    q = jnp.ones((1, 16, 2, 8))
    function = jax.jit(jax.grad(lambda q: jnp.sum(cpu_attention.cpu_attention(q, q, q))))
    text = function.lower(q).compile().as_text()
    calls = [
        line.split("=")[0].split()[-1].lstrip("%")  # [ROOT] %name = ... custom-call(...)
        for line in text.splitlines()
        if 'custom_call_target="emo_jax_cpu_attention' in line
    ]
    kinds = hlo_kinds(text)
    assert len(calls) == 2 and all(kinds[name] == "matmul" for name in calls)


def test_xla_breakdown_finds_the_call_time():
    function = jax.jit(jax.grad(_conv_then_dot, argnums=(0, 1, 2)))
    args = _inputs()
    jax.block_until_ready(function(*args))
    breakdown = xla_breakdown(function, args, calls=2)
    assert breakdown.events > 0
    assert breakdown.seconds["convolution"] > 0 and breakdown.seconds["matmul"] > 0
    # The ops cannot take longer than the cores had, and they account for most of a call.
    assert 0.3 * breakdown.wall_s < breakdown.op_s < (jax.local_device_count() * 4 + 1) * breakdown.wall_s


@pytest.mark.parametrize(
    "op, kind",
    [
        ("aten::mkldnn_convolution", "convolution"),
        ("aten::convolution_backward", "convolution"),
        ("aten::addmm", "matmul"),
        ("aten::bmm", "matmul"),
        ("aten::native_group_norm", "reduction"),
        ("aten::_softmax_backward_data", "reduction"),
        ("aten::copy_", "layout"),
        ("aten::silu", "elementwise"),
        ("aten::view", None),
    ],
)
def test_torch_kind(op, kind):
    assert torch_kind(op) == kind


def test_table_has_a_row_per_kind_and_the_totals():
    breakdown = Breakdown(dict.fromkeys(KINDS, 0.001), wall_s=0.004, events=6)
    text = table({"jax": breakdown, "torch": breakdown})
    assert all(f"| {kind} |" in text for kind in KINDS)
    assert "| busy cores | 1.50 |" in text
