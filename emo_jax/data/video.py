"""Video files -> frames at a chosen frame rate, streamed from the ffmpeg that imageio-ffmpeg bundles.

Frames are never all held in memory: `read_frames` yields them one at a time, with ffmpeg resampling the frame
rate (`fps` filter: frames dropped or repeated, as every ffmpeg-based pipeline does), cropping and scaling.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from emo_jax.audio.loading import SAMPLE_RATE
from emo_jax.subprocesses import exec_after_fork


class _ScaledOnPurpose(logging.Filter):
    """imageio-ffmpeg warns whenever the output size differs from the source's: here it always does, on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is different from the source frame size" not in record.getMessage()


logging.getLogger("imageio_ffmpeg").addFilter(_ScaledOnPurpose())


class VideoError(ValueError):
    """A video file cannot be used: missing, unreadable, truncated, or without a video stream."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float  # the source's frame rate
    duration: float  # seconds


def _open(path: Path, pix_fmt: str, filters: list[str]):
    import imageio_ffmpeg

    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    output_params = ["-vf", ",".join(filters)] if filters else None
    try:
        with exec_after_fork():
            reader = imageio_ffmpeg.read_frames(
                str(path), pix_fmt=pix_fmt, bpp=1 if pix_fmt == "gray" else 3, output_params=output_params
            )
            meta = next(reader)
    except (OSError, RuntimeError, StopIteration) as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise VideoError(f"{path}: not a readable video ({reason})") from None
    if not meta.get("size") or not meta.get("fps"):
        reader.close()
        raise VideoError(f"{path}: no video stream")
    return reader, meta


def probe(path: str | Path) -> VideoInfo:
    """Size, frame rate and duration of a video file; `VideoError` naming the file if it is not one."""
    reader, meta = _open(Path(path), "gray", [])
    reader.close()
    width, height = meta["size"]
    return VideoInfo(int(width), int(height), float(meta["fps"]), float(meta.get("duration") or 0.0))


def read_frames(
    path: str | Path,
    fps: float,
    *,
    crop: tuple[int, int, int, int] | None = None,
    size: tuple[int, int] | None = None,
    gray: bool = False,
) -> Iterator[np.ndarray]:
    """Yields the frames of `path` at `fps`: [H, W, 3] uint8 RGB, or [H, W] with gray=True.

    crop: (x, y, width, height) in source pixels, applied before `size` (width, height) scaling (area filter).
    A file that breaks off mid-stream raises `VideoError` after its last good frame.
    """
    path = Path(path)
    filters = [f"fps={fps:g}"]
    if crop is not None:
        x, y, w, h = crop
        filters.append(f"crop={w}:{h}:{x}:{y}")
    if size is not None:
        filters.append(f"scale={size[0]}:{size[1]}:flags=area")
    reader, meta = _open(path, "gray" if gray else "rgb24", filters)
    width, height = meta["size"]  # after crop and scale
    shape = (height, width) if gray else (height, width, 3)
    try:
        for raw in reader:
            yield np.frombuffer(raw, np.uint8).reshape(shape)
    except (OSError, RuntimeError) as error:
        raise VideoError(f"{path}: decoding failed mid-stream ({str(error).strip().splitlines()[-1]})") from None
    finally:
        reader.close()


def read_tags(path: str | Path) -> dict[str, str]:
    """The container's metadata tags (e.g. comment, description, encoder), as ffmpeg reads them."""
    import subprocess

    import imageio_ffmpeg

    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise VideoError(f"{path}: ffmpeg cannot read it ({reason})")
    return _ffmetadata_tags(done.stdout)


def _ffmetadata_tags(text: str) -> dict[str, str]:
    """ffmpeg's ffmetadata text -> the file's own tags (those before any [STREAM] or [CHAPTER] section). Keys and
    values escape '=', ';', '#', '\\' and newlines with a backslash."""
    tags, key, current, escaped = {}, None, [], False
    for char in text.partition("\n")[2] + "\n":  # after the ";FFMETADATA1" header
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "=" and key is None:
            key, current = "".join(current), []
        elif char == "\n":
            line = "".join(current)
            if key is None and line.startswith("["):
                break
            if key is not None:
                tags[key] = line
            key, current = None, []
        else:
            current.append(char)
    return tags


class Mp4Writer:
    """Streams frames [H, W, 3] uint8 into an H.264 MP4 at `fps`, with `audio` [S] (16 kHz mono float) muxed in
    as AAC and `tags` ({name: text}, e.g. comment, description) in the container. The file appears at `path`
    only when the writer closes without error (it is written beside it under a hidden name, then renamed); an
    exception or Ctrl-C inside the `with` leaves nothing at `path`.

        with Mp4Writer("out.mp4", fps=25, audio=waveform) as writer:
            for frame in frames:
                writer.write(frame)
    """

    def __init__(
        self, path: str | Path, fps: float, audio: np.ndarray | None = None, tags: dict[str, str] | None = None
    ):
        self.path, self.fps, self.audio, self.tags = Path(path), fps, audio, dict(tags or {})
        self.partial = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self._tmp = self._writer = None
        self.frames = 0

    def __enter__(self) -> Mp4Writer:
        import tempfile

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = tempfile.TemporaryDirectory()
        return self

    def _open(self, height: int, width: int) -> None:
        import imageio_ffmpeg
        import soundfile

        wav = None
        if self.audio is not None:
            wav = str(Path(self._tmp.name) / "audio.wav")
            soundfile.write(wav, self.audio, SAMPLE_RATE)
        with exec_after_fork():
            self._writer = imageio_ffmpeg.write_frames(
                str(self.partial),
                (width, height),
                fps=self.fps,
                codec="libx264",
                pix_fmt_out="yuv420p",
                quality=8,
                audio_path=wav,
                audio_codec="aac" if wav else None,
                macro_block_size=1,
                ffmpeg_log_level="error",
                output_params=[arg for tag in self.tags.items() for arg in ("-metadata", "=".join(tag))],
            )
            self._writer.send(None)

    def write(self, frame: np.ndarray) -> None:
        if self._writer is None:
            self._open(*frame.shape[:2])
        self._writer.send(np.ascontiguousarray(frame, np.uint8).tobytes())
        self.frames += 1

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
            if kind is None:
                if self.frames == 0:
                    raise VideoError(f"{self.path}: no frames were written")
                os.replace(self.partial, self.path)
        finally:
            self.partial.unlink(missing_ok=True)
            self._tmp.cleanup()


def write_mp4(path: str | Path, frames: np.ndarray, fps: float, audio: np.ndarray | None = None) -> Path:
    """frames [F, H, W, 3] uint8 -> H.264 MP4 at `fps`, with `audio` [S] (16 kHz mono float) muxed in as AAC;
    written atomically (`Mp4Writer`)."""
    with Mp4Writer(path, fps, audio) as writer:
        for frame in frames:
            writer.write(frame)
    return Path(path)
