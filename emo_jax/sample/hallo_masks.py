"""Hallo's masks of a reference face, from its 478 face-mesh landmarks (mediapipe's FaceLandmarker), as Hallo's
`get_mask` and `ImageProcessor.preprocess` make them:

  * face box: the silhouette landmarks' box grown by `face_expand_ratio` (1.2); lip box: the lip landmarks' box
    grown 2x (Hallo's `expand_region`: about the centre, shifted back inside the image);
  * the face-locator input: the face box at full resolution, 0 / 255, one channel (Hallo feeds three copies);
  * the audio modules' region masks, blurred at 64 x 64: face box blurred (Gaussian 51), lip box blurred
    (Gaussian 31), each stretched to 0-255; full = 255 - face blur, face = face blur - lip blur (saturating);
    then resized to each UNet level (image side / 8, 16, 32, 64) and flattened.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
from PIL import Image

# mediapipe face-mesh landmark indices: the face's outline and the outer lips (Hallo's silhouette_ids, lip_ids).
SILHOUETTE = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148)
SILHOUETTE += (176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
LIPS = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 146, 91, 181, 84, 17, 314, 405, 321, 375)
NUM_LANDMARKS = 478
BLUR_SIZE = 64  # the side the region masks are blurred at
LEVEL_DIVISORS = (8, 16, 32, 64)  # the UNet's token grids, as divisors of the image side


@dataclasses.dataclass
class HalloMasks:
    """face_locator [H, W] uint8 (0 / 255); full, face, lip [64, 64] uint8: the region masks before resizing."""

    face_locator: np.ndarray
    full: np.ndarray
    face: np.ndarray
    lip: np.ndarray

    def levels(self, side: int) -> tuple[np.ndarray, ...]:
        """The region masks at each UNet level of a `side` x `side` image: [3, (side / d)^2] float32 in [0, 1]
        (rows full, face, lip) for d in LEVEL_DIVISORS, PIL bilinear resizing as torchvision's on PIL images."""

        def resize(mask: np.ndarray, size: int) -> np.ndarray:
            resized = Image.fromarray(mask).resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(resized, np.float32).reshape(-1) / 255.0

        return tuple(np.stack([resize(m, side // d) for m in (self.full, self.face, self.lip)]) for d in LEVEL_DIVISORS)


def expand_box(box: np.ndarray, width: int, height: int, ratio: float) -> tuple[int, int, int, int]:
    """(min_x, max_x, min_y, max_y) grown `ratio` times about its centre, moved back inside the image, rounded
    (Hallo's `expand_region`, its floor divisions included)."""
    min_x, max_x, min_y, max_y = (float(v) for v in box)
    mid_x, mid_y = (max_x + min_x) // 2, (max_y + min_y) // 2
    half_x, half_y = ((max_x - min_x) * ratio) // 2, ((max_y - min_y) * ratio) // 2
    min_x, max_x, min_y, max_y = mid_x - half_x, mid_x + half_x, mid_y - half_y, mid_y + half_y
    if min_x < 0:
        max_x, min_x = max_x - min_x, 0
    if max_x > width:
        min_x, max_x = min_x - (max_x - width), width
    if min_y < 0:
        max_y, min_y = max_y - min_y, 0
    if max_y > height:
        min_y, max_y = min_y - (max_y - height), height
    return round(min_x), round(max_x), round(min_y), round(max_y)


def box_mask(landmarks: np.ndarray, ids: tuple[int, ...], height: int, width: int, ratio: float) -> np.ndarray:
    """[H, W] uint8: 255 inside the grown box of the landmarks `ids` (pixel coordinates [478, 2])."""
    points = landmarks[list(ids)]
    low, high = np.round(points.min(0)), np.round(points.max(0))
    min_x, max_x, min_y, max_y = expand_box(np.array([low[0], high[0], low[1], high[1]]), width, height, ratio)
    mask = np.zeros((height, width), np.uint8)
    mask[min_y:max_y, min_x:max_x] = 255  # as Hallo slices (a box wider than the image starts below 0)
    return mask


def blur(mask: np.ndarray, kernel: int) -> np.ndarray:
    """[H, W] uint8 -> [64, 64] uint8: resized, Gaussian-blurred, stretched to 0-255 (Hallo's `blur_mask`)."""
    blurred = cv2.GaussianBlur(cv2.resize(mask, (BLUR_SIZE, BLUR_SIZE)), (kernel, kernel), 0)
    return cv2.normalize(blurred, None, 0, 255, cv2.NORM_MINMAX)


def hallo_masks(landmarks: np.ndarray, height: int, width: int, face_expand_ratio: float = 1.2) -> HalloMasks:
    """Face-mesh landmarks [478, 2] (x, y pixels) of an image of `height` x `width` -> its `HalloMasks`."""
    landmarks = np.asarray(landmarks, np.float64)
    if landmarks.shape != (NUM_LANDMARKS, 2):
        raise ValueError(f"expected {NUM_LANDMARKS} face-mesh landmarks [478, 2], got shape {landmarks.shape}")
    face = box_mask(landmarks, SILHOUETTE, height, width, face_expand_ratio)
    face_blur = blur(face, 51)
    lip_blur = blur(box_mask(landmarks, LIPS, height, width, 2.0), 31)
    full = ((1.0 - face_blur / 255.0) * 255).astype(np.uint8)
    return HalloMasks(face_locator=face, full=full, face=cv2.subtract(face_blur, lip_blur), lip=lip_blur)
