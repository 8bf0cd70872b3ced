"""The FID Inception-v3 in NNX against a PyTorch forward of pytorch-fid's network (torchvision's Inception3 as
pytorch-fid patches it, transcribed here: torchvision does not import beside the pinned torch), on random
weights and statistics; and FID of two image sets through it."""

import numpy as np
import pytest
from peers import randomize_for_evaluation, rel_err, require, state_dict_numpy

from emo_jax.eval.frechet import Gaussian, frechet_distance
from emo_jax.eval.inception import from_fid_inception_state_dict


def torch_fid_inception():
    torch = require("torch")
    nn, F = torch.nn, torch.nn.functional

    class BasicConv2d(nn.Module):
        def __init__(self, cin, cout, **kw):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(cin, cout, bias=False, **kw), nn.BatchNorm2d(cout, eps=0.001)

        def forward(self, x):
            return F.relu(self.bn(self.conv(x)))

    def avg(x):
        return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)

    class A(nn.Module):
        def __init__(self, cin, pool):
            super().__init__()
            self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
            self.branch5x5_1, self.branch5x5_2 = (
                BasicConv2d(cin, 48, kernel_size=1),
                BasicConv2d(48, 64, kernel_size=5, padding=2),
            )
            self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
            self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
            self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
            self.branch_pool = BasicConv2d(cin, pool, kernel_size=1)

        def forward(self, x):
            d = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)), d, self.branch_pool(avg(x))], 1)

    class B(nn.Module):
        def __init__(self, cin):
            super().__init__()
            self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
            self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
            self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
            self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

        def forward(self, x):
            d = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return torch.cat([self.branch3x3(x), d, F.max_pool2d(x, 3, 2)], 1)

    class C(nn.Module):
        def __init__(self, cin, c):
            super().__init__()
            w, t = dict(kernel_size=(1, 7), padding=(0, 3)), dict(kernel_size=(7, 1), padding=(3, 0))
            self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
            self.branch7x7_1, self.branch7x7_2, self.branch7x7_3 = (
                BasicConv2d(cin, c, kernel_size=1),
                BasicConv2d(c, c, **w),
                BasicConv2d(c, 192, **t),
            )
            self.branch7x7dbl_1, self.branch7x7dbl_2 = BasicConv2d(cin, c, kernel_size=1), BasicConv2d(c, c, **t)
            self.branch7x7dbl_3, self.branch7x7dbl_4 = BasicConv2d(c, c, **w), BasicConv2d(c, c, **t)
            self.branch7x7dbl_5, self.branch_pool = BasicConv2d(c, 192, **w), BasicConv2d(cin, 192, kernel_size=1)

        def forward(self, x):
            s = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            d = self.branch7x7dbl_5(
                self.branch7x7dbl_4(self.branch7x7dbl_3(self.branch7x7dbl_2(self.branch7x7dbl_1(x))))
            )
            return torch.cat([self.branch1x1(x), s, d, self.branch_pool(avg(x))], 1)

    class D(nn.Module):
        def __init__(self, cin):
            super().__init__()
            self.branch3x3_1, self.branch3x3_2 = (
                BasicConv2d(cin, 192, kernel_size=1),
                BasicConv2d(192, 320, kernel_size=3, stride=2),
            )
            self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
            self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
            self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

        def forward(self, x):
            s = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
            return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), s, F.max_pool2d(x, 3, 2)], 1)

    class E(nn.Module):
        def __init__(self, cin, max_pool):
            super().__init__()
            self.max_pool = max_pool
            self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
            self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
            self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
            self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
            self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
            self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
            self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
            self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
            self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

        def forward(self, x):
            t, d = self.branch3x3_1(x), self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            pooled = F.max_pool2d(x, 3, 1, 1) if self.max_pool else avg(x)
            parts = [
                self.branch1x1(x),
                self.branch3x3_2a(t),
                self.branch3x3_2b(t),
                self.branch3x3dbl_3a(d),
                self.branch3x3dbl_3b(d),
            ]
            return torch.cat([*parts, self.branch_pool(pooled)], 1)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
            self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
            self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
            self.Conv2d_3b_1x1, self.Conv2d_4a_3x3 = (
                BasicConv2d(64, 80, kernel_size=1),
                BasicConv2d(80, 192, kernel_size=3),
            )
            self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a = A(192, 32), A(256, 64), A(288, 64), B(288)
            self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e = (
                C(768, 128),
                C(768, 160),
                C(768, 160),
                C(768, 192),
            )
            self.Mixed_7a, self.Mixed_7b, self.Mixed_7c = D(768), E(1280, False), E(2048, True)
            self.fc = nn.Linear(2048, 1008)  # in the released file; pytorch-fid does not use it

        def forward(self, x):  # pytorch-fid's InceptionV3 with output block 3
            x = 2 * F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1
            x = F.max_pool2d(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))), 3, 2)
            x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, 2)
            for name in ["5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"]:
                x = getattr(self, f"Mixed_{name}")(x)
            return F.adaptive_avg_pool2d(x, 1).flatten(1)

    net = Net()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # He-scaled convs: activations keep their size through 90-odd layers
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.normal_(0, (2 / module.weight[0].numel()) ** 0.5, generator=generator)
    return randomize_for_evaluation(net)  # fmt: skip


@pytest.mark.parity
@pytest.mark.slow  # ~1 min on 2 cores: two full 299 px Inception forwards and their compilation
def test_pool_features_and_fid_equal_pytorch_fid_s_network():
    torch = require("torch")
    reference = torch_fid_inception()
    weights = state_dict_numpy(reference)
    assert "fc.weight" in weights  # ignored on purpose
    ours = from_fid_inception_state_dict(weights, source="random fid inception")
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (6, 64, 64, 3)).astype(np.float32)  # upsampled to 299, as small frames are
    with torch.no_grad():
        expected = reference(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    features = np.asarray(ours(images))
    assert features.shape == (6, 2048) and rel_err(features, expected) < 1e-5
    fid = frechet_distance(Gaussian.of(features[:3]), Gaussian.of(features[3:]))
    np.testing.assert_allclose(fid, frechet_distance(Gaussian.of(expected[:3]), Gaussian.of(expected[3:])), rtol=1e-4)
