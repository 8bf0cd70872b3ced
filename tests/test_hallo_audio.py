"""Hallo's audio features (emo_jax.audio.hallo) against transformers' wav2vec2 run as Hallo's `Wav2VecModel`
runs it: conv features resampled by torch's F.interpolate to one per video frame, then the transformer."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from audio_inputs import TINY_50HZ, speech_like
from peers import perturb_vectors, rel_err, require, state_dict_numpy

from emo_jax.audio.hallo import hallo_audio_features
from emo_jax.convert.wav2vec2 import from_hf_wav2vec2
from emo_jax.models.wav2vec2 import interpolate_frames


@pytest.mark.parametrize("length,frames", [(7, 16), (40, 9), (5, 5), (6, 1)])
def test_frame_interpolation_is_torchs_with_corners_aligned(length, frames):
    torch = require("torch")
    x = np.random.default_rng(0).standard_normal((2, length, 3)).astype(np.float32)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(x).transpose(1, 2), size=frames, mode="linear", align_corners=True
    ).transpose(1, 2)
    np.testing.assert_allclose(interpolate_frames(jnp.asarray(x), frames), expected.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parity
def test_hallo_audio_features_match_its_wav2vec_pass():
    torch, transformers = require("torch"), require("transformers")
    config = transformers.Wav2Vec2Config(**TINY_50HZ)
    torch.manual_seed(0)
    peer = transformers.Wav2Vec2Model(config).eval()
    perturb_vectors(peer)
    ours = from_hf_wav2vec2(state_dict_numpy(peer), config.to_dict())
    audio = speech_like(seconds=1.3)

    features, frames = hallo_audio_features(audio, ours, fps=25, clip_frames=16)
    assert frames == math.ceil(1.3 * 25) == 33 and features.shape == (48, 5, 2, 32)

    # Hallo's AudioProcessor.preprocess; its Wav2VecModel.forward is transformers' with the conv features [B, C, T]
    # resampled to one per video frame
    x = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
    x = np.pad(x, (0, (48 - 33) * 640))
    conv = peer.feature_extractor.forward
    peer.feature_extractor.forward = lambda w: torch.nn.functional.interpolate(
        conv(w), size=48, align_corners=True, mode="linear"
    )
    with torch.no_grad():
        states = peer(torch.from_numpy(x)[None].float(), output_hidden_states=True).hidden_states
    layers = torch.stack(states[1:], dim=1)[0].transpose(0, 1).numpy()  # [F', L, D]
    windows = np.clip(np.arange(48)[:, None] + np.arange(-2, 3)[None], 0, 47)  # Hallo's process_audio_emb
    assert rel_err(features, layers[windows]) < 1e-5


def test_empty_audio_is_refused():
    class Unused:
        pass

    with pytest.raises(ValueError, match="non-empty mono waveform"):
        hallo_audio_features(np.zeros(0, np.float32), Unused())
