"""A stand-in for mediapipe (see tests/fakes/README.md)."""

import enum

import numpy as np


class ImageFormat(enum.IntEnum):
    SRGB = 1


class Image:
    def __init__(self, image_format: ImageFormat, data: np.ndarray):
        if image_format != ImageFormat.SRGB or data.ndim != 3 or data.shape[2] != 3 or data.dtype != np.uint8:
            raise ValueError("fake mediapipe: expected SRGB uint8 [H, W, 3] data")
        self.data, self.height, self.width = data, data.shape[0], data.shape[1]
