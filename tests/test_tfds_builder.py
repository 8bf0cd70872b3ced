import subprocess
import sys

import numpy as np
import pytest

from emo_jax.audio.features import LogMelFeatures, frame_features
from emo_jax.data.preprocess import load_processed
from emo_jax.data.tfds_builder import EmoClips, build_dataset


def _examples(data_dir, config="samples"):
    source = EmoClips(data_dir=str(data_dir), config=config).as_data_source(split="train")
    return {f"{e['video_id'].decode()}/{e['clip_start']:06d}": e for e in (source[i] for i in range(len(source)))}


def test_each_clip_is_an_example_with_the_preprocessed_data(preprocessed, dataset_dir):
    _, out, report = preprocessed
    examples = _examples(dataset_dir)
    assert len(examples) == report["clips"] == 4
    video = load_processed(out / "videos" / "talk_b.npz")
    example = examples["talk_b/000000"]
    assert list(example["frames"]) == video["jpeg"]  # the JPEG bytes, untouched
    np.testing.assert_array_equal(example["boxes"], video["boxes"])
    np.testing.assert_array_equal(example["speed"], video["speed"])
    np.testing.assert_array_equal(example["audio"], video["audio"][: 75 * 640])
    assert example["fps"] == 25.0


def test_beam_build_on_the_direct_runner_gives_the_same_examples(preprocessed, dataset_dir, tmp_path):
    import apache_beam as beam

    build_dataset(preprocessed[1], tmp_path, config="samples", beam=beam.runners.DirectRunner())
    plain, beamed = _examples(dataset_dir), _examples(tmp_path)
    assert plain.keys() == beamed.keys()
    for key in plain:
        assert list(plain[key]["frames"]) == list(beamed[key]["frames"])
        np.testing.assert_array_equal(plain[key]["audio"], beamed[key]["audio"])


def test_logmel_config_stores_per_frame_features_of_the_whole_video(preprocessed, tmp_path):
    _, out, _ = preprocessed
    build_dataset(out, tmp_path, config="logmel")
    example = _examples(tmp_path, "logmel")["talk_c/000000"]
    video = load_processed(out / "videos" / "talk_c.npz")
    expected = frame_features(video["audio"], 25.0, 75, encoder=LogMelFeatures(80), m=0)[:, 0]
    assert example["audio_features"].shape == (4 + 75 + 4, 1, 80) and example["audio_margin"] == 4
    np.testing.assert_allclose(example["audio_features"], expected[np.clip(np.arange(-4, 79), 0, 74)], rtol=1e-6)


def test_training_windows_equal_the_samplers_features_for_the_same_frames(preprocessed, tmp_path):
    """What a clip trains on is what sampling computes for the same frames of the whole audio track (+/-m
    windows included, at clip and video edges)."""
    from emo_jax.data.pipeline import PipelineConfig, data_source, make_loader

    _, out, _ = preprocessed
    build_dataset(out, tmp_path, config="logmel")
    config = PipelineConfig(num_frames=12, num_motion_frames=4, size=64, batch_size=2, worker_count=0)
    checked = 0
    for batch in make_loader(data_source(tmp_path, "logmel"), config, num_epochs=3):
        for video_id, first, windows in zip(batch["video_id"], batch["frame"], batch["audio_features"]):
            video = load_processed(out / "videos" / f"{video_id}.npz")
            sampler = frame_features(video["audio"], 25.0, len(video["jpeg"]), encoder=LogMelFeatures(80), m=2)
            np.testing.assert_array_equal(windows, sampler[first : first + 12])
            checked += 1
    assert checked >= 8


def test_builds_and_reads_without_loading_tensorflow(preprocessed, tmp_path):
    code = (
        "import sys\n"
        "from emo_jax.data.tfds_builder import build_dataset\n"
        f"b = build_dataset({str(preprocessed[1])!r}, {str(tmp_path)!r})\n"
        "source = b.as_data_source(split='train')\n"
        "print(len(source), len(source[0]['frames']), 'tensorflow' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-3:] == ["4", "75", "False"]


def test_missing_preprocessed_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no preprocessed videos"):
        build_dataset(tmp_path, tmp_path / "data")


def test_cli_builds_the_dataset(preprocessed, tmp_path, capsys):
    from emo_jax.cli import main

    main(["build-dataset", "--preprocessed", str(preprocessed[1]), "--data-dir", str(tmp_path)])
    assert "emo_clips/samples: 4 clips in 1 shards at" in capsys.readouterr().out


def test_wav2vec2_config_stores_features_of_a_local_model(preprocessed, tmp_path):
    from peers import require

    transformers = require("transformers")
    from emo_jax.audio.features import Wav2Vec2Features
    from emo_jax.convert.wav2vec2 import from_hf_wav2vec2_folder
    from emo_jax.data.pipeline import data_source
    from emo_jax.data.tfds_builder import EmoClipsConfig

    folder = tmp_path / "wav2vec2"
    hf_config = transformers.Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    )  # fmt: skip
    transformers.Wav2Vec2Model(hf_config).save_pretrained(folder)
    config = EmoClipsConfig(name="wav2vec2_tiny", audio="wav2vec2", wav2vec2_path=str(folder), layers="all")
    build_dataset(preprocessed[1], tmp_path / "data", config=config)
    source = data_source(str(tmp_path / "data"), config)
    example = next(source[i] for i in range(len(source)) if source[i]["video_id"] == b"talk_a")
    video = load_processed(preprocessed[1] / "videos" / "talk_a.npz")
    encoder = Wav2Vec2Features(from_hf_wav2vec2_folder(folder), layers="all")
    expected = frame_features(video["audio"], 25.0, 75, encoder=encoder, m=0)[:, 0]
    assert example["audio_features"].shape == (4 + 75 + 4, 2, 16)  # margin + frames + margin, layers, hidden size
    np.testing.assert_allclose(example["audio_features"][4:-4], expected, rtol=1e-5, atol=1e-6)
