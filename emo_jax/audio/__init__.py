"""Audio: loading any audio file, and features aligned to video frames (wav2vec2 or log-mel)."""

from __future__ import annotations

import ml_collections

from emo_jax.audio.features import AudioEncoder, LogMelFeatures, Wav2Vec2Features, frame_features
from emo_jax.audio.loading import SAMPLE_RATE, AudioError, load_audio


def build_audio_encoder(config: ml_collections.ConfigDict) -> AudioEncoder:
    """The encoder a config's `audio` block names.

    audio.encoder: 'logmel' (audio.n_mels) or 'wav2vec2' (audio.wav2vec2_path: a transformers Wav2Vec2 folder;
    audio.layers: 'all' | 'last' | [indices]; audio.chunk_seconds).
    """
    audio = config.audio
    if audio.encoder == "logmel":
        return LogMelFeatures(n_mels=audio.get("n_mels", 80))
    if audio.encoder == "wav2vec2":
        from emo_jax.convert.wav2vec2 import from_hf_wav2vec2_folder
        from emo_jax.paths import local_copy

        path = audio.get("wav2vec2_path")
        if not path:
            raise ValueError(
                "audio.encoder='wav2vec2' needs audio.wav2vec2_path: a transformers Wav2Vec2 folder (local or gs://)"
            )
        return Wav2Vec2Features(
            from_hf_wav2vec2_folder(local_copy(path)),
            layers=audio.get("layers", "all"),
            chunk_seconds=audio.get("chunk_seconds", 30.0),
        )
    raise ValueError(f"audio.encoder must be 'wav2vec2' or 'logmel', got {audio.encoder!r}")


__all__ = [
    "SAMPLE_RATE",
    "AudioEncoder",
    "AudioError",
    "LogMelFeatures",
    "Wav2Vec2Features",
    "build_audio_encoder",
    "frame_features",
    "load_audio",
]
