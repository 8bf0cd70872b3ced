"""Lip sync as the Wav2Lip / syncnet_python evaluation measures it: Sync-C (confidence) and Sync-D (distance).

SyncNet embeds every 5-frame window of the face crops (frames i .. i+4) and the 0.2 s of MFCCs that start with
frame i (20 steps of 10 ms, 4 per frame: 25 fps). `offset_search` compares each video window with the audio
windows shifted by -`SHIFT`..`SHIFT` frames (zero embeddings past the ends, as the reference pads them), takes
the mean distance per shift over the video, and reports the best shift (the offset), that distance (Sync-D) and
the median distance minus it (Sync-C): a clear dip at one shift means the mouth follows the sound.
"""

from __future__ import annotations

import dataclasses

import numpy as np

SHIFT = 15  # frames each way (the Wav2Lip evaluation's vshift)
WINDOW = 5  # frames per video window
STEPS_PER_FRAME = 4  # 10 ms MFCC steps per frame at 25 fps
AUDIO_WINDOW = 20
PAIRWISE_EPS = 1e-6  # torch.nn.functional.pairwise_distance adds it to the difference


@dataclasses.dataclass(frozen=True)
class SyncResult:
    offset: int  # frames, as the reference reports it: -k when video window i matches audio window i + k
    distance: float  # Sync-D: mean embedding distance at the best shift (lower is better)
    confidence: float  # Sync-C: median distance over the shifts minus the best (higher is better)
    mean_distances: np.ndarray  # [2 * SHIFT + 1], shift -SHIFT first


def offset_search(video: np.ndarray, audio: np.ndarray, shift: int = SHIFT) -> SyncResult:
    """video, audio: [N, D] embeddings of the same N windows -> the best shift and its scores."""
    video, audio = np.asarray(video, np.float64), np.asarray(audio, np.float64)
    if video.shape != audio.shape or video.ndim != 2:
        raise ValueError(f"video and audio embeddings must both be [N, D], got {video.shape} and {audio.shape}")
    padded = np.pad(audio, ((shift, shift), (0, 0)))
    shifts = 2 * shift + 1
    # distances[i, s]: video window i against audio window i + s - shift
    windows = np.stack([padded[s : s + len(video)] for s in range(shifts)], axis=1)
    distances = np.linalg.norm(video[:, None] - windows + PAIRWISE_EPS, axis=-1)
    mean = distances.mean(0)
    best = int(np.argmin(mean))
    return SyncResult(shift - best, float(mean[best]), float(np.median(mean) - mean[best]), mean)


def windows(frames: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """face crops [T, 224, 224, 3] (RGB 0-255) and 16 kHz audio -> (lip windows [N, 5, 224, 224, 3] in BGR as
    the reference reads frames with OpenCV, MFCC windows [N, 13, 20, 1]) for N = min(T, whole 40 ms frames of
    audio) - 5."""
    from emo_jax.eval.mfcc import mfcc

    coefficients = mfcc(audio)  # [steps, 13]
    count = min(len(frames), len(audio) // (16000 // 25)) - WINDOW  # the reference's min_length - 5
    if count < 1:
        raise ValueError(f"too short for SyncNet: {len(frames)} frames, {len(audio) / 16000:.2f} s of audio")
    bgr = np.asarray(frames, np.float32)[..., ::-1]
    lips = np.stack([bgr[i : i + WINDOW] for i in range(count)])
    sounds = np.stack(
        [coefficients[i * STEPS_PER_FRAME : i * STEPS_PER_FRAME + AUDIO_WINDOW].T[..., None] for i in range(count)]
    )
    return lips, sounds.astype(np.float32)


def sync_scores(model, frames: np.ndarray, audio: np.ndarray, batch: int = 20) -> SyncResult:
    """Sync-C / Sync-D of one video: `model` a converted SyncNet, frames [T, 224, 224, 3] RGB face crops at
    25 fps, audio 16 kHz mono."""
    import jax.numpy as jnp

    lips, sounds = windows(frames, audio)

    def embed(forward, inputs: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [np.asarray(forward(jnp.asarray(inputs[i : i + batch]))) for i in range(0, len(inputs), batch)]
        )

    return offset_search(embed(model.forward_lip, lips), embed(model.forward_aud, sounds))
