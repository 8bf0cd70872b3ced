"""`emo-jax sample --hallo` end to end on Hallo's `pretrained_models` folder with tiny random weights (made here):
convert once, then Hallo's preprocessing (face models through onnxruntime, wav2vec2, masks) and sampler, to an
MP4 as long as the audio. mediapipe's landmarker is the one part replaced: no tiny model can stand in for its
`.task` file, so fixed face-mesh landmarks are returned in its place.
"""

from __future__ import annotations

import numpy as np
import pytest
from audio_inputs import speech_like
from hallo_folder import VAE_BY_8, layout, model_sizes, write_pretrained_models
from peers import require

from emo_jax.sample.hallo_masks import LIPS, NUM_LANDMARKS, SILHOUETTE


def test_every_missing_part_of_the_folder_is_named_before_any_work(tmp_path, capsys):
    from emo_jax.cli import main

    with pytest.raises(SystemExit) as info:
        main(["sample", "--hallo", str(tmp_path), "--image", "x.png", "--audio", "x.wav", "--out", "x.mp4"])
    err = capsys.readouterr().err
    assert info.value.code == 1 and "Traceback" not in err
    for part in ("hallo/net.pth", "face_analysis/models/glintr100.onnx", "wav2vec/wav2vec2-base-960h/config.json"):
        assert part in err, err
    assert "face_landmarker_v2_with_blendshapes.task" in err and "fudan-generative-vision/hallo" in err


@pytest.fixture(scope="module")
def hallo_folder(tmp_path_factory):
    for module in ("torch", "diffusers", "transformers", "onnx", "onnxruntime"):
        require(module)
    from emo_jax.config import load_config
    from emo_jax.convert.hallo import convert_folder, hallo_config

    root = tmp_path_factory.mktemp("hallo")
    folder = root / "pretrained_models"
    write_pretrained_models(folder, VAE_BY_8, preprocessing=True)
    net_layout = layout()
    config = load_config("configs/hallo.py:float32")
    config.model = hallo_config(net_layout["unet_config"], **model_sizes(net_layout)).to_dict()
    config.data.update(size=128, num_frames=8)
    config.sample.steps = 2
    convert_folder(folder, root / "bundle", config)
    return folder, root / "bundle"


def _landmarks(width: int, height: int) -> np.ndarray:
    """Face-mesh landmarks of a face in the image's middle: outline on an ellipse, lips below its centre."""
    rng = np.random.default_rng(0)
    points = np.stack([rng.uniform(0.35, 0.65, NUM_LANDMARKS) * width, rng.uniform(0.3, 0.7, NUM_LANDMARKS) * height])
    points = points.T
    angles = np.linspace(0, 2 * np.pi, len(SILHOUETTE), endpoint=False)
    points[list(SILHOUETTE)] = np.stack([0.5 + 0.2 * np.cos(angles), 0.5 + 0.28 * np.sin(angles)], 1) * (width, height)
    points[list(LIPS)] = np.stack([rng.uniform(0.44, 0.56, 20) * width, rng.uniform(0.62, 0.66, 20) * height], 1)
    return points


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    import soundfile
    from PIL import Image
    from skimage.data import astronaut

    from emo_jax.sample import hallo_prepare

    image = tmp_path / "astronaut.png"
    Image.fromarray(astronaut()).save(image)
    audio = tmp_path / "speech.wav"
    soundfile.write(audio, speech_like(seconds=1.0), 16000)
    calls = []

    def landmarks(rgb, task_file):
        calls.append(task_file)
        return [_landmarks(rgb.shape[1], rgb.shape[0])]

    monkeypatch.setattr(hallo_prepare, "face_landmarks", landmarks)
    return image, audio, calls


def test_preprocessing_gives_hallos_inputs(hallo_folder, inputs):
    from emo_jax.sample.hallo_prepare import HalloPreprocessor

    folder, _ = hallo_folder
    image, audio, calls = inputs
    prepared = HalloPreprocessor(folder, size=128, clip_frames=8).inputs(image, audio)
    assert calls and calls[0].name == "face_landmarker_v2_with_blendshapes.task"
    assert prepared.reference.shape == (128, 128, 3) and -1 <= prepared.reference.min() < prepared.reference.max() <= 1
    assert prepared.face_embedding.shape == (64,) and np.abs(prepared.face_embedding).max() > 0
    assert prepared.masks.face_locator.shape == (128, 128) and prepared.masks.face_locator.max() == 255
    assert prepared.frames == 25 and prepared.audio_features.shape == (32, 5, 3, 16)


@pytest.mark.slow  # ~50 s
def test_sample_hallo_writes_a_video_as_long_as_the_audio(hallo_folder, inputs, tmp_path):
    from emo_jax.cli import main
    from emo_jax.data.video import probe, read_frames

    folder, bundle = hallo_folder
    image, audio, _ = inputs
    out = tmp_path / "out.mp4"
    args = ["sample", "--hallo", str(folder), "--checkpoint", str(bundle), "--image", str(image)]
    main(args + ["--audio", str(audio), "--out", str(out), "--motion-scale", "1", "1.2", "0.8"])
    frames = np.stack(list(read_frames(out, 25.0)))
    assert len(frames) == 25 and frames.shape[1:] == (128, 128, 3) and abs(probe(out).duration - 1.0) <= 0.07
    assert frames.std() > 1 and out.with_suffix(".png").is_file()


def test_a_guidance_pair_is_refused_for_hallo(hallo_folder, inputs, tmp_path):
    from emo_jax.sample import load_bundle, sample_hallo_video
    from emo_jax.sample.generate import SamplingSettings

    folder, bundle_dir = hallo_folder
    image, audio, _ = inputs
    bundle = load_bundle(bundle_dir)
    settings = SamplingSettings(steps=2, guidance_audio=3.5, guidance_reference=1.0)
    with pytest.raises(ValueError, match="one guidance scale"):
        sample_hallo_video(bundle, folder, image, audio, tmp_path / "x.mp4", settings, provenance=False)
    assert not (tmp_path / "x.mp4").exists()
