"""Hallo's audio features (its `AudioProcessor.preprocess` without the vocal separator, then
`process_audio_emb`), from a 16 kHz waveform and a wav2vec2 model:

  1. normalise the whole waveform (zero mean, unit variance: wav2vec2-base-960h's feature extractor);
  2. frames = ceil(seconds * fps); pad the waveform with zeros so the frames fill whole clips of `clip_frames`
     (16000 / fps samples per frame);
  3. one wav2vec2 pass over all of it, its conv features resampled to one per video frame before the transformer
     (`Wav2Vec2Model(..., num_frames=...)`); every layer's output (`hidden_states[1:]`);
  4. per frame the features of frames f-2 .. f+2, edges repeated.

Hallo runs the whole track in one pass; so does this (attention over all frames: ~1,500 for a minute at 25 fps).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from emo_jax.audio.features import normalize_waveform
from emo_jax.audio.loading import SAMPLE_RATE
from emo_jax.models.conditioning import window_indices
from emo_jax.models.wav2vec2 import Wav2Vec2Model


def hallo_audio_features(
    waveform: np.ndarray, model: Wav2Vec2Model, *, fps: int = 25, clip_frames: int = 16, m: int = 2
) -> tuple[np.ndarray, int]:
    """[S] float at 16 kHz -> (features [F', 2m + 1, L, D] float32 with F' a multiple of `clip_frames`, the
    number F <= F' of frames the audio itself covers: the video's length)."""
    waveform = np.asarray(waveform, np.float32)
    if waveform.ndim != 1 or waveform.size == 0:
        raise ValueError(f"expected a non-empty mono waveform [S], got shape {waveform.shape}")
    waveform = normalize_waveform(waveform)
    frames = math.ceil(waveform.size / SAMPLE_RATE * fps)
    padded = -(-frames // clip_frames) * clip_frames
    waveform = np.pad(waveform, (0, (padded - frames) * (SAMPLE_RATE // fps)))
    graphdef, state = nnx.split(model)
    hidden = _layers(graphdef, state, jnp.asarray(waveform)[None], padded)  # [L, F', D]
    return np.asarray(hidden)[:, window_indices(padded, m)].transpose(1, 2, 0, 3), frames


@functools.partial(jax.jit, static_argnums=(0, 3))
def _layers(graphdef, state, waveform: jax.Array, num_frames: int) -> jax.Array:
    output = nnx.merge(graphdef, state)(waveform, num_frames=num_frames)
    return jnp.stack(output.hidden_states[1:])[:, 0]
