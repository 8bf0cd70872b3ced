"""Deep3DFaceRecon's coefficient regressor (E-FID) in NNX against a PyTorch forward of its layout
(torchvision's ResNet-50 + seven 1x1 convs, transcribed here), on random weights and statistics."""

import numpy as np
import pytest
from peers import randomize_for_evaluation, rel_err, require, state_dict_numpy

from emo_jax.convert.files import read_state_dict
from emo_jax.eval.face3d import EXPRESSION, from_deep3d_state_dict


def torch_reconstruction():
    torch = require("torch")
    nn = torch.nn

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
            self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
            self.conv3, self.bn3 = nn.Conv2d(width, 4 * width, 1, bias=False), nn.BatchNorm2d(4 * width)
            self.downsample = None
            if stride != 1 or cin != 4 * width:
                self.downsample = nn.Sequential(
                    nn.Conv2d(cin, 4 * width, 1, stride, bias=False), nn.BatchNorm2d(4 * width)
                )

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            out = self.bn3(self.conv3(torch.relu(self.bn2(self.conv2(out)))))
            return torch.relu(out + (x if self.downsample is None else self.downsample(x)))

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
            self.maxpool, cin = nn.MaxPool2d(3, 2, 1), 64
            for index, (width, count, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], 1):
                blocks = [
                    Bottleneck(cin if i == 0 else 4 * width, width, stride if i == 0 else 1) for i in range(count)
                ]
                setattr(self, f"layer{index}", nn.Sequential(*blocks))
                cin = 4 * width
            self.avgpool = nn.AdaptiveAvgPool2d(1)

        def forward(self, x):
            x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
            return self.avgpool(self.layer4(self.layer3(self.layer2(self.layer1(x)))))

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = ResNet()
            self.final_layers = nn.ModuleList([nn.Conv2d(2048, n, 1) for n in (80, 64, 80, 3, 27, 2, 1)])

        def forward(self, x):
            x = self.backbone(x)
            return torch.flatten(torch.cat([layer(x) for layer in self.final_layers], 1), 1)

    net = Wrapper()
    return randomize_for_evaluation(net)  # fmt: skip


@pytest.mark.parity
@pytest.mark.slow  # ~40 s on 2 cores: compiling a 224 px ResNet-50
def test_coefficients_equal_the_pytorch_forward_and_a_wrapped_checkpoint_reads(tmp_path):
    torch = require("torch")
    reference = torch_reconstruction()
    torch.save({"net_recon": reference.state_dict(), "epoch": 20}, tmp_path / "epoch_20.pth")
    weights = read_state_dict(tmp_path / "epoch_20.pth")  # unwrapped from its 'net_recon' entry
    assert weights.keys() == state_dict_numpy(reference).keys()
    ours = from_deep3d_state_dict(weights, source="epoch_20.pth")
    faces = np.random.default_rng(0).uniform(0, 255, (1, 224, 224, 3)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(faces / 255).permute(0, 3, 1, 2)).numpy()
    assert expected.shape == (1, 257) and rel_err(ours(faces), expected) < 1e-5
    np.testing.assert_allclose(ours.expression(faces), expected[:, EXPRESSION], rtol=1e-4, atol=1e-5)
