"""Audio features per video frame: an encoder at 50 Hz, resampled to the video frame rate, windowed.

Contract of an audio encoder: `encoder(waveform[S] at 16 kHz) -> [L, T, D]`, L feature layers of width D at
one feature per 320 samples (20 ms; feature j covers samples [320 j, 320 j + receptive_field)). Two encoders:
  * `Wav2Vec2Features`: wav2vec2 hidden states (EMO / Hallo), long audio in overlapping chunks;
  * `LogMelFeatures`: log-mel spectrogram frames (L = 1), no weights, for the tiny / synthetic configs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from emo_jax.audio.loading import SAMPLE_RATE
from emo_jax.models.conditioning import window_indices
from emo_jax.models.wav2vec2 import Wav2Vec2Model

HOP = 320  # samples per feature frame: 50 Hz at 16 kHz


class AudioEncoder(Protocol):
    num_layers: int
    dim: int
    receptive_field: int  # samples one feature frame reads

    def num_frames(self, num_samples: int) -> int: ...

    def __call__(self, waveform: np.ndarray, progress: Callable[[int], None] | None = None) -> np.ndarray: ...


def check_one_frame(waveform: np.ndarray, receptive_field: int) -> None:
    if waveform.size < receptive_field:
        raise ValueError(f"audio of {waveform.size} samples is shorter than one feature frame ({receptive_field})")


def normalize_waveform(waveform: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the whole waveform, as wav2vec2-base-960h's feature extractor."""
    return (waveform - waveform.mean()) / np.sqrt(waveform.var() + 1e-7)


def _conv_output_length(length: int, kernels: Sequence[int], strides: Sequence[int]) -> int:
    for kernel, stride in zip(kernels, strides):
        length = (length - kernel) // stride + 1
    return length


class Wav2Vec2Features:
    """wav2vec2 hidden states as an `AudioEncoder`: [S] -> [L, T, D].

    layers: 'all' (every layer's output, `hidden_states[1:]`, as Hallo stacks them), 'last'
      (`last_hidden_state`), or a list of indices into `hidden_states`.
    Audio longer than `chunk_seconds` runs in chunks that overlap by `context_seconds` on each side, starting on
    feature-frame boundaries; each chunk's central frames are kept. Memory stays that of one chunk. A kept frame
    loses the attention context beyond `context_seconds`, and with the 'group' feature extractor (base models)
    the first conv layer's per-channel normalisation sees only the chunk. Audio that fits in one chunk gives
    exactly the one-pass result.
    `normalize`: zero mean / unit variance over the whole waveform first (wav2vec2-base-960h's feature extractor).
    """

    def __init__(
        self,
        model: Wav2Vec2Model,
        *,
        layers: str | Sequence[int] = "all",
        chunk_seconds: float = 30.0,
        context_seconds: float = 2.0,
        normalize: bool = True,
    ):
        c = model.config
        if c.samples_per_frame != HOP:
            raise ValueError(
                f"Wav2Vec2Features needs a conv stack with {HOP} samples per frame, got {c.samples_per_frame}"
            )
        self.config = c
        self.layers = layers
        self.normalize = normalize
        self.chunk_frames = int(chunk_seconds * SAMPLE_RATE) // HOP
        self.context_frames = int(context_seconds * SAMPLE_RATE) // HOP
        self.receptive_field = c.receptive_field
        self.num_layers = (
            {"all": c.num_hidden_layers, "last": 1}.get(layers) if isinstance(layers, str) else len(layers)
        )
        if self.num_layers is None:
            raise ValueError(f"layers must be 'all', 'last' or a list of indices, got {layers!r}")
        self.dim = c.hidden_size
        graphdef, state = nnx.split(model)
        self._forward = jax.jit(lambda state, x: self._select(nnx.merge(graphdef, state)(x)))
        self._state = state

    def _select(self, output) -> jax.Array:
        if self.layers == "last":
            return output.last_hidden_state[None]
        states = output.hidden_states[1:] if self.layers == "all" else [output.hidden_states[i] for i in self.layers]
        return jnp.stack(states)  # [L, 1, T, D]

    def num_frames(self, num_samples: int) -> int:
        return _conv_output_length(num_samples, self.config.conv_kernel, self.config.conv_stride)

    def chunks(self, num_samples: int) -> list[tuple[int, int, int, int]]:
        """(first kept frame, end kept frame, first run frame, end run frame) per chunk."""
        total = self.num_frames(num_samples)
        if total <= self.chunk_frames:
            return [(0, total, 0, total)]
        plan = []
        for start in range(0, total, self.chunk_frames):
            end = min(start + self.chunk_frames, total)
            plan.append((start, end, max(0, start - self.context_frames), min(total, end + self.context_frames)))
        return plan

    def __call__(self, waveform: np.ndarray, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """[S] float -> [L, T, D] float32. `progress(frames)` is called after each chunk."""
        waveform = np.asarray(waveform, np.float32)
        check_one_frame(waveform, self.receptive_field)
        if self.normalize:
            waveform = normalize_waveform(waveform)
        pieces = []
        total = self.num_frames(waveform.size)
        for keep_start, keep_end, run_start, run_end in self.chunks(waveform.size):
            # A chunk reaching the last frame keeps the trailing samples too, as one pass would.
            end = waveform.size if run_end == total else (run_end - 1) * HOP + self.receptive_field
            samples = waveform[run_start * HOP : end]
            hidden = np.asarray(self._forward(self._state, jnp.asarray(samples)[None]))[:, 0]
            pieces.append(hidden[:, keep_start - run_start : keep_end - run_start])
            if progress is not None:
                progress(keep_end - keep_start)
        return np.concatenate(pieces, axis=1)


class LogMelFeatures:
    """Log-mel spectrogram as an `AudioEncoder` (no weights): [S] -> [1, T, n_mels], standardised per clip.

    Same frames as wav2vec2-base: 400-sample windows every 320 samples, no centre padding.
    """

    receptive_field = 400
    num_layers = 1

    def __init__(self, n_mels: int = 80):
        self.dim = n_mels

    def num_frames(self, num_samples: int) -> int:
        return _conv_output_length(num_samples, [self.receptive_field], [HOP])

    def __call__(self, waveform: np.ndarray, progress: Callable[[int], None] | None = None) -> np.ndarray:
        import librosa

        waveform = np.asarray(waveform, np.float32)
        check_one_frame(waveform, self.receptive_field)
        mel = librosa.feature.melspectrogram(
            y=waveform, sr=SAMPLE_RATE, n_fft=400, hop_length=HOP, n_mels=self.dim, center=False
        )
        log_mel = np.log(mel + 1e-6).T  # [T, n_mels]
        log_mel = (log_mel - log_mel.mean()) / (log_mel.std() + 1e-6)
        if progress is not None:
            progress(log_mel.shape[0])
        return log_mel[None].astype(np.float32)


def resample_to_frames(features: np.ndarray, fps: float, num_frames: int, receptive_field: int) -> np.ndarray:
    """[L, T, D] at 50 Hz -> [L, F, D] at `fps`: linear interpolation at each video frame's centre time.

    Video frame f spans [f, f + 1) / fps seconds; feature j is centred at (320 j + receptive_field / 2) samples.
    Times outside the features take the nearest end feature.
    """
    centres = (np.arange(num_frames) + 0.5) / fps * SAMPLE_RATE
    positions = np.clip((centres - receptive_field / 2) / HOP, 0, features.shape[1] - 1)
    low = np.floor(positions).astype(np.int64)
    high = np.minimum(low + 1, features.shape[1] - 1)
    weight = (positions - low).astype(np.float32)[None, :, None]
    return features[:, low] * (1 - weight) + features[:, high] * weight


def window(features: np.ndarray, m: int) -> np.ndarray:
    """[L, F, D] -> [F, 2m + 1, L, D]: for frame f the features of frames f-m .. f+m, edges repeated."""
    return features[:, window_indices(features.shape[1], m)].transpose(1, 2, 0, 3)


def frame_features(
    waveform: np.ndarray,
    fps: float,
    num_frames: int | None = None,
    *,
    encoder: AudioEncoder,
    m: int = 2,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Audio features aligned to video frames: [S] at 16 kHz -> [F, 2m + 1, L, D].

    num_frames defaults to the whole frames the audio covers, floor(S / 16000 * fps).
    """
    if num_frames is None:
        num_frames = int(waveform.size / SAMPLE_RATE * fps)
    if num_frames < 1:
        raise ValueError(f"no video frame fits in {waveform.size / SAMPLE_RATE:.3f} s of audio at {fps} fps")
    features = encoder(waveform, progress=progress)
    return window(resample_to_frames(features, fps, num_frames, encoder.receptive_field), m)
