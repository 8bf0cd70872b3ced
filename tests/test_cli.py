"""The `emo-jax` command line as a user runs it."""

import json
from pathlib import Path

import numpy as np
import pytest
from peers import require

from emo_jax.cli import main
from emo_jax.data.video import read_frames
from emo_jax.provenance.check import inspect


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in ["demo", "sample", "provenance", "eval", "export", "train", "train-vae", "convert", "bench"]:
        assert name in out


def test_demo_writes_a_talking_video_from_the_bundled_model(tmp_path, capsys):
    out = tmp_path / "demo.mp4"
    main(["demo", "--out", str(out), "--steps", "1"])
    assert out.is_file() and out.with_suffix(".png").is_file()
    frames = list(read_frames(out, 25.0))
    assert len(frames) == 100 and frames[0].shape == (64, 64, 3)  # 4 s of example speech at 25 fps
    found = inspect(out)  # marked as AI-generated three ways
    assert found.credentials.says_generated and found.tags and found.mark.found
    assert "the bundled demo model" in capsys.readouterr().out


def test_no_provenance_warns_before_any_work(tmp_path, capsys):
    out = str(tmp_path / "missing" / "o.mp4")  # refused before any model is loaded
    with pytest.raises(SystemExit):
        main(["sample", "--no-provenance", "--image", "x.png", "--audio", "x.wav", "--out", out])
    err = capsys.readouterr().err
    assert "warning: --no-provenance" in err and "does not exist" in err


def test_sample_refuses_a_missing_output_folder_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["sample", "--image", "x.png", "--audio", "x.wav", "--out", str(tmp_path / "no" / "out.mp4")])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


def test_missing_config_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["info", "--config", "no/such/config.py"])
    assert info.value.code == 1
    assert "no/such/config.py" in capsys.readouterr().err


def test_the_package_carries_every_config_and_finds_them_from_anywhere(tmp_path, monkeypatch):
    """A pip-installed emo-jax has no checkout around it: configs/ must travel inside the package (a link in a
    checkout, listed in package-data) and be found by name or by its repository path from any folder."""
    from emo_jax.config import PACKAGE_CONFIGS, resolve

    repo_configs = Path(__file__).parent.parent / "configs"
    assert sorted(p.name for p in PACKAGE_CONFIGS.glob("*.py")) == sorted(p.name for p in repo_configs.glob("*.py"))
    monkeypatch.chdir(tmp_path)
    for spec in ("tiny", "configs/hallo.py:bfloat16", "stage3.py:tiny"):
        path, _ = resolve(spec)
        assert path.is_file() and path.parent.name == "configs", spec


@pytest.mark.parity
def test_convert_pipeline_folder_and_verify(tmp_path, capsys):
    torch = require("torch")
    diffusers = require("diffusers")
    from tiny import TINY_UNET, TINY_VAE

    torch.manual_seed(0)
    pipeline = tmp_path / "pipeline"
    diffusers.UNet2DConditionModel(**TINY_UNET.to_diffusers()).save_pretrained(pipeline / "unet")
    diffusers.AutoencoderKL(**TINY_VAE.to_diffusers()).save_pretrained(pipeline / "vae")
    (pipeline / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))

    main(["convert", str(pipeline), "--out", str(tmp_path / "out"), "--verify"])
    out = capsys.readouterr().out
    errors = [float(line.rsplit("relative error ", 1)[1].split()[0]) for line in out.splitlines() if "verify" in line]
    assert len(errors) == 3  # unet noise prediction, vae encode mean, vae decode
    assert max(errors) < 1e-5, out
    assert (tmp_path / "out" / "unet" / "config.json").is_file() and (tmp_path / "out" / "vae" / "params").is_dir()


def test_convert_of_a_non_model_folder_fails_cleanly(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["convert", str(tmp_path), "--out", str(tmp_path / "out")])
    assert info.value.code == 1
    assert "no config.json" in capsys.readouterr().err


def test_audio_features_command_writes_frame_aligned_features(tmp_path, capsys):
    import soundfile as sf
    from audio_inputs import speech_like

    sf.write(tmp_path / "speech.flac", speech_like(2.0), 16000)
    out = tmp_path / "feats.npy"
    main(
        [
            "audio-features",
            "--audio",
            str(tmp_path / "speech.flac"),
            "--fps",
            "25",
            "--out",
            str(out),
            "--encoder",
            "logmel",
        ]
    )
    assert np.load(out).shape == (50, 5, 1, 80)
    assert "[50, 5, 1, 80]" in capsys.readouterr().out


@pytest.mark.parity
def test_audio_features_command_reads_a_transformers_folder(tmp_path):
    import soundfile as sf
    from audio_inputs import TINY_50HZ, speech_like

    transformers = require("transformers")
    transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**TINY_50HZ)).save_pretrained(tmp_path / "w2v")
    sf.write(tmp_path / "speech.wav", speech_like(1.0), 16000)
    out = tmp_path / "feats.npy"
    main(
        [
            "audio-features",
            "--audio",
            str(tmp_path / "speech.wav"),
            "--fps",
            "30",
            "--out",
            str(out),
            "--wav2vec2",
            str(tmp_path / "w2v"),
            "--layers",
            "1,2",
        ]
    )
    assert np.load(out).shape == (30, 5, 2, 32)


def test_audio_features_of_a_non_audio_file_fails_cleanly(tmp_path, capsys):
    (tmp_path / "x.wav").write_text("not audio")
    with pytest.raises(SystemExit) as info:
        main(
            [
                "audio-features",
                "--audio",
                str(tmp_path / "x.wav"),
                "--out",
                str(tmp_path / "f.npy"),
                "--encoder",
                "logmel",
            ]
        )
    assert info.value.code == 1
    assert "x.wav: not a readable audio file" in capsys.readouterr().err


def test_info_counts_parameters_per_part(capsys):
    main(["info", "--config", "configs/stage3.py:tiny"])
    out = capsys.readouterr().out
    assert "EMO tiny, stage 3" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert set(rows) == {"audio_projection", "backbone", "face_locator", "reference_net", "speed_encoder", "total"}
    assert (
        rows["reference_net"][-1] == "0" and rows["speed_encoder"][1] == rows["speed_encoder"][-1]
    )  # frozen / trained


@pytest.mark.parity
@pytest.mark.parametrize(
    "argv",
    [
        ["unet", "--channels", "32,32", "--size", "8", "--batch", "1", "--tokens", "4", "--cross-dim", "32"],
        pytest.param(["audio", "--seconds", "0.5"], marks=pytest.mark.slow),  # the unet case covers the harness
        pytest.param(
            ["unet", "--channels", "32,32", "--size", "8", "--batch", "1", "--tokens", "4", "--cross-dim", "32"]
            + ["--backward", "--profile"],
            marks=pytest.mark.slow,
        ),
        pytest.param(
            ["motion", "--channels", "32,32", "--size", "8", "--batch", "1", "--tokens", "4", "--cross-dim", "32"]
            + ["--frames", "4", "--backward"],
            marks=pytest.mark.slow,
        ),
    ],
    ids=["unet", "audio", "unet-backward-profile", "motion-backward"],
)
def test_benchmarks_run_and_agree_with_pytorch(argv, capsys):
    from emo_jax import bench

    bench.main(argv + ["--warmup", "0", "--repeats", "1", "--rounds", "2"])
    out = capsys.readouterr().out
    assert "PyTorch / JAX time" in out and out.count("round ") == 4  # 2 rounds x 2 sides, each its own process
    assert "machine: " in out and "cores busy" in out
    assert float(out.rsplit("relative error JAX vs PyTorch: ", 1)[1].split()[0]) < 1e-5
    if "--profile" in argv:  # both sides' op time by kind, the sample gradients compared above
        assert "| convolution |" in out and "| busy cores |" in out


@pytest.mark.slow  # ~30 s on 2 cores (two clips of the tiny model, then the loop compiled again for its memory)
def test_the_sampling_benchmark_times_clips_and_reports_the_loops_memory(capsys, tmp_path):
    from emo_jax import bench

    argv = ["sample", "--steps", "1", "--clips", "2", "--json", str(tmp_path / "results.json")]
    bench.main(argv)
    out = capsys.readouterr().out
    per_frame = float(out.split(" s per frame")[0].rsplit(", ", 1)[1])
    peak = float(out.split("peak ~")[1].split(" GiB")[0])
    assert "4-frame clips at 64px" in out and per_frame > 0 and peak > 0
    saved = json.loads((tmp_path / "results.json").read_text())  # the same figures, with command and machine
    values = {row["what"]: row["value"] for row in saved["results"]}
    assert values["seconds per frame"] == pytest.approx(per_frame, abs=1e-3)
    assert saved["command"] == ["python", "-m", "emo_jax.bench", *argv]
    assert saved["machine"]["backend"] == "cpu" and "| seconds per clip |" in out
    bench.main(["sample", "--steps", "1", "--compile-only"])  # shapes alone: no clip is made
    out = capsys.readouterr().out
    assert "per frame" not in out and float(out.split("peak ~")[1].split(" GiB")[0]) == peak


@pytest.mark.slow
def test_the_backbone_benchmark_counts_flops_of_both_passes(capsys):
    from emo_jax import bench

    bench.main(["backbone", "--config", "configs/stage2.py:tiny", "--warmup", "0", "--repeats", "1"])
    out = capsys.readouterr().out
    gflop = {
        name: float(out.split(f"  {name}: ")[1].split(" GFLOP per device")[0].rsplit(", ", 1)[1])
        for name in ("forward", "forward + backward")
    }
    assert 0 < gflop["forward"] < gflop["forward + backward"] and "MFU" in out


@pytest.mark.slow  # compiles six evaluation networks (~2 min on 2 cores)
def test_the_metrics_benchmark_reports_each_network_and_a_test_set_estimate(capsys):
    from emo_jax import bench

    bench.main(["metrics", "--batch", "1", "--repeats", "1", "--videos", "1", "--seconds", "1"])
    out = capsys.readouterr().out
    for name in (
        "FID Inception",
        "FVD I3D",
        "SyncNet lip tower",
        "SyncNet audio tower",
        "ArcFace r18",
        "Deep3DFaceRecon",
    ):
        assert f"{name}" in out and "frames/s; cores busy" in out
    assert "estimated time for the test set" in out
