import io
import json
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from corpus import BROKEN, SYNTHETIC
from etils import epath
from PIL import Image

from emo_jax.cli import main
from emo_jax.data import faces, preprocess
from emo_jax.data.synthetic import make_video, warped_photo_video


def test_every_video_is_kept_or_skipped_for_its_reason(preprocessed):
    _, out, report = preprocessed
    statuses = {p.stem: json.loads(p.read_text()) for p in (out / "status").glob("*.json")}
    assert {name for name, s in statuses.items() if s["status"] == "done"} == {*SYNTHETIC, "astronaut"}
    assert {name: s["reason"] for name, s in statuses.items() if s["status"] == "skipped"} == BROKEN
    expected_counts = {}
    for reason in BROKEN.values():
        expected_counts[reason] = expected_counts.get(reason, 0) + 1
    assert report["skipped"] == expected_counts
    assert report == json.loads((out / "report.json").read_text())
    assert sorted(p.stem for p in (out / "videos").glob("*.npz")) == sorted([*SYNTHETIC, "astronaut"])
    assert len(report["speed_buckets"]["centres"]) == 9


def test_a_real_detector_follows_the_astronaut(preprocessed):
    """No sidecar: OpenCV's cascade finds the face in every frame and the eye line follows the applied roll."""
    _, out, _ = preprocessed
    video = preprocess.load_processed(out / "videos" / "astronaut.npz")
    _, true_roll = warped_photo_video(skimage.data.astronaut(), seconds=3.0, size=320, seed=0)
    assert len(video["jpeg"]) == len(true_roll) == 75
    assert np.corrcoef(video["pose"][:, 2], true_roll)[0, 1] > 0.9
    # Head speed: only roll turns the head here, so its speed is the truth; the estimate also carries the noise
    # of yaw and pitch read from the eyes.
    true_speed = faces.smooth(faces.rotation_speed(np.c_[np.zeros((75, 2)), true_roll])[:, None], 15)[:, 0]
    assert np.corrcoef(video["speed"], true_speed)[0, 1] > 0.6
    x0, y0, x1, y1 = video["boxes"].T  # crop pixels at 128 px: the face fills part of the crop, inside it
    assert (x0 > 0).all() and (y0 > 0).all() and (x1 < 128).all() and (y1 < 128).all()
    assert 0.3 < np.median(x1 - x0) / 128 < 0.8
    frame = np.asarray(Image.open(io.BytesIO(video["jpeg"][0])))
    assert frame.shape == (128, 128, 3)
    assert len(video["audio"]) == 75 * 640


def test_synthetic_videos_keep_their_ground_truth(preprocessed):
    videos, out, _ = preprocessed
    video = preprocess.load_processed(out / "videos" / "talk_a.npz")
    truth = json.loads((videos / "talk_a.json").read_text())["truth"]
    crop_x, crop_y, side = video["crop"]
    scale = 128 / side
    true_boxes = (np.asarray(truth["box"]) - [crop_x, crop_y, crop_x, crop_y]) * scale
    assert np.abs(video["boxes"] - faces.smooth(true_boxes, 5)).max() < 1e-3
    true_pose = np.stack([truth[k] for k in ("yaw", "pitch", "roll")], 1)
    np.testing.assert_allclose(video["pose"], true_pose, atol=1e-4)  # the truth needs no smoothing
    assert np.corrcoef(video["speed"], truth["speed"])[0, 1] > 0.8
    rendered = make_video(0, 0, seconds=3.0, size=128).frames
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(b))) for b in video["jpeg"]])
    assert (crop_x, crop_y, side) == (0, 0, 128)  # the face's union with margin fills the small frame
    assert np.abs(decoded.astype(float) - rendered).mean() < 4.0  # H.264 + JPEG round trip
    np.testing.assert_array_equal(video["clips"], [[0, 75]])


def test_rerun_skips_finished_videos_and_redoes_missing_ones(preprocessed, tmp_path, capsys, monkeypatch):
    videos, _, _ = preprocessed
    out = tmp_path / "out"
    for name in ("talk_b", "short"):
        for suffix in (".mp4", ".json"):
            (tmp_path / "in").mkdir(exist_ok=True)
            (tmp_path / "in" / f"{name}{suffix}").write_bytes((videos / f"{name}{suffix}").read_bytes())
    main(["preprocess", "--videos", str(tmp_path / "in"), "--out", str(out), "--size", "64"])
    assert "2 videos -> 1 kept (1 clips, 75 frames at 64px" in capsys.readouterr().out
    first = (out / "videos" / "talk_b.npz").stat().st_mtime_ns

    calls = []
    monkeypatch.setattr(preprocess, "preprocess_video", lambda *a, **k: calls.append(a) or 1 / 0)
    main(["preprocess", "--videos", str(tmp_path / "in"), "--out", str(out), "--size", "64"])
    assert calls == [] and (out / "videos" / "talk_b.npz").stat().st_mtime_ns == first

    (out / "status" / "talk_b.json").unlink()  # as if killed before it finished: redone, and a fault is a skip
    main(["preprocess", "--videos", str(tmp_path / "in"), "--out", str(out), "--size", "64"])
    status = json.loads((out / "status" / "talk_b.json").read_text())
    assert len(calls) == 1 and status["reason"] == "error" and "ZeroDivisionError" in status["detail"]


def test_missing_videos_folder_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["preprocess", "--videos", str(tmp_path / "nope"), "--out", str(tmp_path / "out")])
    assert f"--videos {tmp_path / 'nope'}: no such folder" in capsys.readouterr().err


def test_pose_from_eyes_reads_roll_and_yaw():
    box = np.array([100, 100, 200, 200], np.float32)
    centre, half = np.array([150.0, 150.0 + faces.EYES_BELOW_CENTRE * 100]), 20.0
    for roll in (-20.0, 0.0, 15.0):
        r = np.deg2rad(roll)
        eyes = centre + np.array([[-half * np.cos(r), -half * np.sin(r)], [half * np.cos(r), half * np.sin(r)]])
        np.testing.assert_allclose(faces.pose_from_eyes(box, eyes), [0.0, 0.0, roll], atol=1e-3)
    shifted = np.array([[130.0 + 25, 137.0], [170.0 + 25, 137.0]])  # eyes moved half a half-width right: yaw 30
    assert faces.pose_from_eyes(box, shifted)[0] == pytest.approx(30.0, abs=0.01)


def test_gap_filling_smoothing_and_speed_closed_forms():
    filled = faces.fill_gaps(np.array([[np.nan], [1.0], [np.nan], [3.0], [np.nan]]))
    np.testing.assert_allclose(filled[:, 0], [1, 1, 2, 3, 3])
    np.testing.assert_allclose(faces.smooth(np.arange(6.0)[:, None], 3)[:, 0], [1 / 3, 1, 2, 3, 4, 14 / 3])
    pose = np.cumsum(np.tile([[3.0, 4.0, 0.0]], (4, 1)), 0)
    np.testing.assert_allclose(faces.rotation_speed(pose), [5, 5, 5, 5])


def test_clips_and_crop():
    np.testing.assert_array_equal(preprocess.clip_ranges(300, 125, 32), [[0, 125], [125, 250], [250, 300]])
    np.testing.assert_array_equal(preprocess.clip_ranges(270, 125, 32), [[0, 125], [125, 270]])  # tail 20 joins
    boxes = np.array([[100, 50, 150, 100], [120, 60, 170, 110]], np.float32)  # union 100..170 x 50..110
    assert preprocess.crop_square(boxes, 0.5, 640, 480) == (
        75,
        20,
        120,
    )  # side 70 + 2 * 0.5 * 50 around centre (135, 80)
    assert preprocess.crop_square(boxes, 10.0, 640, 480) == (0, 0, 480)  # as large as the frame, inside it


def test_video_ids_follow_folders_and_stay_unique(tmp_path):
    for name in ("a.mp4", "a.mov", "talks/b.mp4", "talks/notes.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = preprocess.find_videos(tmp_path)
    assert {name: str(path.relative_to(tmp_path)) for name, path in found.items()} == {
        "a_mov": "a.mov",
        "a_mp4": "a.mp4",
        "talks__b": "talks/b.mp4",
    }


def test_a_30_fps_video_comes_out_at_25_fps_with_its_truth_read_by_time(tmp_path):
    from emo_jax.data.synthetic import write_video

    video = make_video(8, 8, seconds=2.0, fps=30.0, size=96)
    write_video(video, tmp_path, "thirty")
    config = preprocess.PreprocessConfig(size=96, smoothing=1, pose_smoothing=1)
    out = preprocess.preprocess_video(tmp_path / "thirty.mp4", config)
    assert len(out.jpeg) == 50 and len(out.audio) == 50 * 640
    source = np.round(np.arange(50) * 30 / 25).astype(int)  # the 30 fps frame nearest each 25 fps time
    np.testing.assert_allclose(out.pose[:, 2], np.asarray(video.truth["roll"])[source], atol=1e-4)
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(b))) for b in out.jpeg])
    errors = np.abs(decoded.astype(float)[:, None] - video.frames[None].astype(float)).mean(axis=(2, 3, 4))
    nearest = errors.argmin(axis=1)  # neighbouring frames differ little, so allow a codec-noise miss or two
    assert (np.abs(nearest - source) <= 1).all() and (nearest == source).mean() >= 0.9  # measured: all 50 equal


def test_silent_videos_are_kept_for_stage_one_only_when_asked(preprocessed, tmp_path):
    """`keep_silent` (VFHQ has no audio): the silent film is kept, marked, and reaches a stage-1 loader, while
    loaders that need audio leave it out."""
    import shutil

    from emo_jax.data.pipeline import PipelineConfig, data_source, make_loader
    from emo_jax.data.tfds_builder import build_dataset

    videos, _, _ = preprocessed
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("silent_film", "talk_a"):
        shutil.copy(videos / f"{name}.mp4", folder)
        if (videos / f"{name}.json").is_file():
            shutil.copy(videos / f"{name}.json", folder)
    report = preprocess.preprocess_folder(
        folder,
        tmp_path / "out",
        preprocess.PreprocessConfig(size=64, keep_silent=True, min_face_fraction=0.7),  # cascade: 79% of frames
        progress=False,
    )
    assert report["done"] == 2 and report["silent"] == 1 and report["skipped"] == {}
    silent = preprocess.load_processed(tmp_path / "out" / "videos" / "silent_film.npz")
    assert not silent["has_audio"] and not silent["audio"].any() and len(silent["audio"]) == len(silent["jpeg"]) * 640
    build_dataset(tmp_path / "out", tmp_path / "tfds", config="logmel")
    source = data_source(tmp_path / "tfds", "logmel")

    def seen(**changes):
        config = PipelineConfig(num_frames=1, num_motion_frames=0, size=32, batch_size=1, worker_count=0, **changes)
        return {str(b["video_id"][0]) for b in make_loader(source, config, num_epochs=4)}

    assert seen(require_audio=False) == {"silent_film", "talk_a"}
    assert seen() == {"talk_a"}


def _same_outputs(first: Path, second: Path, names: list[str]) -> None:
    for name in names:
        a, b = (json.loads((out / "status" / f"{name}.json").read_text()) for out in (first, second))
        names = ("video", "id")  # where the video was, and its id there
        assert {k: v for k, v in a.items() if k not in names} == {k: v for k, v in b.items() if k not in names}, name
        if a["status"] == "done":
            x, y = (preprocess.load_processed(out / "videos" / f"{name}.npz") for out in (first, second))
            assert x["jpeg"] == y["jpeg"]
            assert all(np.array_equal(x[k], y[k]) for k in x if k != "jpeg"), name


def test_a_beam_pipeline_gives_the_same_videos_statuses_and_report(preprocessed, tmp_path, capsys):
    """The corpus through `--beam` on the DirectRunner (Beam's own flags passed through: 2 worker processes)."""
    videos, out, report = preprocessed
    args = ["preprocess", "--videos", str(videos), "--out", str(tmp_path / "out"), "--size", "128", "--beam"]
    main([*args, "--runner", "DirectRunner", "--direct_num_workers", "2", "--direct_running_mode", "multi_processing"])
    assert f"{len(SYNTHETIC) + 1 + len(BROKEN)} videos -> {len(SYNTHETIC) + 1} kept" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == report
    _same_outputs(out, tmp_path / "out", [*SYNTHETIC, "astronaut", *BROKEN])


def test_beam_preprocessing_reads_videos_from_a_bucket_and_writes_there(preprocessed, bucket, tmp_path):
    videos, out, _ = preprocessed
    for name in ("talk_a", "short"):  # one kept, one skipped; each with its sidecar truth
        for suffix in (".mp4", ".json"):
            epath.Path(videos / f"{name}{suffix}").copy(bucket / "in" / "set" / f"{name}{suffix}")
    report = preprocess.preprocess_beam("gs://bucket/in", "gs://bucket/out", preprocess.PreprocessConfig(size=128), [])
    assert (report["done"], report["skipped"]) == (1, {"too short": 1})
    assert json.loads((bucket / "out" / "report.json").read_text()) == report
    statuses = {p.name for p in (bucket / "out" / "status").iterdir()}
    assert statuses == {"set__talk_a.json", "set__short.json"}
    status = json.loads((bucket / "out" / "status" / "set__talk_a.json").read_text())
    assert status["video"] == "gs://bucket/in/set/talk_a.mp4"
    fetched = tmp_path / "fetched"  # the bucket's results under the local run's ids
    for kind, suffix in (("status", ".json"), ("videos", ".npz")):
        (fetched / kind).mkdir(parents=True)
        for name in ("talk_a", "short"):
            if (bucket / "out" / kind / f"set__{name}{suffix}").exists():
                source = (bucket / "out" / kind / f"set__{name}{suffix}").read_bytes()
                (fetched / kind / f"{name}{suffix}").write_bytes(source)
    _same_outputs(out, fetched, ["talk_a", "short"])


def test_the_speed_label_of_a_true_pose_keeps_fast_nods():
    """The synthetic corpus's pose is exact: its label keeps a 3 Hz nod's speed, a still head reads zero, and the
    label follows the true speed (when the truth was smoothed like the detector's pose, 3 Hz kept 11%)."""
    from emo_jax.eval.speed_labels import FREQUENCIES, measure

    quality = measure(preprocess.PreprocessConfig(), seconds=4.0, videos=2, amplitude=5.0, detector=False)
    assert all(0.95 < quality.kept[hz] < 1.05 for hz in FREQUENCIES), quality.kept
    assert quality.still == 0.0 and quality.r > 0.9
