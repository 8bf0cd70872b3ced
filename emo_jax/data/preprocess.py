"""Videos -> face-centred clips: the dataset EMO trains on (`emo-jax preprocess --videos DIR --out DIR`).

Per video, in two streaming passes over ffmpeg's output (memory stays per-frame whatever the length):
1. small grayscale frames at the target fps: scene-cut check, face boxes and eyes (`faces.OpenCVFaceDetector`),
   or the sidecar JSON's ground truth for synthetic videos;
2. the square crop around the union of the smoothed face boxes (with a margin), scaled to `size`, JPEG-encoded.
Audio is read once (16 kHz mono) and cut to the frames. A video is stored as `videos/<id>.npz` with its clip
ranges; a video that cannot be used is skipped with one of `SKIP_REASONS`, never stopping the run. Every video
gets `status/<id>.json`, so a re-run skips what is done (resumable), and `report.json` counts the outcomes.
The same per-video work runs in worker processes (`preprocess_folder`) or as an Apache Beam pipeline
(`preprocess_beam`, e.g. on Dataflow with videos and output in a bucket).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import io
import json
import logging
import multiprocessing
import os
import tempfile
from pathlib import Path

import numpy as np
from etils import epath

from emo_jax.audio.loading import SAMPLE_RATE, AudioError, load_audio
from emo_jax.data import faces
from emo_jax.data.video import VideoError, VideoInfo, probe, read_frames
from emo_jax.paths import as_path, is_remote

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
SKIP_REASONS = ("unreadable", "no audio", "too short", "scene cut", "no face", "several faces", "error")


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    size: int = 512  # output frames are size x size
    fps: float = 25.0
    margin: float = 0.5  # the crop reaches this many mean face-box sides beyond the union of the boxes
    clip_frames: int = 125  # frames per stored clip (5 s at 25 fps)
    min_frames: int = 32  # shorter videos are skipped; a shorter tail joins the clip before it
    min_face_fraction: float = 0.8  # frames that must show a face
    several_faces_fraction: float = 0.2  # frames with another face of comparable size that make it skip
    cut_threshold: float = 40.0  # mean absolute gray difference (0-255, 64x64) between frames that is a cut
    smoothing: int = 5  # frames in the moving average of face boxes
    # Frames in the moving averages of the detector's eye positions and pose, and of the speed label. The first
    # two low-pass the head motion the label measures (a sidecar's true pose is not smoothed): measured with
    # `python -m emo_jax.eval.speed_labels --detector`, (15, 15, 15) keeps 80/66/43/18% of a 0.5/1/2/3 Hz nod's
    # mean speed with label r 0.75 against the true speed; lighter settings keep more of fast nods but the Haar
    # eyes' noise then drops r (see README, Data). Until a steadier pose source (landmarks), this setting stays.
    eye_smoothing: int = 15
    pose_smoothing: int = 15
    speed_smoothing: int = 15
    detect_size: int = 360  # the detection pass scales the longer side to this
    detect_every: int = 2  # frames between face detections; boxes and pose are interpolated in between
    jpeg_quality: int = 95
    use_sidecar: bool = True  # a `<video>.json` with ground truth beside the video replaces the detector
    keep_silent: bool = False  # keep videos without audio (silence stored, marked): stage 1 can use them (VFHQ)


class SkipVideo(Exception):
    """A video that preprocessing leaves out, with one of `SKIP_REASONS` and a detail for the report."""

    def __init__(self, reason: str, detail: str):
        assert reason in SKIP_REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclasses.dataclass
class ProcessedVideo:
    """One video, face-centred. jpeg: T JPEG-encoded [size, size, 3] frames; audio: [T * samples per frame]
    16 kHz; boxes: [T, 4] face boxes in crop pixels; pose: [T, 3] yaw, pitch, roll (deg); speed: [T] deg/frame;
    clips: [K, 2] start, end frame; crop: x, y, side in source pixels; has_audio: False for a silent video kept
    with `keep_silent` (its audio is zeros; stages that need audio skip it)."""

    jpeg: list[bytes]
    audio: np.ndarray
    boxes: np.ndarray
    pose: np.ndarray
    speed: np.ndarray
    clips: np.ndarray
    crop: tuple[int, int, int]
    fps: float
    has_audio: bool = True

    def save(self, path: Path) -> None:
        """One .npz (no pickles: the JPEGs are one byte array and its offsets), written atomically."""
        offsets = np.cumsum([0] + [len(b) for b in self.jpeg]).astype(np.int64)
        arrays = dict(
            jpeg=np.frombuffer(b"".join(self.jpeg), np.uint8),
            jpeg_offsets=offsets,
            audio=self.audio.astype(np.float32),
            boxes=self.boxes.astype(np.float32),
            pose=self.pose.astype(np.float32),
            speed=self.speed.astype(np.float32),
            clips=self.clips.astype(np.int64),
            crop=np.asarray(self.crop, np.int64),
            fps=np.float32(self.fps),
            has_audio=np.bool_(self.has_audio),
        )
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)


def load_processed(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a stored video; `jpeg` becomes a list of T JPEG byte strings."""
    with np.load(path) as stored:
        arrays = dict(stored)
    data, offsets = arrays.pop("jpeg"), arrays.pop("jpeg_offsets")
    arrays["jpeg"] = [data[a:b].tobytes() for a, b in zip(offsets[:-1], offsets[1:])]
    arrays.setdefault("has_audio", np.bool_(True))  # stored before silent videos could be kept
    return arrays


def samples_per_frame_bounds(num_frames: int, fps: float) -> np.ndarray:
    """[T + 1] audio sample index where each frame starts (and where the last ends), 16 kHz."""
    return np.round(np.arange(num_frames + 1) * SAMPLE_RATE / fps).astype(np.int64)


def clip_ranges(num_frames: int, clip_frames: int, min_frames: int) -> np.ndarray:
    """[K, 2] start, end: consecutive clips of `clip_frames`; a tail under `min_frames` joins the last clip."""
    starts = list(range(0, num_frames, clip_frames))
    if len(starts) > 1 and num_frames - starts[-1] < min_frames:
        starts.pop()
    ends = starts[1:] + [num_frames]
    return np.array(list(zip(starts, ends)), np.int64).reshape(-1, 2)


def crop_square(boxes: np.ndarray, margin: float, width: int, height: int) -> tuple[int, int, int]:
    """(x, y, side): the square around the union of `boxes` [T, 4] grown by `margin` mean box sides on each
    side, no larger than the frame, shifted to lie inside it."""
    x0, y0 = boxes[:, 0].min(), boxes[:, 1].min()
    x1, y1 = boxes[:, 2].max(), boxes[:, 3].max()
    box_side = np.mean(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]))
    side = int(round(min(max(x1 - x0, y1 - y0) + 2 * margin * box_side, width, height)))
    x = int(round(np.clip((x0 + x1) / 2 - side / 2, 0, width - side)))
    y = int(round(np.clip((y0 + y1) / 2 - side / 2, 0, height - side)))
    return x, y, side


def _detect(path: Path, config: PreprocessConfig, info: VideoInfo, detector) -> tuple[faces.FaceTrack | None, int]:
    """Pass 1: scene cuts, and faces unless detector is None, at detection size. -> (track in source pixels,
    frames)."""
    scale = min(1.0, config.detect_size / max(info.width, info.height))
    size = max(2, round(info.width * scale)), max(2, round(info.height * scale))
    detections, previous = [], None
    for t, gray in enumerate(read_frames(path, config.fps, size=size, gray=True)):
        thumb = _thumbnail(gray)
        if previous is not None and np.abs(thumb - previous).mean() > config.cut_threshold:
            raise SkipVideo("scene cut", f"at frame {t} ({t / config.fps:.2f} s)")
        previous = thumb
        if detector is not None:
            detections.append(detector.detect(gray) if t % config.detect_every == 0 else None)
    num_frames = t + 1 if previous is not None else 0
    track = faces.track_faces(detections) if detector is not None else None
    if track is not None:  # detection-size pixels -> source pixels
        track.eyes *= np.array([info.width / size[0], info.height / size[1]], np.float32)
        track.boxes *= np.array([info.width / size[0], info.height / size[1]] * 2, np.float32)
    return track, num_frames


def _thumbnail(gray: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(gray).resize((64, 64), Image.BILINEAR), np.float32)


def preprocess_video(path: str | Path, config: PreprocessConfig, detector=None) -> ProcessedVideo:
    """One video -> `ProcessedVideo`; raises `SkipVideo` with the reason when it cannot be used.

    detector: a `faces.OpenCVFaceDetector` (made here if None); unused when a sidecar JSON is read."""
    path = Path(path)
    try:
        info = probe(path)
    except VideoError as error:
        raise SkipVideo("unreadable", str(error)) from None
    try:
        audio = load_audio(path)
    except AudioError as error:
        if not config.keep_silent:
            raise SkipVideo("no audio", str(error)) from None
        audio = None
    sidecar = path.with_suffix(".json")
    use_sidecar = config.use_sidecar and sidecar.is_file()
    if not use_sidecar and detector is None:
        detector = faces.OpenCVFaceDetector()
    try:
        track, num_frames = _detect(path, config, info, None if use_sidecar else detector)
    except VideoError as error:
        raise SkipVideo("unreadable", str(error)) from None
    if audio is not None:
        num_frames = min(num_frames, int(len(audio) * config.fps / SAMPLE_RATE))  # the shorter stream decides
    if num_frames < config.min_frames:
        raise SkipVideo("too short", f"{num_frames} frames with audio at {config.fps:g} fps, need {config.min_frames}")
    if use_sidecar:
        track = faces.sidecar_track(sidecar, config.fps, num_frames)
    track = track[:num_frames]
    _check_faces(track, config)

    boxes = faces.smooth(faces.fill_gaps(track.boxes), config.smoothing)
    pose, speed = speed_labels(track, boxes, config)
    x, y, side = crop_square(boxes, config.margin, info.width, info.height)
    jpeg = []
    try:
        for frame in read_frames(path, config.fps, crop=(x, y, side, side), size=(config.size, config.size)):
            if len(jpeg) == num_frames:
                break
            jpeg.append(_encode_jpeg(frame, config.jpeg_quality))
    except VideoError as error:
        raise SkipVideo("unreadable", str(error)) from None
    if len(jpeg) != num_frames:
        raise SkipVideo("unreadable", f"{path}: second pass gave {len(jpeg)} frames, first {num_frames}")
    bounds = samples_per_frame_bounds(num_frames, config.fps)
    has_audio = audio is not None
    if not has_audio:
        audio = np.zeros(bounds[-1], np.float32)
    crop_boxes = (boxes - np.array([x, y, x, y], np.float32)) * (config.size / side)
    return ProcessedVideo(
        jpeg=jpeg,
        audio=audio[: bounds[-1]],
        boxes=crop_boxes,
        pose=pose,
        speed=speed,
        clips=clip_ranges(num_frames, config.clip_frames, config.min_frames),
        crop=(x, y, side),
        fps=config.fps,
        has_audio=has_audio,
    )


def speed_labels(track: faces.FaceTrack, boxes: np.ndarray, config: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """(pose [T, 3] degrees, speed [T] degrees per frame) with the config's eye, pose and speed smoothing."""
    pose = faces.head_pose(track, boxes, config.eye_smoothing, config.pose_smoothing)
    return pose, faces.smooth(faces.rotation_speed(pose)[:, None], config.speed_smoothing)[:, 0]


def _check_faces(track: faces.FaceTrack, config: PreprocessConfig) -> None:
    looked = track.num_faces >= 0
    found = (track.num_faces[looked] > 0).mean()
    if found < config.min_face_fraction:
        raise SkipVideo(
            "no face", f"a face in {found:.0%} of the frames looked at, need {config.min_face_fraction:.0%}"
        )
    several = (track.num_faces[looked] > 1).mean()
    if several > config.several_faces_fraction:
        raise SkipVideo("several faces", f"two or more faces in {several:.0%} of the frames looked at")


def _encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def find_videos(root: str | Path) -> dict[str, Path]:
    """Video files under `root` (a folder or gs://...; by suffix, any depth) by id: the path under `root` without
    the suffix, '/' -> '__' (`talks/a.mp4` -> `talks__a`); files that would share an id keep their suffix
    (`a_mp4`, `a_mov`)."""
    root = as_path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--videos {root}: no such folder")
    paths = sorted((p for p in _files_under(root) if p.suffix.lower() in VIDEO_SUFFIXES), key=str)
    stems = [str(p)[len(str(root)) + 1 :].rsplit(".", 1)[0].replace("/", "__").replace(os.sep, "__") for p in paths]
    return {
        stem if stems.count(stem) == 1 else f"{stem}_{path.suffix[1:].lower()}": path
        for stem, path in zip(stems, paths)
    }


def _files_under(folder):
    """Every file below `folder`, any depth (by listing each folder: buckets have no recursive glob)."""
    for child in folder.iterdir():
        if child.is_dir():
            yield from _files_under(child)
        else:
            yield child


def process_one(path: Path, name: str, out: Path, config: PreprocessConfig) -> dict:
    """Preprocesses one video into `out` under id `name` and writes its status; the status dict is returned.
    Never raises for a bad video: any failure becomes a skip with its reason. A video or `out` in a bucket
    (gs://...) is worked on in a local temporary folder: the video (and its sidecar JSON) copied in, the results
    copied out, the status last."""
    if is_remote(path) or is_remote(out):
        return _process_staged(epath.Path(path), name, epath.Path(out), config)
    status: dict = {"video": str(path), "id": name}
    try:
        video = preprocess_video(path, config, detector=_worker_detector())
        (out / "videos").mkdir(parents=True, exist_ok=True)
        video.save(out / "videos" / f"{name}.npz")
        status.update(
            status="done", frames=len(video.jpeg), clips=len(video.clips), crop=list(video.crop), audio=video.has_audio
        )
    except SkipVideo as skip:
        status.update(status="skipped", reason=skip.reason, detail=skip.detail)
    except Exception as error:  # a bug or an odd file must not end a run over thousands of videos
        log.exception("preprocessing %s failed", path)
        status.update(status="skipped", reason="error", detail=f"{type(error).__name__}: {error}")
    _write_json(out / "status" / f"{name}.json", status)
    return status


def _process_staged(path: epath.Path, name: str, out: epath.Path, config: PreprocessConfig) -> dict:
    with tempfile.TemporaryDirectory(prefix="emo-jax-preprocess-") as temporary:
        work = Path(temporary)
        local = work / "in" / path.name
        local.parent.mkdir()
        for source, target in ((path, local), (path.with_suffix(".json"), local.with_suffix(".json"))):
            if source.exists():
                source.copy(epath.Path(target))
        status = process_one(local, name, work / "out", config)
        status["video"] = str(path)
        if status["status"] == "done":
            (out / "videos").mkdir(parents=True, exist_ok=True)
            epath.Path(work / "out" / "videos" / f"{name}.npz").copy(out / "videos" / f"{name}.npz", overwrite=True)
        _write_json(out / "status" / f"{name}.json", status)
    return status


_DETECTOR = None


def _worker_detector() -> faces.OpenCVFaceDetector:
    """One detector per process (loading the cascades takes ~50 ms)."""
    global _DETECTOR
    if _DETECTOR is None:
        _DETECTOR = faces.OpenCVFaceDetector()
    return _DETECTOR


def _write_json(path: Path | epath.Path, value) -> None:
    """Atomically where local (a temporary file renamed); a bucket object appears whole anyway."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_remote(path):
        path.write_text(json.dumps(value, indent=1))
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)


def preprocess_folder(
    videos: str | Path, out: str | Path, config: PreprocessConfig, *, workers: int = 1, progress: bool = True
) -> dict:
    """Every video under `videos` -> `out/videos/*.npz`, `out/status/*.json`, `out/report.json` (either folder
    may be gs://...); returns the report. Videos with a status already are not redone. workers > 1: that many
    processes (spawned, not forked, so a parent that has started JAX is safe)."""
    from tqdm import tqdm

    root, out = as_path(videos), as_path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    videos = find_videos(root)
    todo = {name: path for name, path in videos.items() if not (out / "status" / f"{name}.json").is_file()}
    log.info("%d videos under %s, %d already done", len(videos), root, len(videos) - len(todo))
    bar = tqdm(total=len(todo), unit="video", desc="preprocessing", disable=not progress)
    if workers > 1 and len(todo) > 1:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            for future in concurrent.futures.as_completed(
                [pool.submit(process_one, path, name, out, config) for name, path in todo.items()]
            ):
                future.result()  # process_one turns every bad video into a skip: what raises here is a real fault
                bar.update()
    else:
        for name, path in todo.items():
            process_one(path, name, out, config)
            bar.update()
    bar.close()
    report = summarise(out, config)
    _write_json(out / "report.json", report)
    return report


def preprocess_beam(videos: str, out: str, config: PreprocessConfig, pipeline_args: list[str]) -> dict:
    """`preprocess_folder` as an Apache Beam pipeline: one element per video not done yet, each through the same
    `process_one`, on the runner `pipeline_args` name (Beam's own flags: `--runner DataflowRunner --project P
    --region R --temp_location gs://...`; DirectRunner without). For a corpus on many machines: `videos` and
    `out` then live in a bucket (gs://). The report is written here once the pipeline has finished."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    out_path = as_path(out)
    found = find_videos(videos)
    todo = sorted(
        (name, str(path)) for name, path in found.items() if not (out_path / "status" / f"{name}.json").exists()
    )
    log.info("%d videos under %s, %d already done", len(found), videos, len(found) - len(todo))
    if todo:
        with beam.Pipeline(options=PipelineOptions(pipeline_args)) as pipeline:
            _ = (
                pipeline
                | "videos" >> beam.Create(todo)
                | "spread" >> beam.Reshuffle()
                | "preprocess" >> beam.Map(functools.partial(_process_element, out=str(out_path), config=config))
            )
    report = summarise(out_path, config)
    _write_json(out_path / "report.json", report)
    return report


def _process_element(element: tuple[str, str], out: str, config: PreprocessConfig) -> dict:
    name, path = element
    return process_one(as_path(path), name, as_path(out), config)


def _stored_speed(path: Path | epath.Path) -> np.ndarray:
    """The `speed` array of a stored video, local or in a bucket, read alone (not the JPEGs beside it)."""
    with path.open("rb") as file, np.load(file) as stored:
        return stored["speed"]


def summarise(out: Path, config: PreprocessConfig) -> dict:
    """Counts per outcome and reason over every status file, the skipped videos with details, and head-speed
    buckets measured on the kept videos (`models.conditioning.speed_buckets`, for the model config)."""
    from emo_jax.models.conditioning import speed_buckets

    statuses = [json.loads(p.read_text()) for p in sorted((out / "status").glob("*.json"), key=str)]
    done = [s for s in statuses if s["status"] == "done"]
    reasons: dict[str, int] = {}
    for s in statuses:
        if s["status"] == "skipped":
            reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
    report = {
        "config": dataclasses.asdict(config),
        "videos": len(statuses),
        "done": len(done),
        "silent": sum(not s.get("audio", True) for s in done),  # kept without audio (keep_silent)
        "skipped": reasons,
        "frames": sum(s["frames"] for s in done),
        "clips": sum(s["clips"] for s in done),
        "skipped_videos": [{k: s[k] for k in ("video", "reason", "detail")} for s in statuses if s not in done],
    }
    speeds = np.concatenate([_stored_speed(out / "videos" / f"{s['id']}.npz") for s in done] or [np.zeros(0)])
    if speeds.size >= 9:
        centres, radii = speed_buckets(speeds, 9)
        report["speed_buckets"] = {"centres": centres, "radii": radii}
    return report
