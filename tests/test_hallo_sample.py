"""`emo-jax sample --hallo` end to end on Hallo's `pretrained_models` folder with tiny random weights (made here):
convert once, then Hallo's preprocessing (face models through onnxruntime, wav2vec2, masks) and sampler, to an
MP4 as long as the audio. mediapipe is the one part replaced (tests/fakes/mediapipe): no tiny model can stand in
for its landmarker's `.task` file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from audio_inputs import speech_like
from hallo_folder import write_converted_folder
from peers import require

FAKES = Path(__file__).parent / "fakes"


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
    return write_converted_folder(tmp_path_factory.mktemp("hallo"))


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    """An image and a speech file, with tests/fakes/mediapipe in place of mediapipe."""
    import soundfile
    from PIL import Image
    from skimage.data import astronaut

    for name in [m for m in sys.modules if m == "mediapipe" or m.startswith("mediapipe.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(FAKES))
    image = tmp_path / "astronaut.png"
    Image.fromarray(astronaut()).save(image)
    audio = tmp_path / "speech.wav"
    soundfile.write(audio, speech_like(seconds=1.0), 16000)
    return image, audio


def test_preprocessing_gives_hallos_inputs(hallo_folder, inputs):
    from emo_jax.sample.hallo_prepare import HalloPreprocessor
    from emo_jax.sample.inputs import load_track

    folder, _ = hallo_folder
    image, audio = inputs
    prepared = HalloPreprocessor(folder, size=128, clip_frames=8).inputs(image, load_track(audio))
    assert prepared.reference.shape == (128, 128, 3) and -1 <= prepared.reference.min() < prepared.reference.max() <= 1
    assert prepared.face_embedding.shape == (64,) and np.abs(prepared.face_embedding).max() > 0
    # the fake landmarker's face outline spans x 0.3-0.7, y 0.22-0.78 of the image, grown 1.2x about its centre
    locator = prepared.masks.face_locator
    assert locator.shape == (128, 128) and locator[64, 64] == 255 and locator[5, 5] == 0 and locator[64, 20] == 0
    assert prepared.frames == 25 and prepared.audio_features.shape == (32, 5, 3, 16)


@pytest.mark.slow  # ~50 s
def test_sample_hallo_writes_a_video_as_long_as_the_audio(hallo_folder, inputs, tmp_path):
    from emo_jax.cli import main
    from emo_jax.data.video import probe, read_frames

    folder, bundle = hallo_folder
    image, audio = inputs
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
    image, audio = inputs
    bundle = load_bundle(bundle_dir)
    settings = SamplingSettings(steps=2, guidance_audio=3.5, guidance_reference=1.0)
    with pytest.raises(ValueError, match="one guidance scale"):
        sample_hallo_video(bundle, folder, image, audio, tmp_path / "x.mp4", settings, provenance=False)
    assert not (tmp_path / "x.mp4").exists()
