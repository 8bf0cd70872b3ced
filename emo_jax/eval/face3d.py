"""Deep3DFaceRecon's coefficient regressor (Deng et al. 2019, `Deep3DFaceRecon_pytorch`, checkpoint
`epoch_20.pth`, key `net_recon`) in Flax NNX: the 3DMM expression coefficients of the E-FID score.

A torchvision-layout ResNet-50 (`backbone.*`: 7x7 stem, max pool, Bottleneck stages of 3 / 4 / 6 / 3 blocks,
global average pool) and seven 1x1 convs (`final_layers.0-6`) whose outputs, concatenated, are the 257
coefficients of the Basel face model as that work uses it: identity 80, expression 64, texture 80, angles 3,
lighting 27, translation 3. Input: faces [N, 224, 224, 3] RGB in 0-255 (divided by 255, as the reference).

E-FID = the Frechet distance between the expression coefficients of generated and real frames.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen, nnx

from emo_jax.convert.batch_norm import load_with_statistics

STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (width, blocks, stride) of ResNet-50
HEADS = (80, 64, 80, 3, 27, 2, 1)  # identity, expression, texture, angles, lighting, tx ty, tz
EXPRESSION = slice(80, 144)
BN_EPS = 1e-5


def _conv(cin: int, cout: int, kernel: int, stride: int, rngs: nnx.Rngs, bias: bool = False) -> nnx.Conv:
    pad = kernel // 2
    return nnx.Conv(cin, cout, (kernel, kernel), strides=stride, padding=((pad, pad),) * 2, use_bias=bias, rngs=rngs)


def _bn(channels: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(channels, use_running_average=True, epsilon=BN_EPS, rngs=rngs)


class Bottleneck(nnx.Module):
    """torchvision's: 1x1, 3x3 (the stride), 1x1 to 4x the width, each with BN; ReLU after each and the sum."""

    def __init__(self, cin: int, width: int, stride: int, rngs: nnx.Rngs):
        self.conv1, self.bn1 = _conv(cin, width, 1, 1, rngs), _bn(width, rngs)
        self.conv2, self.bn2 = _conv(width, width, 3, stride, rngs), _bn(width, rngs)
        self.conv3, self.bn3 = _conv(width, 4 * width, 1, 1, rngs), _bn(4 * width, rngs)
        self.downsample = (
            nnx.List([_conv(cin, 4 * width, 1, stride, rngs), _bn(4 * width, rngs)])
            if stride != 1 or cin != 4 * width
            else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        out = jax.nn.relu(self.bn1(self.conv1(x)))
        out = jax.nn.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample[1](self.downsample[0](x))
        return jax.nn.relu(out + shortcut)


class ResNet50(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(3, 64, (7, 7), strides=2, padding=((3, 3), (3, 3)), use_bias=False, rngs=rngs)
        self.bn1 = _bn(64, rngs)
        cin = 64
        for index, (width, count, stride) in enumerate(STAGES, start=1):
            blocks = [
                Bottleneck(cin if i == 0 else 4 * width, width, stride if i == 0 else 1, rngs) for i in range(count)
            ]
            setattr(self, f"layer{index}", nnx.List(blocks))
            cin = 4 * width

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.relu(self.bn1(self.conv1(x)))
        x = linen.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                x = block(x)
        return x.mean(axis=(1, 2))  # [N, 2048]


class FaceReconstruction(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.backbone = ResNet50(rngs)
        self.final_layers = nnx.List([nnx.Linear(2048, n, rngs=rngs) for n in HEADS])  # 1x1 convs on a 1x1 map

    def __call__(self, faces: jax.Array) -> jax.Array:
        """[N, 224, 224, 3] RGB 0-255 -> [N, 257] coefficients."""
        features = self.backbone(faces / 255.0)
        return jnp.concatenate([layer(features) for layer in self.final_layers], axis=-1)

    def expression(self, faces: jax.Array) -> jax.Array:
        """[N, 224, 224, 3] -> [N, 64] expression coefficients."""
        return self(faces)[:, EXPRESSION]


def from_deep3d_state_dict(state_dict: Mapping[str, np.ndarray], *, source: str) -> FaceReconstruction:
    """Deep3DFaceRecon's `net_recon` state dict -> FaceReconstruction. Strict: every parameter and statistic
    filled, every key used; else `ConversionError` listing them all."""
    return load_with_statistics(FaceReconstruction(nnx.Rngs(0)), state_dict, source=source)
