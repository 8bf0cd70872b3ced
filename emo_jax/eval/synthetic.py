"""Did the model learn? Videos for held-out synthetic identities and held-out audio, scored against the truth.

    python -m emo_jax.eval.synthetic --checkpoint emo_jax/assets/demo_model [--pairs 4] [--seconds 4] [--json out]

For each held-out (identity, audio) pair it renders the true video, makes the model's video from the identity's
rest frame and the audio, and makes it again with the audio dropped (the audio-free baseline: the same model,
audio_keep = 0 in every guidance branch). Beside the truth it scores the truth encoded and decoded by the model's
VAE (`truth_vae`): what a perfect denoiser would give, so the ceiling of what the model can score through its VAE.
The corpus analyser (`synthetic.measure_frame`) reads every frame of the four, cropped and sized as the model sees
them, and each gets these scores:

  sync      correlation of the measured mouth area (`mouth_area`: soft, so a VAE's blur does not hide the
            mouth) with the audio's loudness per frame, best over lags of -2..2 frames (the truth leads the
            sound by one frame);
  identity  face found (share of frames where the identity's skin colour is seen) and skin colour error (max
            channel, 0-1) of the face against the identity's;
  jitter    mean absolute second difference of the face-box centre, pixels per frame^2 (smoothness of motion);
  speed     mean face-box centre speed, pixels per frame (how much the head moves).

`--drift 60` instead makes one 60 s video and compares its last 10 s with its first 10 s (skin colour error,
sharpness as the variance of the Laplacian): long videos must not drift.

The audio envelope is what drives the synthetic mouth, so a model that learned lip sync scores near the truth on
sync and far above the audio-free baseline.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from emo_jax.audio import SAMPLE_RATE
from emo_jax.data import synthetic
from emo_jax.data.preprocess import PreprocessConfig, crop_square

LAGS = range(-2, 3)
SCORES = ("sync", "face_found", "colour_error", "jitter", "speed")
SOURCES = ("truth", "truth_vae", "model", "audio_free")


def loudness(audio: np.ndarray, fps: float, num_frames: int) -> np.ndarray:
    """RMS per video frame [F]."""
    bounds = np.round(np.arange(num_frames + 1) * SAMPLE_RATE / fps).astype(int)
    return np.array([np.sqrt(np.mean(audio[a:b] ** 2) + 1e-12) if b > a else 0.0 for a, b in zip(bounds, bounds[1:])])


def best_lag_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """max over lags in LAGS of the Pearson correlation of x[t] with y[t + lag] (0 where either is constant)."""
    best = -1.0
    for lag in LAGS:
        a, b = (x[: len(x) - lag], y[lag:]) if lag >= 0 else (x[-lag:], y[: len(y) + lag])
        if a.std() > 1e-9 and b.std() > 1e-9:
            best = max(best, float(np.corrcoef(a, b)[0, 1]))
    return max(best, 0.0) if best > -1.0 else 0.0


def score_frames(frames: np.ndarray, identity: synthetic.Identity, envelope: np.ndarray) -> dict[str, float]:
    """frames [F, S, S, 3] uint8 of one video -> the SCORES."""
    measured = [synthetic.measure_frame(frame, identity) for frame in frames]
    mouth = np.array([m["mouth_area"] for m in measured])
    found = [m for m in measured if m["box"] is not None]
    centres = np.array([[(m["box"][0] + m["box"][2]) / 2, (m["box"][1] + m["box"][3]) / 2] for m in found])
    colour = np.mean([np.abs(np.asarray(m["skin"]) - identity.skin).max() for m in found]) if found else 1.0
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1) if len(centres) > 1 else np.zeros(1)
    accel = np.linalg.norm(np.diff(centres, 2, axis=0), axis=1) if len(centres) > 2 else np.zeros(1)
    return {
        "sync": best_lag_correlation(mouth, envelope[: len(mouth)]),
        "face_found": len(found) / len(frames),
        "colour_error": float(colour),
        "jitter": float(accel.mean()),
        "speed": float(steps.mean()),
    }


@dataclasses.dataclass
class PairResult:
    identity: int
    audio: int
    truth: dict[str, float]
    truth_vae: dict[str, float]
    model: dict[str, float]
    audio_free: dict[str, float]


def _crop_like_reference(frames: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """The truth frames cropped and sized as `sample.inputs.load_reference` crops the rest frame."""
    from PIL import Image

    h, w = frames.shape[1:3]
    x, y, side = crop_square(box[None], PreprocessConfig.margin, w, h)
    return np.stack(
        [
            np.asarray(Image.fromarray(f[y : y + side, x : x + side]).resize((size, size), Image.Resampling.LANCZOS))
            for f in frames
        ]
    )


def evaluate(
    checkpoint: str | Path,
    *,
    pairs: int = 4,
    seconds: float = 4.0,
    progress: bool = True,
    keep: str | Path | None = None,
    **sampling,
) -> list[PairResult]:
    """Scores `pairs` held-out (identity, audio) pairs; `sampling`: SamplingSettings fields to override.

    `keep`: a folder to leave the videos in, by pair name (`id<identity>_audio<audio>`): `truth/` (cropped as the
    model sees it, with its audio), `model/`, `audio_free/` (MP4s) and `reference/` (the rest frame, PNG): the
    layout `emo-jax eval` reads."""
    import soundfile

    from emo_jax.data.video import read_frames, write_mp4
    from emo_jax.sample import SamplingSettings, VideoSampler, load_bundle, sample_video

    bundle = load_bundle(checkpoint)
    config = bundle.config
    fps, size = float(config.data.fps), config.data.size
    settings = SamplingSettings.from_config(config, **sampling)
    vae_only = VideoSampler(bundle.model, bundle.vae, config, settings)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(keep or tmp)
        for sub in ("truth", "model", "audio_free", "reference"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        for identity_seed, audio_seed in list(zip(synthetic.HELD_OUT_IDENTITIES, synthetic.HELD_OUT_AUDIO))[:pairs]:
            name = f"id{identity_seed}_audio{audio_seed}"
            truth = synthetic.make_video(identity_seed, audio_seed, seconds=seconds, fps=fps, size=256)
            rest = synthetic.write_rest_image(identity_seed, folder / "reference" / f"{name}.png")
            box = np.asarray(json.loads(rest.with_suffix(".json").read_text())["box"], np.float32)
            identity = truth.identity
            audio = Path(tmp) / f"{name}.wav"
            soundfile.write(audio, truth.audio, SAMPLE_RATE)
            envelope = loudness(truth.audio, fps, len(truth.frames))
            seen = _crop_like_reference(truth.frames, box, size)
            if keep:
                write_mp4(folder / "truth" / f"{name}.mp4", seen, fps, truth.audio)
            scores = {
                "truth": score_frames(seen, identity, envelope),
                "truth_vae": score_frames(vae_only.through_vae(seen), identity, envelope),
            }
            for source, use_audio in (("model", True), ("audio_free", False)):
                out = folder / source / f"{name}.mp4"
                run = dataclasses.replace(settings, use_audio=use_audio)
                sample_video(bundle, rest, audio, out, run, progress=progress, provenance=False)
                scores[source] = score_frames(np.stack(list(read_frames(out, fps))), identity, envelope)
            results.append(PairResult(identity_seed, audio_seed, **scores))
    return results


def sharpness(frame: np.ndarray) -> float:
    """Variance of the Laplacian of the gray frame (higher is sharper)."""
    gray = frame.astype(np.float64).mean(-1)
    laplacian = gray[1:-1, :-2] + gray[1:-1, 2:] + gray[:-2, 1:-1] + gray[2:, 1:-1] - 4 * gray[1:-1, 1:-1]
    return float(laplacian.var())


def drift(checkpoint: str | Path, *, seconds: float = 60.0, window: float = 10.0, progress: bool = True, **sampling):
    """One long video (held-out identity and speech): skin colour error and sharpness over the first and the last
    `window` seconds, and the last window's change relative to the first (0.1 = 10% worse)."""
    import soundfile

    from emo_jax.data.video import read_frames
    from emo_jax.sample import SamplingSettings, load_bundle, sample_video

    bundle = load_bundle(checkpoint)
    fps = float(bundle.config.data.fps)
    identity_seed, audio_seed = synthetic.HELD_OUT_IDENTITIES[1], synthetic.HELD_OUT_AUDIO[1]
    identity = synthetic.Identity.sample(identity_seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rest = synthetic.write_rest_image(identity_seed, tmp / "rest.png")
        waveform, _ = synthetic.speech_audio(seconds, audio_seed)
        soundfile.write(tmp / "speech.wav", waveform, SAMPLE_RATE)
        settings = SamplingSettings.from_config(bundle.config, **sampling)
        sample_video(bundle, rest, tmp / "speech.wav", tmp / "long.mp4", settings, progress=progress, provenance=False)
        frames = np.stack(list(read_frames(tmp / "long.mp4", fps)))
    n = int(window * fps)
    result = {}
    for name, part in (("first", frames[:n]), ("last", frames[-n:])):
        measured = [synthetic.measure_frame(f, identity) for f in part]
        found = [m for m in measured if m["skin"] is not None]
        result[name] = {
            "colour_error": float(np.mean([np.abs(np.asarray(m["skin"]) - identity.skin).max() for m in found]))
            if found
            else 1.0,
            "face_found": len(found) / len(part),
            "sharpness": float(np.mean([sharpness(f) for f in part])),
        }
    first, last = result["first"], result["last"]
    result["change"] = {
        "colour_error": (last["colour_error"] - first["colour_error"]) / max(first["colour_error"], 1e-6),
        "sharpness": (first["sharpness"] - last["sharpness"]) / max(first["sharpness"], 1e-6),
    }
    return result


def summary(results: list[PairResult]) -> dict[str, dict[str, float]]:
    """Mean of each score over the pairs, per source (SOURCES)."""
    return {source: {s: float(np.mean([getattr(r, source)[s] for r in results])) for s in SCORES} for source in SOURCES}


def table(means: dict[str, dict[str, float]]) -> str:
    rows = ["| source | " + " | ".join(SCORES) + " |", "|---" * (len(SCORES) + 1) + "|"]
    for source, scores in means.items():
        rows.append(f"| {source} | " + " | ".join(f"{scores[s]:.3f}" for s in SCORES) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emo_jax.eval.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="training workdir, step folder or exported bundle")
    parser.add_argument("--pairs", type=int, default=4, help="held-out (identity, audio) pairs")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--sampler", choices=["ddim", "dpm++"])
    parser.add_argument("--guidance-audio", type=float)
    parser.add_argument("--guidance-ref", type=float)
    parser.add_argument("--strength", type=float, help="image-to-image start (default: the model's)")
    parser.add_argument("--noise-shared", type=float, help="noise common to a video's frames (default: the model's)")
    parser.add_argument("--json", help="write the per-pair scores and their means here")
    parser.add_argument("--drift", type=float, help="instead: one video this many seconds long, first vs last 10 s")
    args = parser.parse_args(argv)
    sampling = dict(
        steps=args.steps,
        sampler=args.sampler,
        guidance_audio=args.guidance_audio,
        guidance_reference=args.guidance_ref,
        strength=args.strength,
        noise_shared=args.noise_shared,
    )
    if args.drift:
        report = drift(args.checkpoint, seconds=args.drift, **sampling)
        print(json.dumps(report, indent=1))
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        return
    results = evaluate(args.checkpoint, pairs=args.pairs, seconds=args.seconds, **sampling)
    means = summary(results)
    print(table(means))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"pairs": [dataclasses.asdict(r) for r in results], "means": means}, indent=1) + "\n"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
