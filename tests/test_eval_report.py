"""`emo-jax eval`: pairing by name, the crops the metric networks see, the table, and a whole run on random
metric networks."""

import json
import shutil

import numpy as np
import pytest

from emo_jax.cli import main
from emo_jax.data import synthetic
from emo_jax.data.video import Mp4Writer
from emo_jax.eval import report


def write_video(path, frames, audio=None):
    with Mp4Writer(path, 25.0, audio) as writer:
        for frame in frames:
            writer.write(frame)


def test_unknown_metrics_and_missing_weights_are_refused_by_name():
    assert report.parse_metrics("FID, sync,fvd") == ["fid", "sync", "fvd"]
    with pytest.raises(ValueError, match="unknown lpips, psnr"):
        report.parse_metrics("fid,lpips,psnr")
    with pytest.raises(ValueError, match="--metrics sync needs --syncnet"):
        report.load_networks(["sync"])
    with pytest.raises(ValueError, match="--metrics fvd needs --i3d"):
        report.load_networks(["fvd"])


def test_videos_pair_by_name_and_the_unpaired_are_listed(tmp_path):
    (tmp_path / "gen").mkdir(), (tmp_path / "real").mkdir()
    for folder, names in (("gen", ["a.mp4", "b.mp4", "extra.mp4", "notes.txt"]), ("real", ["a.mp4", "b.mov", "c.mp4"])):
        for name in names:
            (tmp_path / folder / name).write_bytes(b"")
    pairs, only_generated, only_real = report.pair_videos(tmp_path / "gen", tmp_path / "real")
    assert [p[0] for p in pairs] == ["a", "b"] and only_generated == ["extra"] and only_real == ["c"]
    table = report.markdown({"metrics": {"FID": 12.5}, "pairs": 2, "only_generated": ["extra"], "only_real": ["c"]})
    assert "| EMO (paper) | 8.760 | 3.890 | - | 78.960 | 67.660 | 0.116 |" in table
    assert "| this run | 12.500 | - |" in table and "Unpaired (only generated): extra." in table
    with pytest.raises(FileNotFoundError, match="nowhere: no such folder"):
        report.pair_videos(tmp_path / "gen", tmp_path / "nowhere")


def test_the_sync_crop_centres_the_face_across_and_keeps_the_mouth_low():
    frame = np.zeros((200, 200, 3), np.uint8)
    frame[80:120, 90:110] = 255  # a bright block at the face box's centre
    crop = report.sync_crops(frame[None], np.array([[60, 60, 140, 140]], np.float32), size=56)[0]
    rows, cols = np.nonzero(crop[..., 0] > 128)
    assert abs(cols.mean() - 27.5) < 1.5  # centred across
    assert rows.mean() < 28  # the box centre sits in the upper part: 1 half-side above, 1.8 below
    padded = report.sync_crops(frame[None], np.array([[0, 0, 60, 60]], np.float32), size=56)[0]
    assert padded[0, 0].tolist() == [report.SYNC_PAD] * 3  # beyond the frame: syncnet_python's gray
    face = report.face_crops(frame[None], np.array([[80, 60, 120, 140]], np.float32), size=20)[0]
    assert face.shape == (20, 20, 3) and face[10, 10].tolist() == [255, 255, 255]


@pytest.mark.slow  # ~3 min on 2 cores: random Inception, I3D, SyncNet, ArcFace, ResNet-50 compiled, run on 100 frames
def test_a_whole_evaluation_on_random_networks_writes_the_report(tmp_path, capsys):
    real, gen = tmp_path / "real", tmp_path / "gen"
    real.mkdir(), gen.mkdir()
    for i in range(2):
        video = synthetic.make_video(10000 + i, 20000 + i, seconds=1.0, fps=25.0, size=96)
        write_video(real / f"v{i}.mp4", video.frames, video.audio)
        shutil.copy(real / f"v{i}.mp4", gen / f"v{i}.mp4")  # the generated videos are the real ones
    write_video(real / "lonely.mp4", video.frames)
    argv = ["eval", "--generated", str(gen), "--real", str(real), "--metrics", "fid,fvd,sync,fsim,efid"]
    main([*argv, "--random-weights", "--out", str(tmp_path / "r.json")])
    out = capsys.readouterr()
    assert "random metric networks" in out.err and "| this run |" in out.out
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["pairs"] == 2 and result["only_real"] == ["lonely"] and len(result["videos"]) == 2
    metrics = result["metrics"]
    assert abs(metrics["FID"]) < 1e-3 and abs(metrics["E-FID"]) < 1e-3  # the same frames on both sides
    assert abs(metrics["FVD"]) < 1e-3 and result["videos"][0]["clips"] == 1  # 25 frames: one 16-frame clip
    assert metrics["F-SIM"] > 50 and np.isfinite(metrics["Sync-C"]) and np.isfinite(metrics["Sync-D"])
    assert (tmp_path / "r.md").read_text().startswith("| method |")


def test_fvd_wants_two_clips_a_side(tmp_path):
    """FVD refuses, by name and length and before any network runs, videos too short to give two 16-frame clips
    on each side."""
    real, gen = tmp_path / "real", tmp_path / "gen"
    real.mkdir(), gen.mkdir()
    video = synthetic.make_video(10000, 20000, seconds=0.8, fps=25.0, size=64)  # 20 frames: one clip
    write_video(real / "v.mp4", video.frames), write_video(gen / "v.mp4", video.frames)
    with pytest.raises(ValueError, match="FVD needs at least 2 clips of 16 frames .* 1 generated and 1 real"):
        report.evaluate(gen, real, ["fvd"], report.Networks(), progress=False)  # no I3D: it must not be needed


@pytest.mark.slow  # ~5 min on 2 cores: the demo model samples 2 videos, then every metric network on random weights
def test_eval_synthetic_runs_every_metric_and_the_corpus_scores(tmp_path, capsys):
    main(["eval", "--synthetic", "--pairs", "1", "--seconds", "1.4", "--out", str(tmp_path / "s.json")])
    result = json.loads((tmp_path / "s.json").read_text())
    assert set(result["metrics"]) == {"FID", "FVD", "Sync-C", "Sync-D", "F-SIM", "E-FID"}
    assert all(np.isfinite(v) for v in result["metrics"].values()) and result["pairs"] == 1
    assert set(result["synthetic"]) == {"truth", "truth_vae", "model", "audio_free"}
    assert result["synthetic"]["truth"]["sync"] > 0.9 and result["synthetic"]["model"]["face_found"] > 0.9
    assert result["synthetic"]["truth_vae"]["face_found"] > 0.9  # the demo VAE keeps the face it is given
    videos = tmp_path / "s_videos"
    assert sorted(p.name for p in videos.iterdir()) == ["audio_free", "model", "reference", "truth"]
    assert "corpus analyser" in (tmp_path / "s.md").read_text() and "videos in" in capsys.readouterr().out
