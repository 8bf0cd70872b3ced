"""MFCCs as SyncNet was trained on them: `python_speech_features.mfcc` with its defaults, in numpy.

16 kHz audio on the int16 scale (SyncNet's evaluation reads the WAV as int16: the scale moves the first
coefficient, which is the log frame energy), pre-emphasis 0.97, 25 ms rectangular frames every 10 ms (the last
one zero-padded), 512-point power spectrum / 512, 26 triangular mel filters from 0 Hz to 8 kHz, log, DCT-II
(orthonormal), 13 coefficients, sinusoidal liftering of 22, then coefficient 0 replaced by the log energy.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
FRAME, STEP, FFT = 400, 160, 512  # samples: 25 ms, 10 ms
FILTERS, COEFFICIENTS, LIFTER, PRE_EMPHASIS = 26, 13, 22, 0.97
STEPS_PER_SECOND = SAMPLE_RATE // STEP  # 100


def _mel(hz):
    return 2595 * np.log10(1 + np.asarray(hz, np.float64) / 700)


def _hz(mel):
    return 700 * (10 ** (np.asarray(mel, np.float64) / 2595) - 1)


def mel_filterbank() -> np.ndarray:
    """[FILTERS, FFT // 2 + 1] triangles between FFT bins placed evenly on the mel scale."""
    edges = np.floor((FFT + 1) * _hz(np.linspace(_mel(0), _mel(SAMPLE_RATE / 2), FILTERS + 2)) / SAMPLE_RATE)
    edges = edges.astype(int)
    bank = np.zeros((FILTERS, FFT // 2 + 1))
    for j, (low, centre, high) in enumerate(zip(edges, edges[1:], edges[2:])):
        bank[j, low:centre] = (np.arange(low, centre) - low) / (centre - low)
        bank[j, centre:high] = (high - np.arange(centre, high)) / (high - centre)
    return bank


def mfcc(audio: np.ndarray) -> np.ndarray:
    """16 kHz mono float in [-1, 1] [S] -> [steps, 13]: one row per 10 ms step."""
    from scipy.fft import dct

    signal = np.asarray(audio, np.float64) * 32768.0  # the int16 scale
    signal = np.append(signal[:1], signal[1:] - PRE_EMPHASIS * signal[:-1])
    count = 1 if len(signal) <= FRAME else 1 + int(np.ceil((len(signal) - FRAME) / STEP))
    signal = np.pad(signal, (0, (count - 1) * STEP + FRAME - len(signal)))
    frames = signal[np.arange(count)[:, None] * STEP + np.arange(FRAME)]
    power = np.abs(np.fft.rfft(frames, FFT)) ** 2 / FFT
    tiny = np.finfo(np.float64).eps
    energy = power.sum(1)
    bands = power @ mel_filterbank().T
    cepstrum = dct(np.log(np.where(bands == 0, tiny, bands)), type=2, axis=1, norm="ortho")[:, :COEFFICIENTS]
    cepstrum *= 1 + LIFTER / 2 * np.sin(np.pi * np.arange(COEFFICIENTS) / LIFTER)
    cepstrum[:, 0] = np.log(np.where(energy == 0, tiny, energy))
    return cepstrum
