"""The grain input pipeline: TFDS clips -> training batches.

TFDS data source -> seeded shuffle -> per-host shard (`ShardByJaxProcess`) -> `SampleClip` (decode, pick the
clip, its motion frames and a reference frame, face mask, audio window) -> batch -> prefetch in worker processes.
The iterator's state (`get_state` / `set_state`) resumes mid-epoch at the same batch.

Batch (B = batch_size, n = num_frames, f = num_motion_frames, S = size, m = window):
  frames [B, n, S, S, 3] uint8        the clip
  motion_frames [B, f, S, S, 3] uint8 the f frames just before it
  reference [B, S, S, 3] uint8        a frame of the same clip record, away from the clip and its motion frames
  face_mask [B, S, S, 1] uint8        1 inside the union of the face boxes of the clip's frames (at least
                                      `mask_frames` frames centred on the clip: stage 1 sees a clip-sized mask)
  mouth_mask [B, S, S, 1] uint8       with `mouth_mask`: 1 inside the union of the clip's mouth regions, the
                                      `MOUTH_REGION` of each face box (`loss.mouth_weight` weighs the loss there)
  speed [B, n] float32                head rotation, degrees/frame (the model buckets it: `SpeedEncoder`)
  audio [B, (n + 2m) * 16000 / fps] float32   the clip's audio with m frames each side (zeros past the record),
    or, for datasets with precomputed features, audio_features [B, n, 2m + 1, L, D]: the whole video's features
    (as the sampler computes them), windowed with the video's neighbouring frames, edges of the video repeated
  video_id [B] str, frame [B] int32   the clip's video and its first frame there (error reports, evaluation)
Stage 1 is n = 1, f = 0: single frames, and no motion_frames.
"""

from __future__ import annotations

import dataclasses
import io

import grain
import numpy as np

from emo_jax.audio.loading import SAMPLE_RATE

# Where the mouth is in a face box, as fractions of its width and height (x0, y0, x1, y1): the lower middle,
# with room for the mouth to open and for pitch. Checked on the synthetic corpus, whose mouth it covers.
MOUTH_REGION = (0.25, 0.6, 0.75, 1.0)


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    num_frames: int = 12
    num_motion_frames: int = 4
    size: int = 512  # frames are resized to S x S if the dataset's differ
    window: int = 2  # m: audio context frames on each side
    reference_gap: int = 12  # the reference is at least this many frames from the clip where the record allows
    mask_frames: int = 0  # the face mask covers at least this many frames around the clip (0: the clip's own)
    require_audio: bool = True  # leave out clips of silent videos (kept by `preprocess --keep-silent` for stage 1)
    mouth_mask: bool = False  # also the clip's mouth regions (for a loss weighted there: loss.mouth_weight)
    batch_size: int = 4
    seed: int = 0
    worker_count: int = 2  # processes running SampleClip; 0: in this process
    worker_buffer_size: int = 2  # batches each worker prepares ahead
    # Records are whole clips (MBs of JPEGs), not grain's default 1-10 KiB: a few reader threads, a short buffer.
    read_threads: int = 2
    read_buffer: int = 8


class HasAudio(grain.transforms.Filter):
    """Keeps the records of videos with audio."""

    def filter(self, element: dict) -> bool:
        return bool(element.get("has_audio", True))


class SampleClip(grain.transforms.RandomMap):
    """One clip record -> one training example (see the module docstring for the fields)."""

    def __init__(self, config: PipelineConfig):
        self.config = config

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        c = self.config
        length = len(element["frames"])
        needed = c.num_frames + c.num_motion_frames + 1
        if length < needed:
            raise ValueError(
                f"clip {element['video_id']!r} at frame {element['clip_start']}: {length} frames, the pipeline needs "
                f"{needed} (num_frames + num_motion_frames + a reference); preprocess with a larger min_frames"
            )
        start = int(rng.integers(c.num_motion_frames, length - c.num_frames + 1))
        window = np.arange(start - c.num_motion_frames, start + c.num_frames)
        reference = _reference_index(length, window, c.reference_gap, rng)
        decode = lambda i: _decode(element["frames"][i], c.size)
        frames = np.stack([decode(i) for i in range(start, start + c.num_frames)])
        scale = c.size / _jpeg_size(element["frames"][start])
        mask_range = _mask_range(start, c.num_frames, c.mask_frames, length)
        example = {
            "frames": frames,
            "reference": decode(reference),
            "face_mask": face_mask(element["boxes"][mask_range] * scale, c.size),
            "speed": element["speed"][start : start + c.num_frames].astype(np.float32),
            "video_id": np.array(_text(element["video_id"])),
            "frame": np.int32(int(element["clip_start"]) + start),
        }
        if c.mouth_mask:
            example["mouth_mask"] = face_mask(
                mouth_boxes(element["boxes"][start : start + c.num_frames] * scale), c.size
            )
        if c.num_motion_frames:  # no empty arrays: grain's shared-memory batches cannot hold them
            example["motion_frames"] = np.stack([decode(i) for i in window[: c.num_motion_frames]])
        if "audio" in element:
            example["audio"] = _audio_window(element["audio"], float(element["fps"]), start, c.num_frames, c.window)
        else:  # features of frames start - margin .. end + margin of the video (edges repeated there)
            features, margin = element["audio_features"], int(element["audio_margin"])
            frames_index = np.arange(start, start + c.num_frames)[:, None] + np.arange(-c.window, c.window + 1)
            example["audio_features"] = features[np.clip(frames_index + margin, 0, len(features) - 1)]
        return example


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _mask_range(start: int, num_frames: int, mask_frames: int, length: int) -> slice:
    """The frames whose boxes make the mask: the clip, widened to `mask_frames` centred on it within the record."""
    extra = max(mask_frames - num_frames, 0)
    lo = min(max(start - extra // 2, 0), max(length - max(mask_frames, num_frames), 0))
    return slice(lo, min(lo + max(mask_frames, num_frames), length))


def _reference_index(length: int, window: np.ndarray, gap: int, rng: np.random.Generator) -> int:
    """A frame outside `window`, at least `gap` frames from it if any is; else the farthest one."""
    distance = np.maximum(window[0] - np.arange(length), np.arange(length) - window[-1])
    far = np.flatnonzero(distance >= gap)
    return int(rng.choice(far)) if far.size else int(np.argmax(distance))


def _decode(jpeg: bytes, size: int) -> np.ndarray:
    from PIL import Image

    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.BICUBIC)
    return np.asarray(image)


def _jpeg_size(jpeg: bytes) -> int:
    from PIL import Image

    return Image.open(io.BytesIO(jpeg)).size[0]


def face_mask(boxes: np.ndarray, size: int) -> np.ndarray:
    """[F, 4] boxes (x0, y0, x1, y1 pixels) -> [size, size, 1] uint8: 1 inside their union (pixel centres)."""
    centres = np.arange(size) + 0.5
    inside_x = (centres[None, :] >= boxes[:, :1]) & (centres[None, :] < boxes[:, 2:3])  # [F, S]
    inside_y = (centres[None, :] >= boxes[:, 1:2]) & (centres[None, :] < boxes[:, 3:4])
    return (inside_y[:, :, None] & inside_x[:, None, :]).any(0)[..., None].astype(np.uint8)


def mouth_boxes(boxes: np.ndarray) -> np.ndarray:
    """[F, 4] face boxes (x0, y0, x1, y1) -> [F, 4] their `MOUTH_REGION`s."""
    x0, y0, x1, y1 = (boxes[:, i : i + 1] for i in range(4))
    w, h = x1 - x0, y1 - y0
    fx0, fy0, fx1, fy1 = MOUTH_REGION
    return np.concatenate([x0 + fx0 * w, y0 + fy0 * h, x0 + fx1 * w, y0 + fy1 * h], axis=1)


def _audio_window(audio: np.ndarray, fps: float, start: int, num_frames: int, m: int) -> np.ndarray:
    """Samples of frames start - m .. start + num_frames + m (zeros beyond the record)."""
    first = round((start - m) * SAMPLE_RATE / fps)
    length = round((num_frames + 2 * m) * SAMPLE_RATE / fps)
    out = np.zeros(length, np.float32)
    lo, hi = max(first, 0), min(first + length, len(audio))
    if hi > lo:
        out[lo - first : hi - first] = audio[lo:hi]
    return out


def data_source(data_dir: str, config="samples", split: str = "train"):
    """The built `EmoClips` dataset (config: a name or an `EmoClipsConfig`) as a random-access grain source:
    what `tfds.data_source` returns, through the builder so that custom configs (wav2vec2 features) work too."""
    from emo_jax.data.tfds_builder import EmoClips

    builder = EmoClips(data_dir=str(data_dir), config=config)
    if not builder.is_prepared():
        name = getattr(config, "name", config)
        raise FileNotFoundError(f"{data_dir}: no emo_clips/{name} dataset built there (emo-jax build-dataset)")
    return builder.as_data_source(split=split)


def make_loader(source, config: PipelineConfig, *, shard_options=None, num_epochs: int | None = None):
    """A `grain.DataLoader` over `source` (any random-access source of clip records).

    shard_options: default `ShardByJaxProcess` (each host reads its share); num_epochs None: forever."""
    from absl import flags

    if not flags.FLAGS.is_parsed():  # grain's worker processes read absl flags
        flags.FLAGS.mark_as_parsed()
    sampler = grain.samplers.IndexSampler(
        num_records=len(source),
        shard_options=shard_options or grain.sharding.ShardByJaxProcess(drop_remainder=True),
        shuffle=True,
        num_epochs=num_epochs,
        seed=config.seed,
    )
    return grain.DataLoader(
        data_source=source,
        sampler=sampler,
        operations=([HasAudio()] if config.require_audio else [])
        + [SampleClip(config), grain.transforms.Batch(config.batch_size, drop_remainder=True)],
        worker_count=config.worker_count,
        worker_buffer_size=config.worker_buffer_size,
        read_options=grain.ReadOptions(num_threads=config.read_threads, prefetch_buffer_size=config.read_buffer),
    )
