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
    from emo_jax.audio import build_audio_encoder, frame_features

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
    frames = lambda on_clip: sampler.frames(reference.image, mask, features, velocity, total, on_clip=on_clip)  # noqa: E731
    steps = clips * sampler.table.num_steps
    strip = _render(out, frames, steps, clips, total, waveform, fps, reference.image, provenance, progress)
    if signer is not None:
        _sign(bundle, (out, strip), signer)
    return SampleResult(out, strip, total, waveform.size / 16000, fps, clips, time.perf_counter() - start)


def sample_hallo_video(
    bundle: Bundle,
    folder: str | Path,
    image: str | Path,
    audio: str | Path,
    out: str | Path,
    settings: SamplingSettings | None = None,
    *,
    motion_scale: tuple[float, float, float] = (1.0, 1.0, 1.0),
    face_expand_ratio: float = 1.2,
    progress: bool = True,
    provenance: bool = True,
    sign_cert: str | Path | None = None,
    sign_key: str | Path | None = None,
) -> SampleResult:
    """`sample_video` for a model in Hallo's layout (`emo-jax convert --hallo`): Hallo's preprocessing with the
    face models and wav2vec2 of its `pretrained_models` `folder` (`hallo_prepare`), then `HalloSampler`.
    motion_scale: the full / face / lip weights of the audio (Hallo's pose_weight, face_weight, lip_weight)."""
    from emo_jax.sample.hallo import HalloSampler
    from emo_jax.sample.hallo_prepare import HalloPreprocessor

    start = time.perf_counter()
    config = bundle.config
    settings = settings or SamplingSettings.from_config(config)
    out = check_output(out)
    waveform = load_track(audio)
    signer = credentials.signer_files(sign_cert, sign_key) if provenance else None
    sampler = HalloSampler(bundle.model, bundle.vae, config, settings)  # refuses settings Hallo cannot take
    preprocessor = HalloPreprocessor(
        folder,
        size=config.data.size,
        fps=round(config.data.fps),
        clip_frames=config.data.num_frames,
        face_expand_ratio=face_expand_ratio,
    )
    inputs = preprocessor.inputs(image, waveform)
    clips, fps = sampler.num_clips(inputs), float(config.data.fps)
    frames = lambda on_clip: sampler.frames(inputs, motion_scale, on_clip=on_clip)  # noqa: E731
    reference = ((inputs.reference + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
    total = inputs.frames
    steps = clips * sampler.table.num_steps
    strip = _render(out, frames, steps, clips, total, waveform, fps, reference, provenance, progress)
    if signer is not None:
        _sign(bundle, (out, strip), signer)
    return SampleResult(out, strip, total, waveform.size / 16000, fps, clips, time.perf_counter() - start)


def _render(out, frames, steps, clips, total, waveform, fps, reference, provenance, progress=True) -> Path:
    """Runs `frames(on_clip)` (an iterator of uint8 frames) under a progress bar over `steps` denoising steps,
    writes them to `out` (watermarked where `provenance`, with the audio) and the strip beside it -> the strip."""
    from tqdm import tqdm

    from emo_jax.data.video import Mp4Writer
    from emo_jax.sample.generate import Progress

    keep = set(np.linspace(0, total - 1, min(STRIP_FRAMES, total)).round().astype(int).tolist())
    strip_frames = []
    bar = tqdm(total=steps, unit="step", desc=f"clip 1/{clips}", disable=not progress)
    Progress.step = bar.update
    on_clip = lambda clip: bar.set_description(f"clip {min(clip + 2, clips)}/{clips}")  # noqa: E731
    try:
        mark = watermark.Marker() if provenance else lambda frame: frame
        with Mp4Writer(out, fps, waveform, container_tags() if provenance else {}) as writer:
            for i, frame in enumerate(map(mark, frames(on_clip))):
                writer.write(frame)
                if i in keep:
                    strip_frames.append(frame)
    finally:
        Progress.step = None
        bar.close()
    strip = out.with_suffix(".png")
    _write_strip(strip, [reference] + strip_frames, provenance)
    return strip


def _sign(bundle: Bundle, paths, signer) -> None:
    identity = {"model_weights": credentials.weights_digest(bundle.model)}
    for path in paths:
        credentials.sign_file(path, identity, *signer)


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
    "sample_hallo_video",
    "sample_video",
]
