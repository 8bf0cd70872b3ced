"""ArcFace's IResNet (insightface `arcface_torch`, the `backbone.pth` releases: r18 / r34 / r50 / r100) in Flax
NNX: the face-recognition embedding of the F-SIM score.

Layout mirrors `iresnet.py` (names kept, so the released state dict converts by rule): a 3x3 stem, four stages
of `IBasicBlock`s (BN, 3x3 conv, BN, PReLU, 3x3 conv with the stage's stride, BN, plus the shortcut), BN, the
flattened 7x7x512 map (in PyTorch's channel-first order) through `fc` and a final BatchNorm1d (`features`).
Input: aligned faces [N, 112, 112, 3] RGB in 0-255, normalised as arcface_torch's inference does
((x / 255 - 0.5) / 0.5). Output: [N, 512] embeddings (not normalised).

F-SIM = 100 x the cosine similarity of a generated frame's embedding and the reference image's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from emo_jax.convert.batch_norm import load_with_statistics
from emo_jax.convert.state_dict import ConversionError

DEPTHS = {"r18": (2, 2, 2, 2), "r34": (3, 4, 6, 3), "r50": (3, 4, 14, 3), "r100": (3, 13, 30, 3)}
WIDTHS = (64, 128, 256, 512)
EMBEDDING = 512
BN_EPS = 1e-5


def _conv(cin: int, cout: int, kernel: int, stride: int, rngs: nnx.Rngs) -> nnx.Conv:
    pad = kernel // 2
    return nnx.Conv(cin, cout, (kernel, kernel), strides=stride, padding=((pad, pad),) * 2, use_bias=False, rngs=rngs)


def _bn(channels: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(channels, use_running_average=True, epsilon=BN_EPS, rngs=rngs)


class PReLU(nnx.Module):
    """torch.nn.PReLU(channels): x if x > 0 else slope * x, one slope per channel (`scale`, so the state dict's
    `weight` converts by the weight -> scale rule)."""

    def __init__(self, channels: int):
        self.scale = nnx.Param(jnp.full((channels,), 0.25))

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.where(x > 0, x, self.scale[...] * x)


class IBasicBlock(nnx.Module):
    def __init__(self, cin: int, cout: int, stride: int, rngs: nnx.Rngs):
        self.bn1, self.conv1, self.bn2 = _bn(cin, rngs), _conv(cin, cout, 3, 1, rngs), _bn(cout, rngs)
        self.prelu, self.conv2, self.bn3 = PReLU(cout), _conv(cout, cout, 3, stride, rngs), _bn(cout, rngs)
        self.downsample = (
            nnx.List([_conv(cin, cout, 1, stride, rngs), _bn(cout, rngs)]) if stride != 1 or cin != cout else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample[1](self.downsample[0](x))
        return out + shortcut


class IResNet(nnx.Module):
    def __init__(self, depths: tuple[int, int, int, int], rngs: nnx.Rngs):
        self.conv1, self.bn1, self.prelu = _conv(3, 64, 3, 1, rngs), _bn(64, rngs), PReLU(64)
        cin = 64
        for index, (count, width) in enumerate(zip(depths, WIDTHS), start=1):
            blocks = [IBasicBlock(cin if i == 0 else width, width, 2 if i == 0 else 1, rngs) for i in range(count)]
            setattr(self, f"layer{index}", nnx.List(blocks))
            cin = width
        self.bn2 = _bn(512, rngs)
        self.fc = nnx.Linear(512 * 7 * 7, EMBEDDING, rngs=rngs)
        self.features = _bn(EMBEDDING, rngs)

    def __call__(self, faces: jax.Array) -> jax.Array:
        """[N, 112, 112, 3] RGB 0-255 -> [N, 512]."""
        x = (faces / 255.0 - 0.5) / 0.5
        x = self.prelu(self.bn1(self.conv1(x)))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                x = block(x)
        x = self.bn2(x).transpose(0, 3, 1, 2).reshape(len(x), -1)  # PyTorch's flatten order: C, H, W
        return self.features(self.fc(x))


def depths_of(state_dict: Mapping[str, np.ndarray]) -> tuple[int, int, int, int]:
    """Blocks per stage, read off the keys (`layer3.13.conv1.weight` -> at least 14 in stage 3)."""
    counts = [0, 0, 0, 0]
    for key in state_dict:
        if match := re.match(r"layer([1-4])\.(\d+)\.", key):
            stage, block = int(match[1]) - 1, int(match[2])
            counts[stage] = max(counts[stage], block + 1)
    return tuple(counts)


def from_arcface_state_dict(state_dict: Mapping[str, np.ndarray], *, source: str) -> IResNet:
    """An arcface_torch `backbone.pth` (state dict) -> IResNet of the depth its keys have. Strict: every
    parameter and statistic filled, every key used; else `ConversionError` listing them all."""
    depths = depths_of(state_dict)
    if depths not in DEPTHS.values():
        known = ", ".join(f"{name} {d}" for name, d in DEPTHS.items())
        raise ConversionError(f"{source}: blocks per stage {depths} are none of arcface_torch's IResNets ({known})")
    return load_with_statistics(IResNet(depths, nnx.Rngs(0)), state_dict, source=source)


def face_similarity(model: IResNet, faces: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """F-SIM per face: 100 x cosine similarity of each face [N, 112, 112, 3] with the reference [112, 112, 3]."""
    embeddings = np.asarray(model(jnp.asarray(np.concatenate([reference[None], faces]), jnp.float32)), np.float64)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    return 100 * embeddings[1:] @ embeddings[0]
