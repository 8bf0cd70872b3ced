"""Hallo's face embedding (emo_jax.sample.hallo_faces) on tiny random ONNX models laid out as insightface's.

The peer check runs insightface 0.7.3's own detector and recognizer classes (the version Hallo pins; its sdist
does not build here, so point EMO_JAX_INSIGHTFACE_SRC at its unpacked source, e.g. insightface-0.7.3/) on the same
models and images.
"""

from __future__ import annotations

import os
import sys
import types

import numpy as np
import pytest
from onnx_faces import detector, recognizer
from peers import require

from emo_jax.sample.hallo_faces import DETECTOR_FILE, RECOGNIZER_FILE, FaceAnalyzer

INSIGHTFACE = os.environ.get("EMO_JAX_INSIGHTFACE_SRC")


def _models(folder, normalises_inside=False):
    require("onnx"), require("onnxruntime")
    folder.mkdir(exist_ok=True)
    detector(folder / DETECTOR_FILE)
    recognizer(folder / RECOGNIZER_FILE, normalises_inside=normalises_inside)
    return folder


def _images():
    from skimage.data import astronaut

    image = astronaut()
    return {"square": image, "tall": np.ascontiguousarray(image[:, 100:400]), "wide": image[50:350]}


def test_missing_model_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        FaceAnalyzer(tmp_path)
    assert DETECTOR_FILE in str(error.value) and RECOGNIZER_FILE in str(error.value)


def test_the_largest_face_comes_with_its_embedding(tmp_path):
    analyzer = FaceAnalyzer(_models(tmp_path / "models"))
    image = _images()["square"]
    faces = analyzer.faces(image)
    assert len(faces) > 1, "the tiny detector should report several boxes on a photo"
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    largest = analyzer.largest(image)
    assert largest.area == max(f.area for f in faces)
    np.testing.assert_array_equal(largest.embedding, next(f for f in faces if f.area == largest.area).embedding)
    assert largest.embedding.shape == (512,) and np.isfinite(largest.embedding).all()


@pytest.mark.parametrize("normalises_inside", [False, True])
def test_faces_match_insightface(tmp_path, monkeypatch, normalises_inside):
    """Boxes, scores, keypoints and embeddings equal insightface 0.7.3's (RetinaFace, the class its model router
    gives SCRFD's files, and ArcFaceONNX), on a square, a tall and a wide image."""
    if not INSIGHTFACE:
        pytest.skip("EMO_JAX_INSIGHTFACE_SRC (insightface 0.7.3's unpacked source) is not set")
    folder = _models(tmp_path / "models", normalises_inside)
    for name in ("insightface", "insightface.model_zoo", "insightface.utils"):  # skip the packages' __init__
        package = types.ModuleType(name)
        package.__path__ = [os.path.join(INSIGHTFACE, *name.split("."))]
        monkeypatch.setitem(sys.modules, name, package)
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX
    from insightface.model_zoo.retinaface import RetinaFace

    peer_detector = RetinaFace(str(folder / DETECTOR_FILE))
    peer_detector.prepare(0, input_size=(640, 640))
    peer_recognizer = ArcFaceONNX(str(folder / RECOGNIZER_FILE))
    ours = FaceAnalyzer(folder)
    assert (ours.recognizer_mean, ours.recognizer_std) == (peer_recognizer.input_mean, peer_recognizer.input_std)
    for name, rgb in _images().items():
        bgr = np.ascontiguousarray(rgb[..., ::-1])  # insightface is fed cv2's channel order, as Hallo does
        boxes, keypoints = peer_detector.detect(bgr, max_num=0, metric="default")
        faces = ours.faces(rgb)
        assert len(faces) == len(boxes) > 0, name
        for face, box, points in zip(faces, boxes, keypoints):
            np.testing.assert_allclose(face.box, box[:4], rtol=1e-6, err_msg=name)
            np.testing.assert_allclose(face.score, box[4], rtol=1e-6, err_msg=name)
            np.testing.assert_allclose(face.keypoints, points, rtol=1e-6, err_msg=name)
            peer_face = types.SimpleNamespace(kps=points)
            np.testing.assert_allclose(face.embedding, peer_recognizer.get(bgr, peer_face), rtol=1e-5, atol=1e-6)


def test_the_landmarker_without_mediapipe_says_how_to_install_it(monkeypatch):
    from emo_jax.sample.hallo_faces import face_landmarks

    monkeypatch.setitem(sys.modules, "mediapipe", None)  # import mediapipe raises ImportError
    with pytest.raises(ImportError, match="--no-deps mediapipe"):
        face_landmarks(np.zeros((8, 8, 3), np.uint8), "face_landmarker.task")
