"""ArcFace IResNet (F-SIM) in NNX against a PyTorch forward of arcface_torch's `iresnet.py`, transcribed here
(insightface's training code is not on PyPI), on random weights and statistics."""

import numpy as np
import pytest
from peers import randomize_for_evaluation, rel_err, require, state_dict_numpy

from emo_jax.convert.state_dict import ConversionError
from emo_jax.eval.arcface import depths_of, face_similarity, from_arcface_state_dict


def torch_iresnet(depths=(2, 2, 2, 2)):
    """IResNet(IBasicBlock, depths) as iresnet.py builds it (dropout 0, 512 features, eval mode)."""
    torch = require("torch")
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
            self.bn2, self.prelu = nn.BatchNorm2d(cout), nn.PReLU(cout)
            self.conv2, self.bn3 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
            return out + (x if self.downsample is None else self.downsample(x))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1, self.prelu = nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)
            cin = 64
            for index, (count, width) in enumerate(zip(depths, (64, 128, 256, 512)), start=1):
                blocks = [Block(cin if i == 0 else width, width, 2 if i == 0 else 1) for i in range(count)]
                setattr(self, f"layer{index}", nn.Sequential(*blocks))
                cin = width
            self.bn2, self.fc, self.features = nn.BatchNorm2d(512), nn.Linear(512 * 49, 512), nn.BatchNorm1d(512)

        def forward(self, x):
            x = self.prelu(self.bn1(self.conv1(x)))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.features(self.fc(torch.flatten(self.bn2(x), 1)))

    net = Net()
    return randomize_for_evaluation(net)


@pytest.mark.parity
@pytest.mark.slow  # ~30 s on 2 cores (compiling two forwards of a 112 px r18)
def test_iresnet_equals_the_pytorch_forward_and_f_sim_is_a_cosine():
    torch = require("torch")
    reference = torch_iresnet()
    weights = state_dict_numpy(reference)
    assert depths_of(weights) == (2, 2, 2, 2)
    ours = from_arcface_state_dict(weights, source="random r18")
    faces = np.random.default_rng(0).uniform(0, 255, (2, 112, 112, 3)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy((faces / 255 - 0.5) / 0.5).permute(0, 3, 1, 2)).numpy()
    assert rel_err(ours(faces), expected) < 1e-5
    similarity = face_similarity(ours, faces, faces[0])
    cosine = expected @ expected[0] / np.linalg.norm(expected, axis=1) / np.linalg.norm(expected[0])
    np.testing.assert_allclose(similarity, 100 * cosine, rtol=1e-4)
    assert similarity[0] == pytest.approx(100)


@pytest.mark.parity
def test_an_unknown_depth_and_missing_keys_are_refused_by_name():
    weights = state_dict_numpy(torch_iresnet())
    odd = {k: v for k, v in weights.items() if not k.startswith("layer2.1.")}
    with pytest.raises(ConversionError, match=r"blocks per stage \(2, 1, 2, 2\) are none of"):
        from_arcface_state_dict(odd, source="backbone.pth")
    weights.pop("features.running_var")
    with pytest.raises(ConversionError, match=r"(?s)backbone.pth.*features.var"):
        from_arcface_state_dict(weights, source="backbone.pth")
