"""Audio the tests make: speech-like waveforms and a tiny wav2vec2 configuration."""

from __future__ import annotations

import numpy as np

from emo_jax.audio.loading import SAMPLE_RATE

# A tiny wav2vec2 with the base conv strides (50 Hz features).
TINY_50HZ = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    conv_dim=(32,) * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
)


def speech_like(seconds: float = 1.3, seed: int = 0) -> np.ndarray:
    """Voiced syllables: a glottal pulse train (gliding pitch) through three formant resonators, with
    syllable envelopes and pauses; normalised to zero mean, unit variance (wav2vec2's input convention)."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    f0 = 140 + 40 * np.sin(2 * np.pi * 1.5 * t)
    phase = np.cumsum(f0) / SAMPLE_RATE
    source = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float64)
    voiced = np.zeros(n)
    for formant, bandwidth in [(rng.uniform(500, 800), 80), (rng.uniform(1000, 1800), 100), (2600, 120)]:
        r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
        a = [1, -2 * r * np.cos(2 * np.pi * formant / SAMPLE_RATE), r * r]
        voiced += lfilter([1 - r], a, source)
    syllables = np.clip(np.sin(2 * np.pi * 3.5 * t), 0, None) ** 0.7  # ~4 syllables a second, with gaps
    audio = voiced * syllables + 0.01 * rng.standard_normal(n)
    return ((audio - audio.mean()) / audio.std()).astype(np.float32)
