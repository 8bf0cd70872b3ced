"""Sampling inputs checked before any work: the reference image (found face, cropped by the training crop rule),
the audio track, and the output path. Every problem raises `InputError` naming the file and what is wrong.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import numpy as np

from emo_jax.audio.loading import SAMPLE_RATE, AudioError, load_audio
from emo_jax.data.preprocess import PreprocessConfig, crop_square

log = logging.getLogger(__name__)

MIN_IMAGE_SIDE = 64  # pixels: below this no face can be found or cropped
MAX_IMAGE_PIXELS = 100_000_000  # PIL's decompression-bomb guard is at 179 MP; we refuse earlier, with our message
DETECT_SIZE = 720  # the longer side the face detector sees


class InputError(ValueError):
    """A sampling input that cannot be used (the message names the file and the problem)."""


@dataclasses.dataclass
class Reference:
    """The cropped reference: image [S, S, 3] uint8 and the face box [4] x0, y0, x1, y1 in its pixels."""

    image: np.ndarray
    box: np.ndarray
    source_crop: tuple[int, int, int]  # x, y, side in the original image


def read_image(path: str | Path) -> np.ndarray:
    """Any PIL-readable image -> [H, W, 3] uint8 RGB: grayscale is repeated, alpha is composited on white,
    16-bit channels are scaled down (not clipped)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such image file")
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise InputError(
                    f"{path}: {image.width}x{image.height} is too large (over {MAX_IMAGE_PIXELS // 1_000_000} MP); "
                    "downscale it first"
                )
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grayscale
                values = np.asarray(image, np.float64)
                scale = 65535.0 if values.max() > 255 or image.mode.startswith("I;16") else 255.0
                gray = np.clip(values / scale * 255.0, 0, 255).round().astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=-1)
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise InputError(f"{path}: not a readable image ({error})") from None


def _sidecar_box(path: Path) -> np.ndarray | None:
    """A `<image>.json` beside the image with {"box": [x0, y0, x1, y1]} (pixels) gives the face box, as the
    synthetic corpus' sidecars do for preprocessing."""
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return None
    try:
        box = np.asarray(json.loads(sidecar.read_text())["box"], np.float32).reshape(4)
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"{sidecar}: a sidecar must hold {{'box': [x0, y0, x1, y1]}} ({error})") from None
    return box


def find_face(image: np.ndarray, path: Path, detector=None) -> np.ndarray:
    """The face box [4] in `image` pixels, by the preprocessing detector; the largest of several (warned)."""
    from PIL import Image

    from emo_jax.data.faces import OpenCVFaceDetector

    detector = detector or OpenCVFaceDetector()
    h, w = image.shape[:2]
    scale = min(1.0, DETECT_SIZE / max(h, w))
    small = Image.fromarray(image).convert("L")
    if scale < 1:
        small = small.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
    faces, _ = detector.detect(np.asarray(small))
    if len(faces) == 0:
        raise InputError(
            f"{path}: no face found (the detector wants a frontal face of at least a tenth of the image's "
            f"shorter side); or put the face box in {path.with_suffix('.json').name} as {{'box': [x0, y0, x1, y1]}}"
        )
    areas = (faces[:, 2] - faces[:, 0]) * (faces[:, 3] - faces[:, 1])
    if len(faces) > 1:
        log.warning("%s: %d faces found; using the largest", path, len(faces))
    return faces[int(np.argmax(areas))] / scale


def load_reference(path: str | Path, size: int, *, margin: float = PreprocessConfig.margin) -> Reference:
    """The image at `path`, cropped as preprocessing crops training videos (a square around the face box grown by
    `margin` box sides on each side), resized to `size`."""
    from PIL import Image

    path = Path(path)
    image = read_image(path)
    h, w = image.shape[:2]
    if min(h, w) < MIN_IMAGE_SIDE:
        raise InputError(f"{path}: {w}x{h} is too small (the shorter side needs at least {MIN_IMAGE_SIDE} pixels)")
    box = _sidecar_box(path)
    if box is None:
        box = find_face(image, path)
    x, y, side = crop_square(box[None], margin, w, h)
    crop = Image.fromarray(image[y : y + side, x : x + side]).resize((size, size), Image.Resampling.LANCZOS)
    box_in_crop = (box - np.array([x, y, x, y], np.float32)) * (size / side)
    return Reference(np.asarray(crop), np.clip(box_in_crop, 0, size), (x, y, side))


def face_mask(box: np.ndarray, size: int, expand: float) -> np.ndarray:
    """[size, size, 1] float32: 1 inside `box` grown by `expand` about its centre (the face locator's input; in
    training, the union of a clip's face boxes)."""
    centre, half = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 2 * expand
    x0, y0 = np.floor(np.clip(centre - half, 0, size)).astype(int)
    x1, y1 = np.ceil(np.clip(centre + half, 0, size)).astype(int)
    mask = np.zeros((size, size, 1), np.float32)
    mask[y0:y1, x0:x1] = 1.0
    return mask


def load_track(path: str | Path) -> np.ndarray:
    """The audio track, 16 kHz mono. Empty, unreadable, or a video without an audio stream raise."""
    path = Path(path)
    try:
        waveform = load_audio(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such audio file") from None
    except AudioError as error:
        raise InputError(str(error)) from None
    if waveform.size < SAMPLE_RATE // 25:
        raise InputError(f"{path}: {waveform.size / SAMPLE_RATE * 1000:.0f} ms of audio is shorter than one frame")
    return waveform  # load_audio warns when it is silent: that works, the face just does not speak


def check_output(path: str | Path) -> Path:
    """The output MP4 path: its folder must exist and be writable, its name end in .mp4."""
    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise InputError(f"{path}: the output must be an .mp4 file")
    folder = path.absolute().parent
    if not folder.is_dir():
        raise InputError(f"{path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{path}: the folder {folder} is not writable")
    if path.is_dir():
        raise InputError(f"{path}: is a folder")
    return path
