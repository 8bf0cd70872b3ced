"""SyncNet (Sync-C / Sync-D) in NNX against a PyTorch forward of `SyncNetModel.S`, transcribed here from
joonson/syncnet_python (not on PyPI), on random weights and random batch-norm statistics."""

import numpy as np
import pytest
from peers import randomize_for_evaluation, rel_err, require, state_dict_numpy

from emo_jax.convert.state_dict import ConversionError
from emo_jax.eval.syncnet import from_syncnet_state_dict


def torch_syncnet():
    """SyncNetModel.S as the released syncnet_v2.model was trained: the layer list of its nn.Sequentials."""
    torch = require("torch")
    nn = torch.nn

    def block(conv, cin, cout, kernel, stride=1, padding=0):
        return [
            conv(cin, cout, kernel, stride=stride, padding=padding),
            nn.BatchNorm2d(cout) if conv is nn.Conv2d else nn.BatchNorm3d(cout),
            nn.ReLU(),
        ]

    c2, c3 = nn.Conv2d, nn.Conv3d
    s = nn.Module()
    s.netcnnaud = nn.Sequential(
        *block(c2, 1, 64, 3, 1, 1),
        nn.MaxPool2d(1, 1),
        *block(c2, 64, 192, 3, 1, 1),
        nn.MaxPool2d(3, (1, 2)),
        *block(c2, 192, 384, 3, 1, 1),
        *block(c2, 384, 256, 3, 1, 1),
        *block(c2, 256, 256, 3, 1, 1),
        nn.MaxPool2d(3, 2),
        *block(c2, 256, 512, (5, 4)),
    )
    s.netcnnlip = nn.Sequential(
        *block(c3, 3, 96, (5, 7, 7), (1, 2, 2)),
        nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
        *block(c3, 96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)),
        nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
        *block(c3, 256, 256, (1, 3, 3), 1, (0, 1, 1)),
        *block(c3, 256, 256, (1, 3, 3), 1, (0, 1, 1)),
        *block(c3, 256, 256, (1, 3, 3), 1, (0, 1, 1)),
        nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
        *block(c3, 256, 512, (1, 6, 6)),
    )
    for name in ("netfcaud", "netfclip"):
        setattr(s, name, nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, 1024)))
    return randomize_for_evaluation(s)  # fmt: skip


@pytest.mark.parity
@pytest.mark.slow  # ~25 s on 2 cores, mostly compiling the 224 px lip tower: kept out of the 15-minute default run
def test_both_towers_equal_the_pytorch_forward():
    torch = require("torch")
    reference = torch_syncnet()
    ours = from_syncnet_state_dict(state_dict_numpy(reference), source="random syncnet")
    rng = np.random.default_rng(0)
    mfcc = rng.standard_normal((3, 1, 13, 20)).astype(np.float32)
    clips = rng.uniform(0, 255, (1, 3, 5, 224, 224)).astype(np.float32)
    with torch.no_grad():
        aud = reference.netfcaud(reference.netcnnaud(torch.from_numpy(mfcc)).flatten(1)).numpy()
        lip = reference.netfclip(reference.netcnnlip(torch.from_numpy(clips)).flatten(1)).numpy()
    assert rel_err(ours.forward_aud(mfcc.transpose(0, 2, 3, 1)), aud) < 1e-5
    assert rel_err(ours.forward_lip(clips.transpose(0, 2, 3, 4, 1)), lip) < 1e-5


@pytest.mark.parity
def test_every_key_is_used_and_a_missing_or_stray_one_is_named():
    weights = state_dict_numpy(torch_syncnet())
    assert any(k.endswith("num_batches_tracked") for k in weights)  # ignored on purpose
    broken = {k: v for k, v in weights.items() if k != "netcnnlip.1.running_var"}
    broken["netcnnaud.99.running_mean"] = np.zeros(3, np.float32)
    broken["extra.weight"] = np.zeros(2, np.float32)
    with pytest.raises(ConversionError) as error:
        from_syncnet_state_dict(broken, source="syncnet_v2.model")
    message = str(error.value)
    assert "syncnet_v2.model" in message and "extra.weight" in message
    assert "netcnnlip.1.var" in message and "netcnnaud.99.running_mean" in message


@pytest.mark.parity
@pytest.mark.slow
def test_sync_scores_run_end_to_end_on_a_converted_network():
    from emo_jax.eval.sync import SHIFT, sync_scores

    model = from_syncnet_state_dict(state_dict_numpy(torch_syncnet()), source="random syncnet")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (12, 224, 224, 3), dtype=np.uint8)
    result = sync_scores(model, frames, rng.standard_normal(8000).astype(np.float32) * 0.1, batch=4)
    assert result.mean_distances.shape == (2 * SHIFT + 1,) and np.isfinite(result.mean_distances).all()
    assert result.confidence >= 0 and result.distance == result.mean_distances.min()
