"""Sharding: the rule table, and the same training steps on 8 simulated devices under four meshes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from jax.sharding import PartitionSpec as P

from emo_jax.train import sharding


def _mesh(shape):
    """A mesh of this shape over stand-in devices (only .shape and axis names are read by `spec`)."""
    import numpy as np

    return jax.sharding.Mesh(
        np.array(jax.devices() * int(np.prod(shape)), dtype=object).reshape(shape), sharding.MESH_AXES
    )


def test_rules_split_parameters_over_fsdp_and_tensor_where_sizes_divide():
    mesh = _mesh((1, 4, 2))
    assert sharding.spec((320, 1280), sharding.logical_axes((320, 1280)), mesh) == P("fsdp", "tensor")
    assert sharding.spec((3, 3, 320, 640), sharding.logical_axes((3, 3, 320, 640)), mesh) == P(
        None, None, "fsdp", "tensor"
    )
    assert sharding.spec((3, 3, 1, 16), sharding.logical_axes((3, 3, 1, 16)), mesh) == P(None, None, None, "tensor")
    assert sharding.spec((320,), sharding.logical_axes((320,)), mesh) == P(None)  # norms, biases: whole
    assert sharding.spec((8, 12, 64, 64, 3), ("batch",) + (None,) * 4, _mesh((2, 4, 1))) == P(
        ("data", "fsdp"), None, None, None, None
    )
    assert sharding.spec((6, 3), ("batch", None), _mesh((2, 4, 1))) == P(None, None)  # 6 rows do not split 8 ways


def test_mesh_shapes_are_checked():
    with pytest.raises(ValueError, match=r"needs 8 devices, there are 1"):
        sharding.make_mesh((2, 4, 1))
    assert sharding.make_mesh((-1, 1, 1)).shape == {"data": 1, "fsdp": 1, "tensor": 1}


SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
import jax, numpy as np
from tiny import micro_config
from emo_jax.train import sharding
from emo_jax.train.trainer import Trainer

config = micro_config(0, batch_size=8, num_frames=2, num_motion_frames=1)
rng = np.random.default_rng(0)
b, s = 8, config.data.size
host = dict(
    frames=rng.integers(0, 256, (b, 2, s, s, 3), dtype=np.uint8),
    motion_frames=rng.integers(0, 256, (b, 1, s, s, 3), dtype=np.uint8),
    reference=rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8),
    face_mask=np.ones((b, s, s, 1), np.uint8),
    speed=rng.uniform(0, 2, (b, 2)).astype(np.float32),
    audio_features=rng.standard_normal((b, 2, 5, 1, 80)).astype(np.float32),
)
results = {{}}
for shape in [(1, 1, 1), (8, 1, 1), (2, 4, 1), (1, 8, 1), (1, 4, 2)]:
    devices = jax.devices()[: int(np.prod(shape))]
    mesh = sharding.make_mesh(shape, devices)
    trainer = Trainer(config, mesh)
    state, frozen, _ = trainer.initial_state()
    batch = sharding.global_batch(host, mesh)
    step = trainer.compiled_step(batch)
    losses = []
    for _ in range(3):
        state, out = step(state, frozen, batch)
        losses.append(float(out.loss))
    kernel = "backbone.down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.kernel"
    results[str(shape)] = dict(
        losses=losses,
        kernel_spec=str(state["trainable"][kernel].sharding.spec),
        kernel_shard=list(state["trainable"][kernel].addressable_shards[0].data.shape),
        opt_shard=[
            list(x.addressable_shards[0].data.shape)
            for x in jax.tree.leaves(state["opt"])
            if x.shape == state["trainable"][kernel].shape
        ][:1],
        batch_shard=list(batch["frames"].addressable_shards[0].data.shape),
    )
print("RESULTS", json.dumps(results))
"""


@pytest.mark.slow
def test_four_meshes_give_one_devices_losses_with_really_split_parameters():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    code = SCRIPT.format(tests=str(Path(__file__).parent))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.split("RESULTS", 1)[1])
    single = results.pop("(1, 1, 1)")
    for shape, r in results.items():
        assert r["losses"] == pytest.approx(single["losses"], rel=2e-5), shape
    # The GEGLU kernel [32, 256] of the micro model: fsdp splits its rows, tensor its columns.
    assert results["(1, 8, 1)"]["kernel_shard"] == [4, 256]
    assert results["(1, 4, 2)"]["kernel_shard"] == [8, 128]
    assert results["(1, 4, 2)"]["opt_shard"] == [[8, 128]]  # Adam's moments split like the weights
    assert results["(8, 1, 1)"]["kernel_shard"] == [32, 256]  # pure data parallel: whole weights
    assert results["(8, 1, 1)"]["batch_shard"][0] == 1 and results["(2, 4, 1)"]["batch_shard"][0] == 1
    assert single["losses"][-1] < single["losses"][0]  # and it learns
