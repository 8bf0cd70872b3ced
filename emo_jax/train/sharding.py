"""Where arrays live on the device mesh: one mesh from the config, one logical-axis rule table.

Mesh axes ('data', 'fsdp', 'tensor'): batches split over data x fsdp; parameters (and their optimizer state and
EMA, which have the same shapes) split over fsdp and tensor. An array's logical axes follow from its kind:

    dense kernel [in, out]            ('embed', 'mlp')
    conv kernel [kh, kw, in, out]     (None, None, 'conv_in', 'conv_out')
    vectors, scalars (norms, biases)  replicated
    batch arrays [B, ...]             ('batch', None, ...)

`RULES` maps logical axes to mesh axes (MaxDiffusion's SD1.5 rules, reduced to what this UNet has). A dimension
that the mesh axes do not divide stays whole on every device (e.g. a 1-channel conv input), so any layer fits any
mesh; GSPMD inserts the collectives. The same code runs on 1 CPU, 8 simulated CPU devices, a GPU node or a pod.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
RULES: dict[str, tuple[str, ...]] = {
    "batch": ("data", "fsdp"),
    "embed": ("fsdp",),
    "mlp": ("tensor",),
    "conv_in": ("fsdp",),
    "conv_out": ("tensor",),
}


def make_mesh(shape: Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh of `shape` over ('data', 'fsdp', 'tensor'); one -1 takes the remaining devices."""
    devices = list(devices if devices is not None else jax.devices())
    shape = list(shape)
    if len(shape) != len(MESH_AXES):
        raise ValueError(f"mesh shape {shape}: give one size per axis {MESH_AXES}")
    if shape.count(-1) > 1:
        raise ValueError(f"mesh shape {shape}: at most one -1")
    known = int(np.prod([s for s in shape if s != -1]))
    if -1 in shape:
        if len(devices) % known:
            raise ValueError(f"mesh shape {shape}: {len(devices)} devices do not split into {known}")
        shape[shape.index(-1)] = len(devices) // known
    if int(np.prod(shape)) != len(devices):
        raise ValueError(f"mesh shape {tuple(shape)} needs {int(np.prod(shape))} devices, there are {len(devices)}")
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def logical_axes(shape: Sequence[int]) -> tuple[str | None, ...]:
    """The logical axes of a parameter-like array of `shape` (see the module docstring)."""
    if len(shape) == 2:
        return ("embed", "mlp")
    if len(shape) == 4:
        return (None, None, "conv_in", "conv_out")
    return (None,) * len(shape)


def spec(shape: Sequence[int], axes: Sequence[str | None], mesh: Mesh) -> PartitionSpec:
    """PartitionSpec of logical `axes` under `RULES`, leaving whole any dimension the mesh axes do not divide."""
    parts = []
    for size, axis in zip(shape, axes):
        mesh_axes = tuple(a for a in RULES.get(axis, ()) if mesh.shape[a] > 1) if axis else ()
        ways = int(np.prod([mesh.shape[a] for a in mesh_axes])) if mesh_axes else 1
        parts.append((mesh_axes if len(mesh_axes) > 1 else mesh_axes[0]) if mesh_axes and size % ways == 0 else None)
    return PartitionSpec(*parts)


def param_shardings(tree, mesh: Mesh):
    """NamedShardings for a tree of parameter-like arrays (params, optimizer state, EMA; shapes suffice)."""
    return jax.tree.map(lambda x: NamedSharding(mesh, spec(x.shape, logical_axes(x.shape), mesh)), tree)


def batch_shardings(tree, mesh: Mesh):
    """NamedShardings for a batch: leading axis over data x fsdp, the rest whole."""
    return jax.tree.map(
        lambda x: NamedSharding(mesh, spec(x.shape, ("batch",) + (None,) * (len(x.shape) - 1), mesh)), tree
    )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def global_batch(host_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This host's share of a batch [B / hosts, ...] -> global arrays [B, ...] placed by `batch_shardings`
    (`jax.make_array_from_process_local_data`: each host gives the rows its devices hold)."""
    hosts = jax.process_count()
    shapes = {k: jax.ShapeDtypeStruct((v.shape[0] * hosts,) + v.shape[1:], v.dtype) for k, v in host_batch.items()}
    shardings = batch_shardings(shapes, mesh)
    return {
        k: jax.make_array_from_process_local_data(shardings[k], np.asarray(v), shapes[k].shape)
        for k, v in host_batch.items()
    }
