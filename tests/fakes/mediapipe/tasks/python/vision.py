import dataclasses
import enum
import os
import types

import numpy as np

from emo_jax.sample.hallo_masks import LIPS, SILHOUETTE


class RunningMode(enum.Enum):
    IMAGE = "image"


@dataclasses.dataclass
class FaceLandmarkerOptions:
    base_options: object
    running_mode: RunningMode = RunningMode.IMAGE


def _face() -> list:
    """478 normalised points: inside the face, its outline on an ellipse, the lips below the centre."""
    rng = np.random.default_rng(0)
    points = np.stack([rng.uniform(0.35, 0.65, 478), rng.uniform(0.3, 0.7, 478)], 1)
    angles = np.linspace(0, 2 * np.pi, len(SILHOUETTE), endpoint=False)
    points[list(SILHOUETTE)] = np.stack([0.5 + 0.2 * np.cos(angles), 0.5 + 0.28 * np.sin(angles)], 1)
    points[list(LIPS)] = np.stack([rng.uniform(0.44, 0.56, 20), rng.uniform(0.62, 0.66, 20)], 1)
    return [types.SimpleNamespace(x=float(x), y=float(y), z=0.0) for x, y in points]


class FaceLandmarker:
    def __init__(self, options: FaceLandmarkerOptions):
        if not os.path.isfile(options.base_options.model_asset_path):
            raise RuntimeError(f"Unable to open file at {options.base_options.model_asset_path}")
        if options.running_mode != RunningMode.IMAGE:
            raise ValueError("fake mediapipe: image mode only")

    @classmethod
    def create_from_options(cls, options: FaceLandmarkerOptions) -> "FaceLandmarker":
        return cls(options)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def detect(self, image) -> types.SimpleNamespace:
        return types.SimpleNamespace(face_landmarks=[_face()], face_blendshapes=[], facial_transformation_matrixes=[])
