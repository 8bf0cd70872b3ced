"""load_audio on real files of every supported format, and its errors."""

import logging
import subprocess

import numpy as np
import pytest
import soundfile as sf

from emo_jax.audio import SAMPLE_RATE, AudioError, load_audio


def tone(seconds: float, rate: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return wave if channels == 1 else np.stack([wave] * channels, axis=1)


def peak_frequency(waveform: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(waveform * np.hanning(waveform.size)))
    return float(np.fft.rfftfreq(waveform.size, 1 / SAMPLE_RATE)[spectrum.argmax()])


@pytest.mark.parametrize(
    "suffix, fmt, subtype, rate, channels",
    [
        ("wav", "WAV", "PCM_16", 22050, 1),
        ("flac", "FLAC", "PCM_16", 44100, 2),
        ("ogg", "OGG", "VORBIS", 48000, 2),
        ("mp3", "MP3", "MPEG_LAYER_III", 44100, 1),
    ],
)
def test_formats_resample_to_16k_mono(tmp_path, suffix, fmt, subtype, rate, channels):
    path = tmp_path / f"a.{suffix}"
    sf.write(path, tone(1.5, rate, channels=channels), rate, format=fmt, subtype=subtype)
    waveform = load_audio(path)
    assert waveform.dtype == np.float32 and waveform.ndim == 1
    assert abs(waveform.size - 1.5 * SAMPLE_RATE) < 0.06 * SAMPLE_RATE  # mp3 adds encoder padding
    assert abs(peak_frequency(waveform) - 440) < 2


def test_m4a_aac_decodes_through_bundled_ffmpeg(tmp_path):
    import imageio_ffmpeg

    wav, m4a = tmp_path / "a.wav", tmp_path / "a.m4a"
    sf.write(wav, tone(1.0, 44100, freq=660, channels=2), 44100)
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i", str(wav), "-c:a", "aac", str(m4a)], check=True
    )
    waveform = load_audio(m4a)
    assert abs(waveform.size - SAMPLE_RATE) < 0.1 * SAMPLE_RATE
    assert abs(peak_frequency(waveform) - 660) < 2


def test_stereo_is_the_channel_mean(tmp_path):
    left, right = tone(0.5, SAMPLE_RATE, 300), tone(0.5, SAMPLE_RATE, 500)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "s.wav"), (left + right) / 2, atol=1e-6)


def test_bad_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        load_audio(tmp_path / "nope.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty.wav: empty file"):
        load_audio(tmp_path / "empty.wav")
    (tmp_path / "notes.mp3").write_text("these are not sounds\n" * 50)
    with pytest.raises(AudioError, match="notes.mp3: not a readable audio file"):
        load_audio(tmp_path / "notes.mp3")
    sf.write(tmp_path / "zero.wav", np.zeros((0,), np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match="zero.wav"):
        load_audio(tmp_path / "zero.wav")


def test_video_without_audio_is_refused(tmp_path):
    import imageio_ffmpeg

    from emo_jax.subprocesses import exec_after_fork

    path = tmp_path / "silent_film.mp4"
    with exec_after_fork():
        writer = imageio_ffmpeg.write_frames(str(path), (32, 32), fps=10, codec="libx264", pix_fmt_out="yuv420p")
        writer.send(None)
    for _ in range(5):
        writer.send(np.zeros((32, 32, 3), np.uint8).tobytes())
    writer.close()
    with pytest.raises(AudioError, match="silent_film.mp4"):
        load_audio(path)


def test_silence_loads_with_a_warning(tmp_path, caplog):
    sf.write(tmp_path / "quiet.wav", np.zeros(8000, np.float32), SAMPLE_RATE)
    with caplog.at_level(logging.WARNING):
        waveform = load_audio(tmp_path / "quiet.wav")
    assert waveform.size == 8000 and not waveform.any()
    assert "quiet.wav" in caplog.text and "silent" in caplog.text
