"""Audio files -> mono float32 waveforms at 16 kHz, with clear errors for files that are not usable audio."""

from __future__ import annotations

import logging
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from emo_jax.subprocesses import exec_after_fork

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
SILENCE_PEAK = 1e-4  # peak amplitude below which a file counts as silent (-80 dBFS)


class AudioError(ValueError):
    """An audio file cannot be used: unreadable, not audio, or empty."""


def _decode_with_ffmpeg(path: Path, wav_path: Path) -> None:
    """Decodes any ffmpeg-readable file (m4a/aac, ...) to float WAV, native rate and channels kept."""
    import imageio_ffmpeg

    command = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-i",
        str(path),
        "-vn",
        "-c:a",
        "pcm_f32le",
        str(wav_path),
    ]
    with exec_after_fork():
        result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 and "does not contain any stream" in result.stderr:
        raise AudioError(f"{path}: has no audio stream")
    if result.returncode != 0:
        reason = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"ffmpeg exit {result.returncode}"
        raise AudioError(f"{path}: not a readable audio file ({reason})")


def _read_resampled(path: Path) -> np.ndarray:
    """libsndfile reads; librosa mixes to mono (channel mean) and resamples (soxr_hq)."""
    import librosa
    import soundfile

    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # [S, C]
    mono = librosa.to_mono(data.T) if data.shape[1] > 1 else data[:, 0]
    return librosa.resample(mono, orig_sr=rate, target_sr=SAMPLE_RATE) if rate != SAMPLE_RATE else mono


def load_audio(path: str | Path) -> np.ndarray:
    """Any audio file (wav, flac, ogg, mp3, m4a/aac; mono or stereo; any rate) -> [S] float32 mono at 16 kHz.

    libsndfile reads, librosa mixes and resamples; files libsndfile cannot read (m4a/aac) are first decoded to
    WAV by the ffmpeg that imageio-ffmpeg bundles. Raises FileNotFoundError or AudioError naming the file;
    silence is allowed but logged as a warning.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file")
    import soundfile

    try:
        waveform = _read_resampled(path)
    except soundfile.LibsndfileError:  # a format libsndfile lacks (m4a/aac), or no audio at all: ask ffmpeg
        with tempfile.TemporaryDirectory() as tmp:
            wav_path = Path(tmp) / "decoded.wav"
            _decode_with_ffmpeg(path, wav_path)
            waveform = _read_resampled(wav_path)
    if waveform.size == 0:
        raise AudioError(f"{path}: contains no audio samples")
    if not np.isfinite(waveform).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    if np.abs(waveform).max() < SILENCE_PEAK:
        log.warning("%s: the audio is silent (peak below %.0e)", path, SILENCE_PEAK)
    return waveform
