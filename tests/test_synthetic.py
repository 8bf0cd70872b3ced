"""The synthetic corpus: its analyser recovers the renderer's truth, and its files are real videos."""

import json

import numpy as np
import pytest

from emo_jax.data.synthetic import HELD_OUT_IDENTITIES, Identity, make_video, measure_frame


def box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("identity, audio, singing", [(3, 5, False), (10_001, 20_002, True)])
def test_measure_frame_recovers_the_truth(identity, audio, singing):
    video = make_video(identity, audio, seconds=4.0, size=192, singing=singing)
    measured = [measure_frame(frame, video.identity) for frame in video.frames]
    mouth = np.array([m["mouth_open"] for m in measured])
    assert np.corrcoef(mouth, video.truth["mouth_open"])[0, 1] > 0.95
    assert min(box_iou(m["box"], b) for m, b in zip(measured, video.truth["box"])) > 0.9
    skin = np.mean([m["skin"] for m in measured], axis=0)
    assert np.abs(skin - np.array(video.identity.skin)).max() < 0.02


def test_soft_mouth_area_follows_the_truth_through_blur():
    """A blur like the tiny VAE's (Gaussian, 1 px at 64 px) defeats the colour threshold, not the soft area."""
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    video = make_video(4, 6, seconds=4.0, size=256)
    small = np.stack([np.asarray(Image.fromarray(f).resize((64, 64), Image.Resampling.LANCZOS)) for f in video.frames])
    video.frames = small  # as sampling sees a 256 px face: downscaled to the model's 64 px
    blurred = np.stack([gaussian_filter(f.astype(np.float32), (1.0, 1.0, 0)) for f in video.frames])
    blurred = blurred.round().clip(0, 255).astype(np.uint8)
    truth = np.asarray(video.truth["mouth_open"])
    sharp_area = np.array([measure_frame(f, video.identity)["mouth_area"] for f in video.frames])
    blur_area = np.array([measure_frame(f, video.identity)["mouth_area"] for f in blurred])
    blur_open = np.array([measure_frame(f, video.identity)["mouth_open"] for f in blurred])
    assert np.corrcoef(sharp_area, truth)[0, 1] > 0.9
    assert np.corrcoef(blur_area, truth)[0, 1] > 0.8
    assert np.corrcoef(blur_open, truth)[0, 1] < np.corrcoef(blur_area, truth)[0, 1] - 0.1


def test_audio_drives_the_mouth_and_motion_speed_varies():
    video = make_video(7, 7, seconds=6.0, size=64)
    truth = video.truth
    hop = 16000 / video.fps
    loudness = np.array(
        [np.sqrt(np.mean(video.audio[int(f * hop) : int((f + 1) * hop)] ** 2)) for f in range(len(video.frames))]
    )
    # The mouth follows the loudness one frame early (the lead the model has to learn).
    assert np.corrcoef(truth["mouth_open"][:-1], loudness[1:])[0, 1] > 0.9
    speed = np.array(truth["speed"][1:])
    assert speed.max() > 3 * np.median(speed)  # slow and fast stretches
    assert max(truth["blink"]) == 1.0


def test_identities_differ_and_held_out_ones_are_fixed():
    a, b = Identity.sample(0), Identity.sample(1)
    assert a.skin != b.skin and a.face_rx != b.face_rx
    assert Identity.sample(HELD_OUT_IDENTITIES[0]) == Identity.sample(10_000)  # reproducible from the seed


def test_synth_command_writes_playable_videos_with_sidecars(tmp_path, capsys):
    import imageio_ffmpeg

    from emo_jax.audio import load_audio
    from emo_jax.cli import main

    main(["synth", "--out", str(tmp_path), "--videos", "2", "--seconds", "2", "--size", "128", "--singing-every", "2"])
    mp4s = sorted(tmp_path.glob("*.mp4"))
    assert [p.name for p in mp4s] == ["id00000_audio00000.mp4", "id00001_audio00001.mp4"]
    sidecar = json.loads(mp4s[0].with_suffix(".json").read_text())
    assert sidecar["num_frames"] == 50 and len(sidecar["truth"]["mouth_open"]) == 50
    from emo_jax.subprocesses import exec_after_fork

    with exec_after_fork():
        frames = list(imageio_ffmpeg.read_frames(str(mp4s[0])))[1:]  # the first item is the stream's metadata
    assert len(frames) == 50
    audio = load_audio(mp4s[0])
    assert abs(audio.size / 16000 - 2.0) < 0.1
    # The analyser still reads the mouth through H.264 compression.
    identity = Identity(**{k: tuple(v) if isinstance(v, list) else v for k, v in sidecar["identity"].items()})
    decoded = [np.frombuffer(f, np.uint8).reshape(128, 128, 3) for f in frames]
    mouth = [measure_frame(f, identity, tolerance=0.2)["mouth_open"] for f in decoded]
    assert np.corrcoef(mouth, sidecar["truth"]["mouth_open"])[0, 1] > 0.8


def test_every_identity_keeps_skin_and_mouth_apart_from_other_colours():
    from emo_jax.data.synthetic import COLOUR_SEPARATION, MOUTH_COLOUR

    for seed in [*range(300), *HELD_OUT_IDENTITIES]:
        c = Identity.sample(seed)
        for name in ("hair", "eyes", "background"):
            other = np.array(getattr(c, name))
            assert np.abs(np.array(c.skin) - other).max() >= COLOUR_SEPARATION, (seed, name)
            assert np.abs(np.array(MOUTH_COLOUR) - other).max() >= COLOUR_SEPARATION, (seed, name)
