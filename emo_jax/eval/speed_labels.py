"""How much of a head's rotation speed the preprocessing's speed label keeps, on motion whose truth is known.

    python -m emo_jax.eval.speed_labels [--seconds 8] [--videos 6] [--detector] [--eye 15 --pose 15 --speed 15]

Two pose sources, as `emo-jax preprocess` reads them (`preprocess.speed_labels` with a `PreprocessConfig`):
  * truth: the synthetic corpus's pose (what `emo-jax synth` writes in each video's sidecar JSON);
  * detector (`--detector`): OpenCV's Haar face and eye cascades on `skimage.data.astronaut()` turned (roll) along
    the same kind of motion (`synthetic.warped_photo_video`), as on a real video. Rendering and detecting take
    about 10 s per 8 s video on a 2-core CPU.
Per source: `kept` at 0.5, 1, 2 and 3 Hz, the mean label over the mean true speed of a nod (a sinusoid of
`--amplitude` degrees; pitch for the truth, roll for the detector, which can only be shown roll); `still`, the
mean label of a head that does not move (noise alone); and `r`, the correlation per frame of the label with the
true speed over `--videos` videos of the corpus's random motion, whose speed changes over seconds.
--eye, --pose and --speed set the smoothing windows (frames) to measure instead of the config's defaults.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from emo_jax.data import faces
from emo_jax.data.preprocess import PreprocessConfig, speed_labels
from emo_jax.data.synthetic import head_motion, warped_photo_video

FREQUENCIES = (0.5, 1.0, 2.0, 3.0)
EDGE = 20  # frames left out at each end: the moving averages repeat the edge frames there


@dataclasses.dataclass
class LabelQuality:
    source: str
    kept: dict[float, float]  # nod frequency (Hz) -> mean label / mean true speed
    still: float  # mean label of a still head, degrees per frame
    r: float  # mean correlation of the label with the true speed per frame


def true_speed(pose: np.ndarray) -> np.ndarray:
    """[T, 3] degrees -> [T] degrees per frame, unsmoothed."""
    return faces.rotation_speed(np.asarray(pose, np.float32))


def truth_labels(pose: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """The label `preprocess` gives a synthetic video whose sidecar holds `pose` [T, 3]."""
    boxes = np.tile(np.float32([0, 0, 100, 100]), (len(pose), 1))
    track = faces.FaceTrack(boxes, np.ones(len(pose), np.int32), pose=np.asarray(pose, np.float32))
    return speed_labels(track, boxes, config)[1]


class DetectorLabels:
    """The label `preprocess` gives the astronaut turned by `roll` [T] degrees, found by the Haar cascades."""

    def __init__(self, size: int = 320):
        import skimage.data

        self.photo, self.size, self.detector = skimage.data.astronaut(), size, faces.OpenCVFaceDetector()

    def __call__(self, roll: np.ndarray, config: PreprocessConfig, fps: float, seed: int) -> np.ndarray:
        import cv2

        frames, _ = warped_photo_video(
            self.photo, seconds=len(roll) / fps, fps=fps, size=self.size, seed=seed, roll=roll
        )
        detections = [
            self.detector.detect(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)) if t % config.detect_every == 0 else None
            for t, frame in enumerate(frames)
        ]
        track = faces.track_faces(detections)
        boxes = faces.smooth(faces.fill_gaps(track.boxes), config.smoothing)
        return speed_labels(track, boxes, config)[1]


def _nod(num_frames: int, fps: float, hz: float, amplitude: float) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * hz * np.arange(num_frames) / fps)


def measure(config: PreprocessConfig, *, seconds: float, videos: int, amplitude: float, detector: bool) -> LabelQuality:
    """`LabelQuality` of one pose source under `config`."""
    fps, middle = config.fps, slice(EDGE, -EDGE)
    n = int(seconds * fps)
    zeros = np.zeros(n)
    if detector:
        labels_of = DetectorLabels()
        label = lambda pitch, roll, seed: labels_of(roll, config, fps, seed)  # the photo turns in roll only
        as_pose = lambda pitch, roll: np.stack([zeros, zeros, roll], 1)
    else:
        label = lambda pitch, roll, seed: truth_labels(np.stack([zeros, pitch, roll], 1), config)
        as_pose = lambda pitch, roll: np.stack([zeros, pitch, roll], 1)
    kept = {}
    for hz in FREQUENCIES:
        nod = _nod(n, fps, hz, amplitude)
        pitch, roll = (zeros, nod) if detector else (nod, zeros)
        kept[hz] = float(label(pitch, roll, 0)[middle].mean() / true_speed(as_pose(pitch, roll))[middle].mean())
    still = float(label(zeros, zeros, 0)[middle].mean())
    correlations = []
    for seed in range(videos):
        motion = head_motion(n, fps, seed)
        pitch = zeros if detector else motion["pitch"]
        estimate, truth = label(pitch, motion["roll"], seed), true_speed(as_pose(pitch, motion["roll"]))
        correlations.append(np.corrcoef(estimate[middle], truth[middle])[0, 1])
    return LabelQuality("detector" if detector else "truth", kept, still, float(np.mean(correlations)))


def table(rows: list[LabelQuality], config: PreprocessConfig) -> str:
    windows = f"eye {config.eye_smoothing}, pose {config.pose_smoothing}, speed {config.speed_smoothing} frames"
    head = "| source | " + " | ".join(f"kept {hz:g} Hz" for hz in FREQUENCIES) + " | still (deg/frame) | r |"
    lines = [f"smoothing: {windows}, {config.fps:g} fps", "", head, "|---" * (len(FREQUENCIES) + 3) + "|"]
    for row in rows:
        kept = " | ".join(f"{row.kept[hz]:.2f}" for hz in FREQUENCIES)
        lines.append(f"| {row.source} | {kept} | {row.still:.3f} | {row.r:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emo_jax.eval.speed_labels", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each measured video")
    parser.add_argument("--videos", type=int, default=6, help="random-motion videos for the correlation")
    parser.add_argument("--amplitude", type=float, default=5.0, help="nod amplitude, degrees")
    parser.add_argument("--detector", action="store_true", help="also measure the Haar cascades on a real photo")
    for name in ("eye", "pose", "speed"):
        parser.add_argument(f"--{name}", type=int, help=f"{name}_smoothing window, frames (default: the config's)")
    args = parser.parse_args(argv)
    windows = {f"{k}_smoothing": getattr(args, k) for k in ("eye", "pose", "speed") if getattr(args, k)}
    config = dataclasses.replace(PreprocessConfig(), **windows)
    if args.seconds * config.fps <= 2 * EDGE + 10:
        parser.error(f"--seconds {args.seconds}: too short to leave {EDGE} frames out at each end")
    sources = (False, True) if args.detector else (False,)
    rows = [
        measure(config, seconds=args.seconds, videos=args.videos, amplitude=args.amplitude, detector=detector)
        for detector in sources
    ]
    print(table(rows, config))


if __name__ == "__main__":
    main()
