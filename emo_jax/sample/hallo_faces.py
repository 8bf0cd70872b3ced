"""Hallo's face embedding: what insightface 0.7.3's `FaceAnalysis` (as Hallo's `ImageProcessor` prepares it, with
`det_size` 640) computes for the largest face, from the same ONNX files through onnxruntime:

  1. detection (SCRFD, `scrfd_10g_bnkps.onnx`): the image resized to fit 640 x 640 keeping its aspect ratio
     (cv2 bilinear), padded with black at the right or bottom, (x - 127.5) / 128; three strides (8, 16, 32) with
     two anchors per cell give scores, boxes and five keypoints as distances from the anchor centres; scores
     >= 0.5 kept, greedy non-maximum suppression at IoU 0.4 (insightface's `+ 1` pixel areas);
  2. the largest box (Hallo's choice) and its five keypoints;
  3. recognition (ArcFace, `glintr100.onnx`): the face warped to 112 x 112 by the similarity transform of its
     keypoints onto ArcFace's template (scikit-image's estimate, cv2.warpAffine), normalised as the model asks
     (mean 0 / std 1 where its graph starts with Sub and Mul nodes, else 127.5 / 127.5); the raw output, not
     L2-normalised, is the embedding.

and the face-mesh landmarks Hallo's masks are drawn from: mediapipe's FaceLandmarker (Tasks API, image mode, its
default options, `face_landmarker_v2_with_blendshapes.task`), landmarks scaled by the image's width and height.

Needs onnxruntime and onnx (the `hallo` extra), and mediapipe for the landmarks: `pip install --no-deps
mediapipe==1.2.0` (its wheel asks for opencv-contrib-python, whose cv2 would replace the headless one emo-jax
installs; with `--no-deps` it runs on that one, the `hallo` extra brings its other needs).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np

DETECTOR_FILE, RECOGNIZER_FILE = "scrfd_10g_bnkps.onnx", "glintr100.onnx"
LANDMARKER_FILE = "face_landmarker_v2_with_blendshapes.task"
MEDIAPIPE_HELP = (
    "Hallo's face landmarks need mediapipe: pip install -e '.[hallo]' && pip install --no-deps mediapipe==1.2.0 "
    "(--no-deps keeps emo-jax's headless OpenCV)"
)
DETECTION_SIZE = 640
SCORE_THRESHOLD, NMS_THRESHOLD = 0.5, 0.4
STRIDES, ANCHORS = (8, 16, 32), 2
# ArcFace's five-point template at 112 x 112: eyes, nose tip, mouth corners
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    np.float32,
)


@dataclasses.dataclass
class Face:
    """box (x1, y1, x2, y2) in the image's pixels; score; keypoints [5, 2]; embedding [512] (raw ArcFace)."""

    box: np.ndarray
    score: float
    keypoints: np.ndarray
    embedding: np.ndarray | None = None

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


def _session(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def non_maximum_suppression(boxes: np.ndarray, scores: np.ndarray, threshold: float = NMS_THRESHOLD) -> list[int]:
    """Greedy NMS, highest score first, with insightface's inclusive (+1) pixel areas -> the kept indices."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order, keep = scores.argsort()[::-1], []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        overlap = w * h / (areas[i] + areas[rest] - w * h)
        order = rest[overlap <= threshold]
    return keep


class FaceAnalyzer:
    """`faces(rgb)` -> every detected `Face` with its embedding; `largest(rgb)` -> the largest or None."""

    def __init__(self, models_dir: str | Path):
        models_dir = Path(models_dir)
        missing = [name for name in (DETECTOR_FILE, RECOGNIZER_FILE) if not (models_dir / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{models_dir}: missing {', '.join(missing)} (insightface's antelopev2 models)")
        self.detector = _session(models_dir / DETECTOR_FILE)
        self.recognizer = _session(models_dir / RECOGNIZER_FILE)
        self.recognizer_mean, self.recognizer_std = _recognizer_normalisation(models_dir / RECOGNIZER_FILE)
        self.recognizer_size = tuple(self.recognizer.get_inputs()[0].shape[2:4][::-1])

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """[H, W, 3] uint8 -> the faces after NMS (no embeddings), highest score first."""
        height, width = rgb.shape[:2]
        if height / width > 1:
            new_height, new_width = DETECTION_SIZE, int(DETECTION_SIZE / (height / width))
        else:
            new_width, new_height = DETECTION_SIZE, int(DETECTION_SIZE * (height / width))
        scale = new_height / height
        canvas = np.zeros((DETECTION_SIZE, DETECTION_SIZE, 3), np.uint8)
        canvas[:new_height, :new_width] = cv2.resize(rgb, (new_width, new_height))
        blob = cv2.dnn.blobFromImage(canvas, 1.0 / 128.0, (DETECTION_SIZE, DETECTION_SIZE), (127.5,) * 3)
        inputs = {self.detector.get_inputs()[0].name: blob}
        outputs = self.detector.run([o.name for o in self.detector.get_outputs()], inputs)
        if len(outputs) != 3 * len(STRIDES):
            raise ValueError(f"{DETECTOR_FILE}: expected 9 outputs (scores, boxes, keypoints x 3 strides)")
        scores, boxes, keypoints = [], [], []
        for i, stride in enumerate(STRIDES):
            side = DETECTION_SIZE // stride
            centres = np.stack(np.mgrid[:side, :side][::-1], axis=-1).astype(np.float32).reshape(-1, 2) * stride
            centres = np.repeat(centres, ANCHORS, axis=0)
            score, box, points = outputs[i][:, 0], outputs[i + 3] * stride, outputs[i + 6] * stride
            kept = np.where(score >= SCORE_THRESHOLD)[0]
            scores.append(score[kept])
            boxes.append(np.concatenate([centres - box[:, :2], centres + box[:, 2:]], axis=1)[kept])
            keypoints.append((np.tile(centres, 5) + points)[kept].reshape(-1, 5, 2))
        scores, boxes = np.concatenate(scores), np.concatenate(boxes) / scale
        keypoints = np.concatenate(keypoints) / scale
        order = scores.argsort()[::-1]
        ranked, keypoints = np.hstack([boxes, scores[:, None]]).astype(np.float32)[order], keypoints[order]
        keep = non_maximum_suppression(ranked[:, :4], ranked[:, 4])
        return [Face(ranked[i, :4], float(ranked[i, 4]), keypoints[i]) for i in keep]

    def embed(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        """The face's raw ArcFace embedding [D] from its five keypoints."""
        from skimage.transform import SimilarityTransform

        size = self.recognizer_size[0]
        template = ARCFACE_TEMPLATE * (size / 112.0)
        if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
            transform = SimilarityTransform.from_estimate(face.keypoints, template)
        else:
            transform = SimilarityTransform()
            transform.estimate(face.keypoints, template)
        crop = cv2.warpAffine(rgb, transform.params[:2], (size, size), borderValue=0.0)
        mean, std = self.recognizer_mean, self.recognizer_std
        blob = cv2.dnn.blobFromImages([crop], 1.0 / std, self.recognizer_size, (mean,) * 3)
        name = self.recognizer.get_inputs()[0].name
        return self.recognizer.run([self.recognizer.get_outputs()[0].name], {name: blob})[0].reshape(-1)

    def faces(self, rgb: np.ndarray) -> list[Face]:
        faces = self.detect(rgb)
        for face in faces:
            face.embedding = self.embed(rgb, face)
        return faces

    def largest(self, rgb: np.ndarray) -> Face | None:
        """The face of the largest box with its embedding (Hallo's choice), None where there is none."""
        faces = self.detect(rgb)
        if not faces:
            return None
        face = max(faces, key=lambda f: f.area)
        face.embedding = self.embed(rgb, face)
        return face


def _recognizer_normalisation(path: Path) -> tuple[float, float]:
    """insightface's rule: a graph whose first 8 nodes include Sub and Mul normalises inside (mean 0, std 1)."""
    import onnx

    names = [node.name for node in onnx.load(str(path), load_external_data=False).graph.node[:8]]
    has = lambda *prefixes: any(n.startswith(prefixes) for n in names)  # noqa: E731
    return (0.0, 1.0) if has("Sub", "_minus") and has("Mul", "_mul") else (127.5, 127.5)


def face_landmarks(rgb: np.ndarray, task_file: str | Path) -> list[np.ndarray]:
    """mediapipe's FaceLandmarker as Hallo's `get_landmark` runs it -> per face found, its landmarks [478, 2] in
    pixels (x * width, y * height)."""
    try:
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision
    except ImportError as error:
        raise ImportError(f"{MEDIAPIPE_HELP} ({error})") from None
    height, width = rgb.shape[:2]
    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(task_file)), running_mode=vision.RunningMode.IMAGE
    )
    with vision.FaceLandmarker.create_from_options(options) as landmarker:
        result = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb)))
    return [np.array([[p.x * width, p.y * height] for p in face], np.float64) for face in result.face_landmarks]
