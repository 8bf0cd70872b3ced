"""Sync-C / Sync-D: MFCCs equal python_speech_features', the offset search is the reference's, and it finds a
known audio shift on synthetic corpus videos."""

import numpy as np
import pytest
from peers import require

from emo_jax.data import synthetic
from emo_jax.eval import sync
from emo_jax.eval.mfcc import mfcc
from emo_jax.eval.synthetic import loudness


@pytest.mark.parity
def test_mfccs_equal_python_speech_features():
    psf = require("python_speech_features")
    rng = np.random.default_rng(0)
    for samples in (300, 400, 16000 + 77):  # shorter than a frame, one frame, a ragged end
        audio = (0.3 * np.sin(np.arange(samples) * 0.05) + 0.05 * rng.standard_normal(samples)).astype(np.float32)
        reference = psf.mfcc(audio.astype(np.float64) * 32768, 16000)
        np.testing.assert_allclose(mfcc(audio), reference, rtol=1e-9, atol=1e-9)


def reference_offset_search(video, audio, shift):
    """calc_pdist + the evaluation's mean / min / median, as syncnet_python writes them (torch)."""
    torch = require("torch")
    v, a = torch.from_numpy(video), torch.from_numpy(audio)
    padded = torch.nn.functional.pad(a, (0, 0, shift, shift))
    rows = [
        torch.nn.functional.pairwise_distance(v[[i]].repeat(2 * shift + 1, 1), padded[i : i + 2 * shift + 1])
        for i in range(len(v))
    ]
    mean = torch.mean(torch.stack(rows, 1), 1)
    value, index = torch.min(mean, 0)
    return shift - int(index), float(value), float(torch.median(mean) - value)


@pytest.mark.parity
def test_the_offset_search_is_the_reference_s():
    rng = np.random.default_rng(1)
    video = rng.standard_normal((40, 8))
    audio = np.roll(video, 3, axis=0) + 0.3 * rng.standard_normal((40, 8))
    ours = sync.offset_search(video, audio, shift=6)
    offset, distance, confidence = reference_offset_search(video, audio, 6)
    assert ours.offset == offset == -3
    np.testing.assert_allclose([ours.distance, ours.confidence], [distance, confidence], rtol=1e-6)


def mouth_and_sound_windows(frames, identity, audio, fps):
    """Per-frame mouth area and loudness, standardised, as 5-frame window embeddings [N, 5] each."""
    mouth = np.array([synthetic.measure_frame(f, identity)["mouth_area"] for f in frames])
    sound = loudness(audio, fps, len(frames))
    standard = [(x - x.mean()) / x.std() for x in (mouth, sound)]
    count = len(frames) - sync.WINDOW
    return [np.stack([x[i : i + sync.WINDOW] for i in range(count)]) for x in standard]


@pytest.mark.parametrize("k", [0, 3, -4])
def test_a_known_audio_shift_is_found_on_a_synthetic_video(k):
    """The corpus analyser's mouth opening and the loudness stand in for SyncNet's embeddings (random SyncNet
    weights know nothing of mouths); delaying the audio by k frames moves the offset by -k."""
    fps = 25.0
    video = synthetic.make_video(10000, 20000, seconds=4.0, fps=fps, size=96)
    shifted = np.roll(video.audio, int(k * 16000 / fps))
    base = sync.offset_search(*mouth_and_sound_windows(video.frames, video.identity, video.audio, fps))
    moved = sync.offset_search(*mouth_and_sound_windows(video.frames, video.identity, shifted, fps))
    assert moved.offset - base.offset == -k and abs(base.offset) <= 1  # the truth leads the sound by a frame
    assert base.confidence > 0.5


def test_windows_are_bgr_5_frame_clips_and_0_2_s_of_mfccs():
    frames = np.zeros((30, 224, 224, 3), np.uint8)
    frames[..., 0] = 200  # red in RGB
    lips, sounds = sync.windows(frames, np.zeros(16000, np.float32))  # 1 s: 25 frames of audio
    assert lips.shape == (20, 5, 224, 224, 3) and sounds.shape == (20, 13, 20, 1)
    assert lips[0, 0, 0, 0].tolist() == [0, 0, 200]  # blue-green-red, as OpenCV reads frames
    with pytest.raises(ValueError, match="too short for SyncNet: 30 frames, 0.10 s"):
        sync.windows(frames, np.zeros(1600, np.float32))
