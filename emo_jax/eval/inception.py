"""The FID Inception-v3 (pytorch-fid's `fid_inception_v3`, weights `pt_inception-2015-12-05-6726825d.pth`, the
TensorFlow FID network ported to PyTorch) in Flax NNX: 2048 pool features per image for FID.

Layout and names mirror torchvision's `Inception3` as pytorch-fid patches it, so the released state dict
converts by rule (`Mixed_5b.branch1x1.conv.weight` -> `Mixed_5b.branch1x1.conv.kernel`): `BasicConv2d` is a
bias-free conv, BatchNorm (eps 1e-3) and ReLU; the A, C and first E blocks average-pool without counting the
padding (TensorFlow's way), the last E block max-pools. The 1008-way classifier (`fc.*`) is not used (ignored
on purpose). Input: images [N, H, W, 3] in [0, 1], resized to 299 x 299 bilinearly without antialiasing (as
`F.interpolate(..., align_corners=False)`) and scaled to [-1, 1], as pytorch-fid feeds them.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen, nnx

from emo_jax.convert.batch_norm import load_with_statistics

SIZE = 299
FEATURES = 2048
BN_EPS = 1e-3


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else value


class BasicConv2d(nnx.Module):
    def __init__(self, cin: int, cout: int, kernel, rngs: nnx.Rngs, stride: int = 1, padding=0):
        padding = tuple((p, p) for p in _pair(padding))
        self.conv = nnx.Conv(cin, cout, _pair(kernel), strides=stride, padding=padding, use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(cout, use_running_average=True, epsilon=BN_EPS, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(self.bn(self.conv(x)))


def _average_pool(x: jax.Array) -> jax.Array:
    """3x3, stride 1, padding 1, the padding not counted (count_include_pad=False)."""
    return linen.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool(x: jax.Array, stride: int = 2, padding: int = 0) -> jax.Array:
    return linen.max_pool(x, (3, 3), (stride, stride), ((padding, padding),) * 2)


class InceptionA(nnx.Module):
    def __init__(self, cin: int, pool_features: int, rngs: nnx.Rngs):
        self.branch1x1 = BasicConv2d(cin, 64, 1, rngs)
        self.branch5x5_1, self.branch5x5_2 = BasicConv2d(cin, 48, 1, rngs), BasicConv2d(48, 64, 5, rngs, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, rngs)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, rngs, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, rngs, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        double = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branches = [self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)), double]
        return jnp.concatenate([*branches, self.branch_pool(_average_pool(x))], axis=-1)


class InceptionB(nnx.Module):
    def __init__(self, cin: int, rngs: nnx.Rngs):
        self.branch3x3 = BasicConv2d(cin, 384, 3, rngs, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, rngs)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, rngs, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, rngs, stride=2)

    def __call__(self, x: jax.Array) -> jax.Array:
        double = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return jnp.concatenate([self.branch3x3(x), double, _max_pool(x)], axis=-1)


class InceptionC(nnx.Module):
    def __init__(self, cin: int, channels_7x7: int, rngs: nnx.Rngs):
        c = channels_7x7
        wide, tall = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.branch1x1 = BasicConv2d(cin, 192, 1, rngs)
        self.branch7x7_1 = BasicConv2d(cin, c, 1, rngs)
        self.branch7x7_2 = BasicConv2d(c, c, rngs=rngs, **wide)
        self.branch7x7_3 = BasicConv2d(c, 192, rngs=rngs, **tall)
        self.branch7x7dbl_1 = BasicConv2d(cin, c, 1, rngs)
        self.branch7x7dbl_2 = BasicConv2d(c, c, rngs=rngs, **tall)
        self.branch7x7dbl_3 = BasicConv2d(c, c, rngs=rngs, **wide)
        self.branch7x7dbl_4 = BasicConv2d(c, c, rngs=rngs, **tall)
        self.branch7x7dbl_5 = BasicConv2d(c, 192, rngs=rngs, **wide)
        self.branch_pool = BasicConv2d(cin, 192, 1, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        seven = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        double = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            double = layer(double)
        return jnp.concatenate([self.branch1x1(x), seven, double, self.branch_pool(_average_pool(x))], axis=-1)


class InceptionD(nnx.Module):
    def __init__(self, cin: int, rngs: nnx.Rngs):
        self.branch3x3_1 = BasicConv2d(cin, 192, 1, rngs)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, rngs, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1, rngs)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), rngs, padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), rngs, padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, rngs, stride=2)

    def __call__(self, x: jax.Array) -> jax.Array:
        three = self.branch3x3_2(self.branch3x3_1(x))
        seven = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return jnp.concatenate([three, seven, _max_pool(x)], axis=-1)


class InceptionE(nnx.Module):
    """`pool`: 'average' (FIDInceptionE_1, padding not counted) or 'max' (FIDInceptionE_2)."""

    def __init__(self, cin: int, pool: str, rngs: nnx.Rngs):
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, 1, rngs)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1, rngs)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), rngs, padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), rngs, padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1, rngs)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, rngs, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), rngs, padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), rngs, padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        three = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = _average_pool(x) if self.pool == "average" else _max_pool(x, stride=1, padding=1)
        return jnp.concatenate(
            [
                self.branch1x1(x),
                self.branch3x3_2a(three),
                self.branch3x3_2b(three),
                self.branch3x3dbl_3a(double),
                self.branch3x3dbl_3b(double),
                self.branch_pool(pooled),
            ],
            axis=-1,
        )


class FIDInceptionV3(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, rngs, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3, rngs)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, rngs, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1, rngs)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3, rngs)
        self.Mixed_5b, self.Mixed_5c = InceptionA(192, 32, rngs), InceptionA(256, 64, rngs)
        self.Mixed_5d, self.Mixed_6a = InceptionA(288, 64, rngs), InceptionB(288, rngs)
        self.Mixed_6b, self.Mixed_6c = InceptionC(768, 128, rngs), InceptionC(768, 160, rngs)
        self.Mixed_6d, self.Mixed_6e = InceptionC(768, 160, rngs), InceptionC(768, 192, rngs)
        self.Mixed_7a = InceptionD(768, rngs)
        self.Mixed_7b, self.Mixed_7c = InceptionE(1280, "average", rngs), InceptionE(2048, "max", rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        """[N, H, W, 3] in [0, 1] -> [N, 2048] pool features."""
        x = jax.image.resize(images, (len(images), SIZE, SIZE, 3), "linear", antialias=False)
        x = 2 * x - 1
        x = _max_pool(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))))
        x = _max_pool(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c):
            x = block(x)
        for block in (self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x.mean(axis=(1, 2))


def from_fid_inception_state_dict(state_dict: Mapping[str, np.ndarray], *, source: str) -> FIDInceptionV3:
    """pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` -> FIDInceptionV3. Strict: every parameter and
    statistic filled, every key used but the classifier's (`fc.*`, ignored on purpose)."""
    kept = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    return load_with_statistics(FIDInceptionV3(nnx.Rngs(0)), kept, source=source)
