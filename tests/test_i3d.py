"""The FVD I3D in NNX against a PyTorch forward of VideoGPT's `pytorch_i3d.InceptionI3d` and its `preprocess`
(transcribed here from VideoGPT's fvd/ folder: no PyPI package ships it), on random weights and statistics."""

import math

import numpy as np
import pytest
from peers import randomize_for_evaluation, rel_err, require, state_dict_numpy

from emo_jax.eval.i3d import TENSORFLOW_EPS, VIDEOGPT_EPS, clips_of, from_i3d_state_dict


def torch_videogpt_i3d(eps: float):
    torch = require("torch")
    nn, F = torch.nn, torch.nn.functional

    def same_pad(x, kernel, stride):
        pads = []
        for size, k, s in zip(x.shape[2:], kernel, stride):
            total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
            pads.append((total // 2, total - total // 2))
        (tf, tb), (hf, hb), (wf, wb) = pads
        return F.pad(x, (wf, wb, hf, hb, tf, tb))

    class MaxPoolSame(nn.MaxPool3d):
        def forward(self, x):
            return super().forward(same_pad(x, self.kernel_size, self.stride))

    class Unit3D(nn.Module):
        def __init__(self, cin, cout, kernel=(1, 1, 1), stride=(1, 1, 1), head=False):
            super().__init__()
            self.kernel, self.stride, self.head = kernel, stride, head
            self.conv3d = nn.Conv3d(cin, cout, kernel, stride, padding=0, bias=head)
            if not head:
                self.bn = nn.BatchNorm3d(cout, eps=eps, momentum=0.001)

        def forward(self, x):
            x = self.conv3d(same_pad(x, self.kernel, self.stride))
            return x if self.head else F.relu(self.bn(x))

    class InceptionModule(nn.Module):
        def __init__(self, cin, out):
            super().__init__()
            self.b0 = Unit3D(cin, out[0])
            self.b1a, self.b1b = Unit3D(cin, out[1]), Unit3D(out[1], out[2], (3, 3, 3))
            self.b2a, self.b2b = Unit3D(cin, out[3]), Unit3D(out[3], out[4], (3, 3, 3))
            self.b3a, self.b3b = MaxPoolSame((3, 3, 3), (1, 1, 1)), Unit3D(cin, out[5])

        def forward(self, x):
            return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)

    class InceptionI3d(nn.Module):
        def __init__(self):
            super().__init__()
            layers = [
                ("Conv3d_1a_7x7", Unit3D(3, 64, (7, 7, 7), (2, 2, 2))),
                ("MaxPool3d_2a_3x3", MaxPoolSame((1, 3, 3), (1, 2, 2))),
                ("Conv3d_2b_1x1", Unit3D(64, 64)),
                ("Conv3d_2c_3x3", Unit3D(64, 192, (3, 3, 3))),
                ("MaxPool3d_3a_3x3", MaxPoolSame((1, 3, 3), (1, 2, 2))),
                ("Mixed_3b", InceptionModule(192, [64, 96, 128, 16, 32, 32])),
                ("Mixed_3c", InceptionModule(256, [128, 128, 192, 32, 96, 64])),
                ("MaxPool3d_4a_3x3", MaxPoolSame((3, 3, 3), (2, 2, 2))),
                ("Mixed_4b", InceptionModule(128 + 192 + 96 + 64, [192, 96, 208, 16, 48, 64])),
                ("Mixed_4c", InceptionModule(192 + 208 + 48 + 64, [160, 112, 224, 24, 64, 64])),
                ("Mixed_4d", InceptionModule(160 + 224 + 64 + 64, [128, 128, 256, 24, 64, 64])),
                ("Mixed_4e", InceptionModule(128 + 256 + 64 + 64, [112, 144, 288, 32, 64, 64])),
                ("Mixed_4f", InceptionModule(112 + 288 + 64 + 64, [256, 160, 320, 32, 128, 128])),
                ("MaxPool3d_5a_2x2", MaxPoolSame((2, 2, 2), (2, 2, 2))),
                ("Mixed_5b", InceptionModule(256 + 320 + 128 + 128, [256, 160, 320, 32, 128, 128])),
                ("Mixed_5c", InceptionModule(256 + 320 + 128 + 128, [384, 192, 384, 48, 128, 128])),
            ]
            self.order = [name for name, _ in layers]
            for name, layer in layers:
                self.add_module(name, layer)
            self.avg_pool = nn.AvgPool3d((2, 7, 7), (1, 1, 1))
            self.logits = Unit3D(384 + 384 + 128 + 128, 400, head=True)

        def forward(self, x):
            for name in self.order:
                x = self._modules[name](x)
            return self.logits(self.avg_pool(x)).squeeze(3).squeeze(3).mean(dim=2)

    def preprocess(videos):  # VideoGPT's: uint8 [B, T, H, W, C] -> [B, C, T, 224, 224] in [-1, 1]
        out = []
        for video in torch.from_numpy(videos):
            video = video.permute(0, 3, 1, 2).float() / 255.0
            t, c, h, w = video.shape
            scale = 224 / min(h, w)
            size = (224, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), 224)
            video = F.interpolate(video, size=size, mode="bilinear", align_corners=False)
            top, left = (video.shape[2] - 224) // 2, (video.shape[3] - 224) // 2
            video = video[:, :, top : top + 224, left : left + 224].permute(1, 0, 2, 3).contiguous()
            out.append(video - 0.5)
        return torch.stack(out) * 2

    net = InceptionI3d()
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():  # He-scaled convs: activations keep their size through the 60-odd layers
        for module in net.modules():
            if isinstance(module, nn.Conv3d):
                module.weight.normal_(0, (2 / module.weight[0].numel()) ** 0.5, generator=generator)
    return randomize_for_evaluation(net), preprocess


@pytest.mark.parity
@pytest.mark.slow  # ~1 min on 2 cores: 16-frame 224 px I3D forwards and their compilation
@pytest.mark.parametrize("eps", [VIDEOGPT_EPS, TENSORFLOW_EPS])
def test_clip_logits_equal_videogpt_s_i3d(eps):
    torch = require("torch")
    reference, preprocess = torch_videogpt_i3d(eps)
    ours = from_i3d_state_dict(state_dict_numpy(reference), source="random i3d", batch_norm_eps=eps)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (34, 48, 60, 3), dtype=np.uint8)  # not square: resize, then crop the centre
    clips = clips_of(frames)
    assert clips.shape == (2, 16, 48, 60, 3) and (clips[1, 0] == frames[16]).all()  # the last 2 frames dropped
    with torch.no_grad():
        expected = reference(preprocess(clips)).numpy()
    logits = np.asarray(ours(clips.astype(np.float32) / 255))
    assert logits.shape == (2, 400) and rel_err(logits, expected) < 1e-5
