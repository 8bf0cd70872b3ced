"""Hallo's preprocessing of one reference image and one audio track (its `ImageProcessor.preprocess` and
`AudioProcessor.preprocess`, the vocal separator left out) -> `HalloInputs`, from Hallo's `pretrained_models`:

  * the reference: the image as RGB, resized to S x S (PIL bilinear, as torchvision's Resize on PIL images),
    scaled to [-1, 1];
  * the face embedding: the largest face's raw ArcFace embedding (`hallo_faces.FaceAnalyzer`) in the image at
    its own size;
  * the masks: mediapipe's face-mesh landmarks of the image at its own size (`hallo_faces.face_landmarks`) ->
    `hallo_masks`; the face-locator mask then resized to S x S like the reference;
  * the audio: 16 kHz mono -> wav2vec2-base-960h -> `audio.hallo.hallo_audio_features`.

Hallo goes on without a face (a zero embedding and the whole image as the face); this refuses such an image
instead, and one with several faces in the landmarker's view, naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from emo_jax.sample.hallo import HalloInputs
from emo_jax.sample.hallo_faces import DETECTOR_FILE, LANDMARKER_FILE, RECOGNIZER_FILE, FaceAnalyzer, face_landmarks
from emo_jax.sample.hallo_masks import HalloMasks, hallo_masks
from emo_jax.sample.inputs import InputError, read_image

_HF = "fudan-generative-vision/hallo: "
# What sampling reads from Hallo's `pretrained_models` folder beside the model itself, and where Hallo's README
# gets each part (the Hugging Face repo fudan-generative-vision/hallo, under pretrained_models/).
PREPROCESSING_PARTS = {
    f"face_analysis/models/{DETECTOR_FILE}": _HF + f"face_analysis/models/{DETECTOR_FILE} (insightface antelopev2)",
    f"face_analysis/models/{RECOGNIZER_FILE}": _HF + f"face_analysis/models/{RECOGNIZER_FILE} (insightface)",
    f"face_analysis/models/{LANDMARKER_FILE}": _HF + f"face_analysis/models/{LANDMARKER_FILE} (mediapipe)",
    "wav2vec/wav2vec2-base-960h/config.json": _HF + "wav2vec/wav2vec2-base-960h/ (facebook/wav2vec2-base-960h)",
}


class HalloPreprocessor:
    """`inputs(image, waveform)` -> `HalloInputs`; the face models and wav2vec2 are loaded once."""

    def __init__(
        self,
        folder: str | Path,
        *,
        size: int = 512,
        fps: int = 25,
        clip_frames: int = 16,
        face_expand_ratio: float = 1.2,
    ):
        from emo_jax.convert.hallo import check_folder
        from emo_jax.convert.wav2vec2 import from_hf_wav2vec2_folder

        self.folder = check_folder(folder, PREPROCESSING_PARTS)
        self.size, self.fps, self.clip_frames, self.face_expand_ratio = size, fps, clip_frames, face_expand_ratio
        self.faces = FaceAnalyzer(self.folder / "face_analysis" / "models")
        self.wav2vec2 = from_hf_wav2vec2_folder(self.folder / "wav2vec" / "wav2vec2-base-960h")

    def reference(self, image: str | Path) -> tuple[np.ndarray, np.ndarray, HalloMasks]:
        """-> (the reference [S, S, 3] in [-1, 1], the face embedding [512], the `HalloMasks` at S)."""
        from PIL import Image

        rgb = read_image(image)
        height, width = rgb.shape[:2]
        face = self.faces.largest(rgb)
        if face is None:
            raise InputError(f"{image}: no face found (insightface's detector)")
        found = face_landmarks(rgb, self.folder / "face_analysis" / "models" / LANDMARKER_FILE)
        if len(found) != 1:
            raise InputError(f"{image}: mediapipe's face landmarker found {len(found)} faces; Hallo needs exactly one")
        masks = hallo_masks(found[0], height, width, self.face_expand_ratio)
        resize = lambda array: Image.fromarray(array).resize((self.size, self.size), Image.Resampling.BILINEAR)  # noqa: E731
        masks.face_locator = np.asarray(resize(masks.face_locator))
        reference = np.asarray(resize(rgb), np.float32) / 255.0 * 2.0 - 1.0
        return reference, face.embedding.astype(np.float32), masks

    def inputs(self, image: str | Path, waveform: np.ndarray) -> HalloInputs:
        """image: a file; waveform: 16 kHz mono, as `sample.inputs.load_track` reads an audio file."""
        from emo_jax.audio.hallo import hallo_audio_features

        reference, embedding, masks = self.reference(image)
        features, frames = hallo_audio_features(waveform, self.wav2vec2, fps=self.fps, clip_frames=self.clip_frames)
        return HalloInputs(reference, embedding, masks, features, frames)
