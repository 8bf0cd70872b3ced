"""A small video corpus made in the tests: synthetic talking faces (with sidecar truth), a moving and rotating
`skimage.data.astronaut()` that only a real detector can find, and one broken input of each kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import skimage.data

from emo_jax.data.synthetic import make_video, speech_audio, warped_photo_video, write_video
from emo_jax.data.video import write_mp4

SYNTHETIC = ["talk_a", "talk_b", "talk_c"]
# file name -> the skip reason preprocessing must give
BROKEN = {
    "truncated": "unreadable",
    "not_a_video": "unreadable",
    "silent_film": "no audio",
    "no_face": "no face",
    "two_faces": "several faces",
    "cut": "scene cut",
    "short": "too short",
}


def build_corpus(root: Path, size: int = 128, seconds: float = 3.0) -> Path:
    """Writes the corpus under root/videos and returns that folder."""
    videos = root / "videos"
    for seed, name in enumerate(SYNTHETIC):
        write_video(make_video(seed, seed, seconds=seconds, size=size), videos, name)
    frames, _ = warped_photo_video(skimage.data.astronaut(), seconds=seconds, size=320, seed=0)
    audio, _ = speech_audio(seconds, seed=7)
    write_mp4(videos / "astronaut.mp4", frames, 25.0, audio)

    good = (videos / "talk_a.mp4").read_bytes()
    (videos / "truncated.mp4").write_bytes(good[: len(good) // 2])
    (videos / "not_a_video.mp4").write_text("these are not the frames you are looking for\n")
    write_mp4(videos / "silent_film.mp4", make_video(3, 3, seconds=seconds, size=size).frames, 25.0)
    scenery, _ = warped_photo_video(skimage.data.coffee(), seconds=seconds, size=size, seed=1)
    write_mp4(videos / "no_face.mp4", scenery, 25.0, audio[: len(audio) // 2 * 2])
    pair = np.concatenate([skimage.data.astronaut(), skimage.data.astronaut()[:, ::-1]], axis=1)[::2, ::2]
    pair_frames, _ = warped_photo_video(np.pad(pair, ((128, 128), (0, 0), (0, 0))), seconds=seconds, size=320)
    write_mp4(videos / "two_faces.mp4", pair_frames, 25.0, audio)
    first, second = make_video(4, 4, seconds=seconds / 2, size=size), make_video(5, 5, seconds=seconds / 2, size=size)
    cut = np.concatenate([first.frames, second.frames])
    write_mp4(videos / "cut.mp4", cut, 25.0, np.concatenate([first.audio, second.audio]))
    write_video(make_video(6, 6, seconds=1.0, size=size), videos, "short")
    return videos
