"""Frame-aligned audio features: alignment, windows, chunking, encoders, projection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from audio_inputs import TINY_50HZ, speech_like
from flax import nnx

from emo_jax.audio import SAMPLE_RATE, LogMelFeatures, Wav2Vec2Features, frame_features
from emo_jax.audio.features import HOP, resample_to_frames, window
from emo_jax.models.conditioning import AudioProjection
from emo_jax.models.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model

TINY = Wav2Vec2Config(**TINY_50HZ)


@pytest.fixture(scope="module")
def tiny_wav2vec2():
    return Wav2Vec2Model(TINY, rngs=nnx.Rngs(0))


def test_window_takes_neighbours_and_repeats_edges():
    features = np.arange(4, dtype=np.float32).reshape(1, 4, 1)  # [L=1, F=4, D=1], value = frame index
    windows = window(features, m=2)
    assert windows.shape == (4, 5, 1, 1)
    np.testing.assert_array_equal(
        windows[:, :, 0, 0], [[0, 0, 0, 1, 2], [0, 0, 1, 2, 3], [0, 1, 2, 3, 3], [1, 2, 3, 3, 3]]
    )


def test_resampling_reads_features_at_frame_centre_times():
    # Each feature holds its own centre time in seconds; interpolated at a video frame, it must read that
    # frame's centre time, wherever the frame lies inside the feature range.
    receptive = 400
    num = 200
    centres = (np.arange(num) * HOP + receptive / 2) / SAMPLE_RATE
    features = np.stack([centres, -centres], axis=-1)[None].astype(np.float32)  # [1, T, 2]
    fps = 25
    frames = resample_to_frames(features, fps, 90, receptive)
    expected = (np.arange(90) + 0.5) / fps
    np.testing.assert_allclose(frames[0, :, 0], expected, atol=1e-6)
    np.testing.assert_allclose(frames[0, :, 1], -expected, atol=1e-6)


def test_audio_that_fits_gives_the_one_pass_result(tiny_wav2vec2):
    audio = speech_like(1.3)
    encoder = Wav2Vec2Features(tiny_wav2vec2, chunk_seconds=30)
    one_pass = tiny_wav2vec2(jnp.asarray((audio - audio.mean()) / np.sqrt(audio.var() + 1e-7))[None])
    expected = np.stack([np.asarray(h[0]) for h in one_pass.hidden_states[1:]])
    # Same computation; only jit-vs-eager float reassociation differs (~2e-6 on values ~3).
    np.testing.assert_allclose(encoder(audio), expected, rtol=1e-5, atol=1e-5)


def test_chunks_cover_every_frame_once_and_stitch_exactly(tiny_wav2vec2):
    audio = speech_like(3.3, seed=3)
    encoder = Wav2Vec2Features(tiny_wav2vec2, chunk_seconds=1.0, context_seconds=0.4)
    plan = encoder.chunks(audio.size)
    total = encoder.num_frames(audio.size)
    assert len(plan) == 4
    assert [k for start, end, _, _ in plan for k in range(start, end)] == list(range(total))

    features = encoder(audio)
    assert features.shape == (TINY.num_hidden_layers, total, TINY.hidden_size)
    # Each kept stretch equals a one-pass run over exactly that chunk's window of samples.
    normalised = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
    for keep_start, keep_end, run_start, run_end in plan:
        end = audio.size if run_end == encoder.num_frames(audio.size) else (run_end - 1) * HOP + encoder.receptive_field
        samples = normalised[run_start * HOP : end]
        run = tiny_wav2vec2(jnp.asarray(samples)[None])
        expected = np.stack([np.asarray(h[0]) for h in run.hidden_states[1:]])[
            :, keep_start - run_start : keep_end - run_start
        ]
        np.testing.assert_allclose(features[:, keep_start:keep_end], expected, rtol=1e-5, atol=1e-5)


def test_logmel_frames_match_wav2vec2_frames_and_follow_pitch(tiny_wav2vec2):
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    low, high = (np.sin(2 * np.pi * f * t).astype(np.float32) for f in (300, 3000))
    logmel = LogMelFeatures(n_mels=40)
    assert logmel(low).shape == (1, Wav2Vec2Features(tiny_wav2vec2).num_frames(t.size), 40)
    assert logmel(high)[0].mean(0).argmax() > logmel(low)[0].mean(0).argmax() + 10


@pytest.mark.parametrize("encoder_name", ["logmel", "wav2vec2"])
def test_frame_features_contract(tiny_wav2vec2, encoder_name):
    encoder = LogMelFeatures() if encoder_name == "logmel" else Wav2Vec2Features(tiny_wav2vec2, layers="last")
    audio = speech_like(2.0)
    features = frame_features(audio, fps=25, encoder=encoder)
    assert features.shape == (50, 5, encoder.num_layers, encoder.dim)
    assert frame_features(audio, fps=30, num_frames=12, encoder=encoder).shape == (
        12,
        5,
        encoder.num_layers,
        encoder.dim,
    )
    with pytest.raises(ValueError, match="shorter than one feature frame"):
        frame_features(audio[:200], fps=25, num_frames=1, encoder=encoder)


def test_audio_projection_closed_form():
    proj = AudioProjection(
        seq_len=5, blocks=3, channels=4, intermediate_dim=8, output_dim=6, context_tokens=2, rngs=nnx.Rngs(0)
    )
    x = jax.random.normal(jax.random.key(1), (2, 7, 5, 3, 4))
    w = {
        name: (np.asarray(getattr(proj, name).kernel[...]), np.asarray(getattr(proj, name).bias[...]))
        for name in ("proj1", "proj2", "proj3")
    }
    h = np.asarray(x).reshape(2, 7, -1)
    h = np.maximum(h @ w["proj1"][0] + w["proj1"][1], 0)
    h = np.maximum(h @ w["proj2"][0] + w["proj2"][1], 0)
    tokens = (h @ w["proj3"][0] + w["proj3"][1]).reshape(2, 7, 2, 6)
    tokens = (tokens - tokens.mean(-1, keepdims=True)) / np.sqrt(tokens.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(proj(x), tokens, atol=1e-5)


def test_config_selects_the_encoder():
    from emo_jax.audio import build_audio_encoder
    from emo_jax.config import load_config

    config = load_config("tiny")
    assert isinstance(build_audio_encoder(config), LogMelFeatures)
    config.audio.encoder = "wav2vec2"
    with pytest.raises(ValueError, match="wav2vec2_path"):
        build_audio_encoder(config)
    config.audio.encoder = "whisper"
    with pytest.raises(ValueError, match="'wav2vec2' or 'logmel'"):
        build_audio_encoder(config)
