"""SyncNet (Chung & Zisserman 2016, `syncnet_v2.model` of joonson/syncnet_python) in Flax NNX: the network of
the Sync-C / Sync-D lip-sync metrics.

Two towers, mirrored layer by layer from `SyncNetModel.S` (names and `nn.Sequential` indices kept, so the
released state dict converts by rule: `netcnnaud.0.weight` -> `netcnnaud[0].kernel`):
  * `forward_aud`: MFCC windows [N, 13, 20, 1] (13 coefficients x 20 steps of 10 ms = 0.2 s, channels last)
    -> [N, 1024];
  * `forward_lip`: mouth-crop clips [N, 5, 224, 224, 3] (5 frames, RGB in 0-255 as the reference feeds them)
    -> [N, 1024].
Batch norms run with their stored statistics (evaluation only).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np
from flax import linen, nnx

from emo_jax.convert.batch_norm import load_with_statistics

EMBEDDING = 1024

# Each tower as its nn.Sequential, entry by entry: ("conv", in, out, kernel, stride, padding), ("bn", channels),
# ("relu",), ("pool", window, stride, padding), ("linear", in, out).
AUDIO_CNN = [
    ("conv", 1, 64, (3, 3), (1, 1), (1, 1)), ("bn", 64), ("relu",), ("pool", (1, 1), (1, 1), (0, 0)),
    ("conv", 64, 192, (3, 3), (1, 1), (1, 1)), ("bn", 192), ("relu",), ("pool", (3, 3), (1, 2), (0, 0)),
    ("conv", 192, 384, (3, 3), (1, 1), (1, 1)), ("bn", 384), ("relu",),
    ("conv", 384, 256, (3, 3), (1, 1), (1, 1)), ("bn", 256), ("relu",),
    ("conv", 256, 256, (3, 3), (1, 1), (1, 1)), ("bn", 256), ("relu",), ("pool", (3, 3), (2, 2), (0, 0)),
    ("conv", 256, 512, (5, 4), (1, 1), (0, 0)), ("bn", 512), ("relu",),
]  # fmt: skip
LIP_CNN = [
    ("conv", 3, 96, (5, 7, 7), (1, 2, 2), (0, 0, 0)), ("bn", 96), ("relu",),
    ("pool", (1, 3, 3), (1, 2, 2), (0, 0, 0)),
    ("conv", 96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), ("bn", 256), ("relu",),
    ("pool", (1, 3, 3), (1, 2, 2), (0, 1, 1)),
    ("conv", 256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)), ("bn", 256), ("relu",),
    ("conv", 256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)), ("bn", 256), ("relu",),
    ("conv", 256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)), ("bn", 256), ("relu",),
    ("pool", (1, 3, 3), (1, 2, 2), (0, 0, 0)),
    ("conv", 256, 512, (1, 6, 6), (1, 1, 1), (0, 0, 0)), ("bn", 512), ("relu",),
]  # fmt: skip
HEAD = [("linear", 512, 512), ("bn", 512), ("relu",), ("linear", 512, EMBEDDING)]
BN_EPS = 1e-5


class ReLU(nnx.Module):
    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(x)


class MaxPool(nnx.Module):
    """torch's MaxPoolNd (padding with -inf, floor mode) on channels-last input."""

    def __init__(self, window: tuple[int, ...], stride: tuple[int, ...], padding: tuple[int, ...]):
        self.window, self.stride, self.padding = window, stride, tuple((p, p) for p in padding)

    def __call__(self, x: jax.Array) -> jax.Array:
        return linen.max_pool(x, self.window, self.stride, self.padding)


def _layer(spec: tuple, rngs: nnx.Rngs) -> nnx.Module:
    kind, *args = spec
    if kind == "conv":
        cin, cout, kernel, stride, padding = args
        return nnx.Conv(cin, cout, kernel, strides=stride, padding=tuple((p, p) for p in padding), rngs=rngs)
    if kind == "bn":
        return nnx.BatchNorm(args[0], use_running_average=True, epsilon=BN_EPS, momentum=0.9, rngs=rngs)
    if kind == "linear":
        return nnx.Linear(*args, rngs=rngs)
    if kind == "pool":
        return MaxPool(*args)
    return ReLU()


def _tower(specs: list[tuple], rngs: nnx.Rngs) -> nnx.List:
    return nnx.List([_layer(spec, rngs) for spec in specs])


def _run(tower: nnx.List, x: jax.Array) -> jax.Array:
    for layer in tower:
        x = layer(x)
    return x


class SyncNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.netcnnaud = _tower(AUDIO_CNN, rngs)
        self.netfcaud = _tower(HEAD, rngs)
        self.netcnnlip = _tower(LIP_CNN, rngs)
        self.netfclip = _tower(HEAD, rngs)

    def forward_aud(self, mfcc: jax.Array) -> jax.Array:
        """[N, 13, 20, 1] -> [N, 1024]."""
        return _run(self.netfcaud, _run(self.netcnnaud, mfcc).reshape(len(mfcc), -1))

    def forward_lip(self, clips: jax.Array) -> jax.Array:
        """[N, 5, 224, 224, 3] -> [N, 1024]."""
        return _run(self.netfclip, _run(self.netcnnlip, clips).reshape(len(clips), -1))


def from_syncnet_state_dict(state_dict: Mapping[str, np.ndarray], *, source: str) -> SyncNet:
    """`syncnet_v2.model` (a PyTorch state dict of `SyncNetModel.S`) -> SyncNet. Strict: every parameter and
    batch-norm statistic filled, every key used (`num_batches_tracked` ignored on purpose); else
    `ConversionError` listing them all."""
    return load_with_statistics(SyncNet(nnx.Rngs(0)), state_dict, source=source)
