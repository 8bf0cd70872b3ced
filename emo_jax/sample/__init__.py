"""Sampling: one image and one audio track in, an MP4 of that face speaking the audio out (`emo-jax sample`)."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from emo_jax.provenance import credentials, watermark
from emo_jax.provenance.metadata import container_tags, png_info
from emo_jax.sample.bundle import Bundle, export_bundle, load_bundle
from emo_jax.sample.generate import SamplingSettings, VideoSampler, head_speed
from emo_jax.sample.inputs import InputError, check_output, face_mask, load_reference, load_track

log = logging.getLogger(__name__)

DEFAULT_MASK_EXPAND = 1.2  # the face box grown to cover the head's motion in a clip (Hallo: 1.2)
STRIP_FRAMES = 8


@dataclasses.dataclass
class SampleResult:
    video: Path
    strip: Path
    frames: int
    seconds: float  # of audio
    fps: float
    clips: int
    wall_s: float


def _frame_count(samples: int, fps: float) -> int:
    """Frames whose span best matches the audio: round(duration * fps), at least one."""
    from emo_jax.audio import SAMPLE_RATE

    return max(1, round(samples / SAMPLE_RATE * fps))


def sample_video(
    bundle: Bundle,
    image: str | Path,
    audio: str | Path,
    out: str | Path,
    settings: SamplingSettings | None = None,
    *,
    speed: str | float | None = None,
    mask_expand: float | None = None,
    progress: bool = True,
    provenance: bool = True,
    sign_cert: str | Path | None = None,
    sign_key: str | Path | None = None,
) -> SampleResult:
    """Writes `out` (H.264 + AAC, the input audio, the config's fps) and `out` with .png (a strip of frames).

    settings, speed and mask_expand default to the model config's `sample` section. Every input is checked
    before any model work; the MP4 appears only when complete (Ctrl-C leaves none).

    provenance: the video says it is AI-generated three ways (`emo_jax.provenance`): the frames carry the
    invisible watermark, the container the notice tags, and the file a C2PA manifest signed with `sign_cert` /
    `sign_key` (PEM; neither: the user's local signer); the strip carries the notice and a manifest. False:
    none of them (research only)."""
    from tqdm import tqdm

    from emo_jax.audio import build_audio_encoder, frame_features
    from emo_jax.data.video import Mp4Writer
    from emo_jax.sample.generate import Progress

    start = time.perf_counter()
    config = bundle.config
    defaults = config.get("sample", {})
    settings = settings or SamplingSettings.from_config(config)
    speed = speed if speed is not None else defaults.get("speed", "normal")
    mask_expand = mask_expand if mask_expand is not None else defaults.get("mask_expand", DEFAULT_MASK_EXPAND)
    out = check_output(out)
    reference = load_reference(image, config.data.size)
    waveform = load_track(audio)
    signer = credentials.signer_files(sign_cert, sign_key) if provenance else None
    fps, f = float(config.data.fps), config.data.num_frames
    total = _frame_count(waveform.size, fps)
    velocity = head_speed(speed, config) if config.model.get("speed") else None

    sampler = VideoSampler(bundle.model, bundle.vae, config, settings)
    clips = sampler.num_clips(total)
    features = None
    if config.model.get("audio"):
        encoder = build_audio_encoder(config)
        features = frame_features(waveform, fps, clips * f, encoder=encoder, m=config.data.window)
    mask = face_mask(reference.box, config.data.size, mask_expand)
    keep = set(np.linspace(0, total - 1, min(STRIP_FRAMES, total)).round().astype(int).tolist())
    strip_frames = []
    bar = tqdm(total=clips * sampler.table.num_steps, unit="step", desc=f"clip 1/{clips}", disable=not progress)
    Progress.step = bar.update
    on_clip = lambda clip: bar.set_description(f"clip {min(clip + 2, clips)}/{clips}")  # noqa: E731
    try:
        mark = watermark.Marker() if provenance else lambda frame: frame
        with Mp4Writer(out, fps, waveform, container_tags() if provenance else {}) as writer:
            frames = sampler.frames(reference.image, mask, features, velocity, total, on_clip=on_clip)
            for i, frame in enumerate(map(mark, frames)):
                writer.write(frame)
                if i in keep:
                    strip_frames.append(frame)
    finally:
        Progress.step = None
        bar.close()
    strip = out.with_suffix(".png")
    _write_strip(strip, [reference.image] + strip_frames, provenance)
    if signer is not None:
        identity = {"model_weights": credentials.weights_digest(bundle.model)}
        for path in (out, strip):
            credentials.sign_file(path, identity, *signer)
    return SampleResult(out, strip, total, waveform.size / 16000, fps, clips, time.perf_counter() - start)


def _write_strip(path: Path, frames: list[np.ndarray], provenance: bool) -> None:
    """The reference, then evenly spaced frames, side by side (with the notice in its text chunks)."""
    from PIL import Image

    Image.fromarray(np.concatenate(frames, axis=1)).save(path, pnginfo=png_info() if provenance else None)


__all__ = [
    "Bundle",
    "InputError",
    "SampleResult",
    "SamplingSettings",
    "VideoSampler",
    "export_bundle",
    "head_speed",
    "load_bundle",
    "sample_video",
]
