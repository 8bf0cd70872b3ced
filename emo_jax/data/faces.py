"""Faces in video frames: per-frame boxes and head pose, gap filling and smoothing, rotation speed.

The detector ships inside a PyPI package, so nothing is downloaded: OpenCV's Haar cascades
(`opencv-python-headless<5`; 5.x ships none). Frontal-face boxes, then the eye cascade inside each face's upper
part. Pose from two eyes and a box is a weak-perspective estimate: roll is the angle of the eye line; yaw and
pitch come from how far the eyes' midpoint sits off its frontal place in the box, with the face as a sphere of the
box's half-size (asin of the offset). Landmark models that would give a full 6-DoF `cv2.solvePnP` fit (mediapipe's
face mesh) ship in no wheel that installs beside numpy 2, so they are not used.

Synthetic videos carry their ground truth in a sidecar JSON (`data/synthetic.py`); `sidecar_track` reads it,
because a Haar cascade does not see cartoon faces.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

EYES_BELOW_CENTRE = -0.13  # the eye line's height in a frontal Haar face box, as a fraction of the box height


@dataclasses.dataclass
class FaceTrack:
    """Per-frame faces of one video, in source pixels; NaN where nothing was found.

    boxes: [T, 4] x0, y0, x1, y1 of the tracked face; num_faces: [T] faces seen in the frame (the tracked one
    and any other of comparable size), -1 where the detector did not look (frames between detections);
    eyes: [T, 2, 2] left and right eye centres (a detector's), or pose: [T, 3] yaw, pitch, roll in degrees
    (ground truth).
    """

    boxes: np.ndarray
    num_faces: np.ndarray
    eyes: np.ndarray | None = None
    pose: np.ndarray | None = None

    def __getitem__(self, frames: slice) -> FaceTrack:
        part = lambda x: None if x is None else x[frames]
        return FaceTrack(self.boxes[frames], self.num_faces[frames], part(self.eyes), part(self.pose))


class OpenCVFaceDetector:
    """Haar-cascade faces and eyes on grayscale frames.

    `detect(gray)` -> (faces [N, 4] x0, y0, x1, y1 most confident first, eyes [2, 2] centres of the first face's
    left and right eye or None). Faces smaller than `min_face` of the frame's shorter side, or with a cascade
    confidence (its final stage's weight) under `min_confidence`, are dropped: on real faces it measured 3.6-8.6,
    on the false faces the cascade finds in clothes and backgrounds 0.8-1.2. Faces under `comparable` of the
    first one's area do not count as another person.
    """

    def __init__(
        self, min_face: float = 0.1, min_confidence: float = 2.0, comparable: float = 0.3, min_neighbors: int = 5
    ):
        import cv2

        self.faces = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
        self.eyes = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_eye.xml")
        if self.faces.empty() or self.eyes.empty():
            raise RuntimeError(f"OpenCV's Haar cascades are missing from {cv2.data.haarcascades}: install opencv<5")
        self.min_face, self.min_confidence = min_face, min_confidence
        self.comparable, self.min_neighbors = comparable, min_neighbors

    def detect(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        side = int(self.min_face * min(gray.shape))
        found, _, confidence = self.faces.detectMultiScale3(
            gray, 1.1, self.min_neighbors, minSize=(side, side), outputRejectLevels=True
        )
        found = [
            box
            for box, c in sorted(zip(np.reshape(found, (-1, 4)).tolist(), confidence), key=lambda p: -p[1])
            if c >= self.min_confidence
        ]
        if not found:
            return np.zeros((0, 4), np.float32), None
        first = found[0][2] * found[0][3]
        faces = np.array([[x, y, x + w, y + h] for x, y, w, h in found if w * h >= self.comparable * first], np.float32)
        return faces, self._eyes(gray, found[0])

    def _eyes(self, gray: np.ndarray, box: list[int]) -> np.ndarray | None:
        x, y, w, h = box
        roi = gray[y : y + h * 5 // 8, x : x + w]
        found = self.eyes.detectMultiScale(roi, 1.05, 3, minSize=(max(w // 10, 5),) * 2, maxSize=(w // 3,) * 2)
        centres = [(x + ex + ew / 2, y + ey + eh / 2) for ex, ey, ew, eh in found]
        left = [c for c in centres if c[0] < x + w / 2]
        right = [c for c in centres if c[0] >= x + w / 2]
        if not left or not right:
            return None
        # The pair nearest to level wins (eyebrows and nostrils are the cascade's usual false eyes).
        pairs = [(a, b) for a in left for b in right]
        a, b = min(pairs, key=lambda p: abs(p[0][1] - p[1][1]) / (p[1][0] - p[0][0]))
        return np.array([a, b], np.float32)


def pose_from_eyes(boxes: np.ndarray, eyes: np.ndarray) -> np.ndarray:
    """Weak-perspective head pose [..., 3] yaw, pitch, roll in degrees from face boxes [..., 4] and eye centres
    [..., 2, 2] (left, right in the image). Roll: the eye line's angle (clockwise on screen is positive, y
    points down)."""
    (lx, ly), (rx, ry) = np.moveaxis(eyes, (-2, -1), (0, 1))
    x0, y0, x1, y1 = np.moveaxis(boxes, -1, 0)
    half_w, half_h = (x1 - x0) / 2, (y1 - y0) / 2
    mid_x, mid_y = (lx + rx) / 2, (ly + ry) / 2
    yaw = np.arcsin(np.clip((mid_x - (x0 + half_w)) / half_w, -1, 1))
    pitch = np.arcsin(np.clip((mid_y - (y0 + half_h) - EYES_BELOW_CENTRE * 2 * half_h) / half_h, -1, 1))
    roll = np.arctan2(ry - ly, rx - lx)
    return np.degrees(np.stack([yaw, pitch, roll], -1)).astype(np.float32)


def head_pose(track: FaceTrack, boxes: np.ndarray, eye_window: int, pose_window: int = 1) -> np.ndarray:
    """[T, 3] yaw, pitch, roll: the track's own pose (ground truth: gaps filled, not smoothed, since smoothing
    only takes away the fast turns the speed label must keep), or the eyes' (gaps filled, smoothed over
    `eye_window`) read against `boxes` [T, 4], the already smoothed face boxes, so that box jitter does not reach
    the pose, then smoothed over `pose_window`."""
    if track.pose is not None:
        return fill_gaps(track.pose)
    eyes = smooth(fill_gaps(track.eyes.reshape(-1, 4)), eye_window).reshape(-1, 2, 2)
    return smooth(pose_from_eyes(boxes, eyes), pose_window)


def track_faces(detections: list[tuple[np.ndarray, np.ndarray | None] | None]) -> FaceTrack:
    """Per-frame detections (None: frame not looked at) -> one face followed through the video: in each frame
    the face nearest to the one followed so far (the most confident in the first frame with a face)."""
    num = len(detections)
    boxes, eyes = np.full((num, 4), np.nan, np.float32), np.full((num, 2, 2), np.nan, np.float32)
    counts = np.full(num, -1, np.int32)
    previous = None
    for t, detection in enumerate(detections):
        if detection is None:
            continue
        faces, found_eyes = detection
        counts[t] = len(faces)
        if not len(faces):
            continue
        centres = (faces[:, :2] + faces[:, 2:]) / 2
        index = 0 if previous is None else int(np.argmin(np.linalg.norm(centres - previous, axis=1)))
        boxes[t], previous = faces[index], centres[index]
        if found_eyes is not None and index == 0:  # eyes belong to the first face
            eyes[t] = found_eyes
    return FaceTrack(boxes, counts, eyes=eyes)


def fill_gaps(values: np.ndarray) -> np.ndarray:
    """[T, K] with NaN rows -> linearly interpolated (edges held); all-NaN columns become 0."""
    values = np.array(values, np.float32)
    t = np.arange(len(values))
    for k in range(values.shape[1]):
        known = ~np.isnan(values[:, k])
        values[:, k] = np.interp(t, t[known], values[known, k]) if known.any() else 0.0
    return values


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over time of [T, ...] (edges repeated), `window` frames (odd)."""
    if window <= 1:
        return np.asarray(values, np.float32)
    half = window // 2
    padded = np.concatenate([values[:1].repeat(half, 0), values, values[-1:].repeat(half, 0)])
    cumulative = np.cumsum(np.concatenate([np.zeros_like(padded[:1]), padded]), axis=0, dtype=np.float64)
    return ((cumulative[window:] - cumulative[:-window]) / window).astype(np.float32)


def rotation_speed(pose: np.ndarray) -> np.ndarray:
    """[T, 3] yaw, pitch, roll (degrees) -> [T] degrees per frame between consecutive frames (frame 0 repeats
    frame 1): the paper's head rotation speed."""
    speed = np.linalg.norm(np.diff(pose, axis=0), axis=1)
    return np.r_[speed[:1], speed].astype(np.float32) if len(speed) else np.zeros(len(pose), np.float32)


def sidecar_track(path: str | Path, fps: float, num_frames: int) -> FaceTrack:
    """The ground-truth boxes and pose of a synthetic video's sidecar JSON, read at `fps` (nearest source frame
    by time, as ffmpeg's fps filter picks them)."""
    sidecar = json.loads(Path(path).read_text())
    truth = sidecar["truth"]
    source = np.minimum(np.round(np.arange(num_frames) * sidecar["fps"] / fps).astype(int), len(truth["box"]) - 1)
    boxes = np.asarray(truth["box"], np.float32)[source]
    pose = np.stack([np.asarray(truth[k], np.float32)[source] for k in ("yaw", "pitch", "roll")], axis=1)
    return FaceTrack(boxes, np.ones(num_frames, np.int32), pose=pose)
