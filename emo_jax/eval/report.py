"""`emo-jax eval`: the EMO paper's table (Table 1) for a folder of generated videos against the real ones.

    emo-jax eval --generated out/ --real hdtf_test/ --metrics fid,fvd,sync,fsim,efid --inception pt_inception.pth \
        --i3d i3d_pretrained_400.pt --syncnet syncnet_v2.model --arcface backbone.pth --face3d epoch_20.pth \
        [--reference refs/] [--out r.json]
    emo-jax eval --synthetic [--checkpoint DIR]   (the whole evaluation on the synthetic corpus, random networks)

Videos pair by file name without extension; names on one side only are listed in the report, never dropped
silently. Frames are read at 25 fps (SyncNet's rate). Per metric:
  fid    FID of every generated frame against every real frame (pytorch-fid's Inception pool features);
  fvd    the Frechet distance of I3D logits (VideoGPT's FVD network and preprocessing) of every generated
         16-frame clip against every real one, clips cut one after another from each video's first frame;
  sync   Sync-C / Sync-D of each generated video with its own audio track (the real video's where the generated
         one has none), on syncnet_python's face crop, averaged over the videos;
  fsim   100 x cosine similarity of ArcFace embeddings of each generated frame's face with the reference face
         (`--reference DIR/<name>.png|jpg`, else the real video's first frame), averaged;
  efid   the Frechet distance of Deep3DFaceRecon's expression coefficients (64 per frame) of every generated
         frame's face against every real frame's.
Faces are found by the preprocessing detector and smoothed over 5 frames. F-SIM and E-FID crop the detected
face's square (no five-point alignment, which the detector cannot give: a departure from the networks' training
crops). Weights are read from the paths given (never downloaded); `random_networks` gives random-weight networks
whose numbers mean nothing, for exercising the pipeline (`synthetic_report` runs it all on the synthetic corpus,
beside the corpus analyser's scores).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

METRICS = ("fid", "fvd", "sync", "fsim", "efid")
FPS = 25.0
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SYNC_PAD = 110  # syncnet_python pads frames with this gray before cropping
SYNC_CROP_SCALE = 0.4
I3D_BATCH = 4  # 16-frame clips per I3D call (~100 MB of activations each)
# Table 1 of the EMO paper (HDTF): FID, Sync-C, Sync-D (not reported), F-SIM, FVD, E-FID
PAPER = {"EMO (paper)": {"FID": 8.76, "Sync-C": 3.89, "F-SIM": 78.96, "FVD": 67.66, "E-FID": 0.116}}
COLUMNS = (("FID", "lower"), ("Sync-C", "higher"), ("Sync-D", "lower"), ("F-SIM", "higher"), ("FVD", "lower"))
COLUMNS += (("E-FID", "lower"),)


@dataclasses.dataclass
class Networks:
    inception: object = None
    i3d: object = None
    syncnet: object = None
    arcface: object = None
    face3d: object = None


def parse_metrics(text: str) -> list[str]:
    """'fid,sync' -> ['fid', 'sync']; unknown names refused by name."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if unknown := [n for n in names if n not in METRICS]:
        raise ValueError(f"--metrics: unknown {', '.join(unknown)} (known: {', '.join(METRICS)})")
    return names


def load_networks(metrics: list[str], *, inception=None, i3d=None, syncnet=None, arcface=None, face3d=None) -> Networks:
    """Converted networks for `metrics` from the weight files given; a needed file missing is named."""
    from emo_jax.convert.files import read_state_dict
    from emo_jax.eval.arcface import from_arcface_state_dict
    from emo_jax.eval.face3d import from_deep3d_state_dict
    from emo_jax.eval.i3d import from_i3d_state_dict
    from emo_jax.eval.inception import from_fid_inception_state_dict
    from emo_jax.eval.syncnet import from_syncnet_state_dict

    wanted = {"fid": ("inception", inception, from_fid_inception_state_dict)}
    wanted |= {"fvd": ("i3d", i3d, from_i3d_state_dict)}
    wanted |= {"sync": ("syncnet", syncnet, from_syncnet_state_dict)}
    wanted |= {"fsim": ("arcface", arcface, from_arcface_state_dict)}
    wanted |= {"efid": ("face3d", face3d, from_deep3d_state_dict)}
    networks = Networks()
    for metric in metrics:
        field, path, convert = wanted[metric]
        if path is None:
            raise ValueError(f"--metrics {metric} needs --{field} (its weights file; README, Evaluation)")
        setattr(networks, field, convert(read_state_dict(path), source=str(path)))
    return networks


def random_networks(metrics: list[str]) -> Networks:
    """Random-weight networks (meaningless numbers): for running the pipeline without weight files."""
    from flax import nnx

    from emo_jax.eval.arcface import DEPTHS, IResNet
    from emo_jax.eval.face3d import FaceReconstruction
    from emo_jax.eval.i3d import InceptionI3d
    from emo_jax.eval.inception import FIDInceptionV3
    from emo_jax.eval.syncnet import SyncNet

    return Networks(
        inception=FIDInceptionV3(nnx.Rngs(0)) if "fid" in metrics else None,
        i3d=InceptionI3d(nnx.Rngs(4)) if "fvd" in metrics else None,
        syncnet=SyncNet(nnx.Rngs(1)) if "sync" in metrics else None,
        arcface=IResNet(DEPTHS["r18"], nnx.Rngs(2)) if "fsim" in metrics else None,
        face3d=FaceReconstruction(nnx.Rngs(3)) if "efid" in metrics else None,
    )


def pair_videos(generated: Path, real: Path) -> tuple[list[tuple[str, Path, Path]], list[str], list[str]]:
    """(pairs (name, generated, real) by file stem, names only generated, names only real)."""
    found = []
    for folder in (generated, real):
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"{folder}: no such folder of videos")
        found.append({p.stem: p for p in sorted(Path(folder).iterdir()) if p.suffix.lower() in VIDEO_SUFFIXES})
    ours, theirs = found
    pairs = [(name, ours[name], theirs[name]) for name in sorted(set(ours) & set(theirs))]
    if not pairs:
        raise ValueError(f"{generated} and {real}: no video names in common, nothing to compare")
    return pairs, sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))


def face_boxes(frames: np.ndarray) -> np.ndarray:
    """[T, H, W, 3] -> [T, 4] the followed face's box per frame, gaps filled, smoothed over 5 frames."""
    import cv2

    from emo_jax.data.faces import OpenCVFaceDetector, fill_gaps, smooth, track_faces

    detector = OpenCVFaceDetector()
    track = track_faces([detector.detect(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)) for f in frames])
    if np.isnan(track.boxes).all():
        h, w = frames.shape[1:3]  # no face anywhere: the whole frame (a face-centred clip, as ours are)
        return np.tile(np.array([[0, 0, w, h]], np.float32), (len(frames), 1))
    return smooth(fill_gaps(track.boxes), 5)


def sync_crops(frames: np.ndarray, boxes: np.ndarray, size: int = 224) -> np.ndarray:
    """syncnet_python's crop: a square of 2.8 half-sides around the face, centred on it across and reaching
    from one half-side above its centre to 1.8 below (the mouth in the lower part), gray beyond the frame."""
    from PIL import Image

    crops = []
    for frame, (x0, y0, x1, y1) in zip(frames, boxes):
        half = max(x1 - x0, y1 - y0) / 2
        pad = int(half * (1 + 2 * SYNC_CROP_SCALE)) + 1
        padded = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), constant_values=SYNC_PAD)
        cx, cy = (x0 + x1) / 2 + pad, (y0 + y1) / 2 + pad
        top, bottom = int(cy - half), int(cy + half * (1 + 2 * SYNC_CROP_SCALE))
        left, right = int(cx - half * (1 + SYNC_CROP_SCALE)), int(cx + half * (1 + SYNC_CROP_SCALE))
        crops.append(np.asarray(Image.fromarray(padded[top:bottom, left:right]).resize((size, size), Image.BILINEAR)))
    return np.stack(crops)


def face_crops(frames: np.ndarray, boxes: np.ndarray, size: int = 112) -> np.ndarray:
    """The detected face's square (its box's longer side, centred), resized to `size` (F-SIM's input)."""
    from PIL import Image

    crops = []
    for frame, (x0, y0, x1, y1) in zip(frames, boxes):
        half = max(x1 - x0, y1 - y0) / 2
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        box = tuple(int(round(v)) for v in (cx - half, cy - half, cx + half, cy + half))
        crops.append(np.asarray(Image.fromarray(frame).crop(box).resize((size, size), Image.BILINEAR)))
    return np.stack(crops)


def _batched(forward: Callable, inputs: np.ndarray, batch: int, divisor: float = 1.0) -> np.ndarray:
    """`forward` over `inputs` (uint8 frames or crops) `batch` items at a time, each batch made float32 and divided
    by `divisor` only when its turn comes, so a long video is never held in float32 whole."""
    import jax.numpy as jnp

    return np.concatenate(
        [
            np.asarray(forward(jnp.asarray(inputs[i : i + batch], jnp.float32) / divisor))
            for i in range(0, len(inputs), batch)
        ]
    )


def _frechet(features: dict[str, list[np.ndarray]]) -> float:
    """The Frechet distance between the generated and the real side's features (each a list of [N, D] arrays)."""
    from emo_jax.eval.frechet import Gaussian, frechet_distance

    generated, real = (Gaussian.of(np.concatenate(features[side])) for side in ("generated", "real"))
    return frechet_distance(generated, real)


def _reference_image(name: str, folder: Path | None, real_frames: np.ndarray) -> np.ndarray:
    from emo_jax.sample.inputs import read_image

    if folder is not None:
        for suffix in IMAGE_SUFFIXES:
            if (folder / f"{name}{suffix}").is_file():
                return read_image(folder / f"{name}{suffix}")
        raise FileNotFoundError(f"{folder}: no reference image for {name} ({', '.join(IMAGE_SUFFIXES)})")
    return real_frames[0]


def _clip_count(path: Path) -> int | None:
    """16-frame clips in a video at FPS, from its duration (None where the file does not say it)."""
    from emo_jax.data.video import probe
    from emo_jax.eval.i3d import CLIP_FRAMES

    duration = probe(path).duration
    return int(round(duration * FPS)) // CLIP_FRAMES if duration > 0 else None


def _check_fvd_clips(counts: dict[str, int]) -> None:
    from emo_jax.eval.i3d import CLIP_FRAMES

    if min(counts.values()) < 2:
        raise ValueError(
            f"FVD needs at least 2 clips of {CLIP_FRAMES} frames ({CLIP_FRAMES / FPS:.2f} s) on each side; "
            f"the videos give {counts['generated']} generated and {counts['real']} real"
        )


def evaluate(
    generated: Path,
    real: Path,
    metrics: list[str],
    networks: Networks,
    *,
    reference: Path | None = None,
    batch: int = 16,
    progress: bool = True,
) -> dict:
    """The report: {'metrics': {column: value}, 'videos': [...per pair...], 'pairs', 'only_generated',
    'only_real'}."""
    from tqdm import tqdm

    from emo_jax.audio import load_audio
    from emo_jax.audio.loading import AudioError
    from emo_jax.data.video import read_frames
    from emo_jax.eval.arcface import face_similarity
    from emo_jax.eval.i3d import CLIP_FRAMES, clips_of
    from emo_jax.eval.sync import sync_scores

    pairs, only_generated, only_real = pair_videos(generated, real)
    if "fvd" in metrics:  # refused before hours of work, from the files' durations (where all are known)
        counts = {side: [_clip_count(pair[i]) for pair in pairs] for i, side in ((1, "generated"), (2, "real"))}
        if None not in counts["generated"] + counts["real"]:
            _check_fvd_clips({side: sum(found) for side, found in counts.items()})
    features = {"generated": [], "real": []}
    clip_logits = {"generated": [], "real": []}
    expressions = {"generated": [], "real": []}
    per_video = []
    for name, ours, theirs in tqdm(pairs, desc="emo-jax eval", unit="video", disable=not progress):
        frames = np.stack(list(read_frames(ours, FPS)))
        truth = np.stack(list(read_frames(theirs, FPS)))
        row = {"name": name, "frames": len(frames)}
        if "fid" in metrics:
            for side, video in (("generated", frames), ("real", truth)):
                features[side].append(_batched(networks.inception, video, batch, divisor=255))
        if "fvd" in metrics:
            for side, video in (("generated", frames), ("real", truth)):
                clips = clips_of(video)
                if len(clips):
                    clip_logits[side].append(_batched(networks.i3d, clips, I3D_BATCH, divisor=255))
            row["clips"] = len(frames) // CLIP_FRAMES
        if "sync" in metrics or "fsim" in metrics or "efid" in metrics:
            boxes = face_boxes(frames)
        if "sync" in metrics:
            try:
                audio = load_audio(ours)
            except AudioError:  # a generated video without sound: its real counterpart's
                audio = load_audio(theirs)
            result = sync_scores(networks.syncnet, sync_crops(frames, boxes).astype(np.float32), audio, batch)
            row |= {"Sync-C": result.confidence, "Sync-D": result.distance, "offset": result.offset}
        if "fsim" in metrics:
            image = _reference_image(name, reference, truth)
            face = face_crops(image[None], face_boxes(image[None]))[0]
            similarity = face_similarity(networks.arcface, face_crops(frames, boxes).astype(np.float32), face)
            row["F-SIM"] = float(similarity.mean())
        if "efid" in metrics:
            for side, video, found in (("generated", frames, boxes), ("real", truth, face_boxes(truth))):
                crops = face_crops(video, found, size=224)
                expressions[side].append(_batched(networks.face3d.expression, crops, batch))
        per_video.append(row)
    summary = {}
    if "fid" in metrics:
        summary["FID"] = _frechet(features)
    if "fvd" in metrics:
        _check_fvd_clips({side: sum(map(len, clip_logits[side])) for side in clip_logits})
        summary["FVD"] = _frechet(clip_logits)
    if "efid" in metrics:
        summary["E-FID"] = _frechet(expressions)
    for column in ("Sync-C", "Sync-D", "F-SIM"):
        if per_video and column in per_video[0]:
            summary[column] = float(np.mean([row[column] for row in per_video]))
    return {
        "metrics": summary,
        "pairs": len(pairs),
        "only_generated": only_generated,
        "only_real": only_real,
        "videos": per_video,
    }


def markdown(report: dict, name: str = "this run") -> str:
    """The paper's table with this run's row (metrics not computed: '-')."""

    def cell(values: dict, column: str) -> str:
        return f"{values[column]:.3f}" if column in values else "-"

    header = "| method | " + " | ".join(f"{c} ({'lower' if d == 'lower' else 'higher'} is better)" for c, d in COLUMNS)
    lines = [header + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for method, values in [*PAPER.items(), (name, report["metrics"])]:
        lines.append(f"| {method} | " + " | ".join(cell(values, c) for c, _ in COLUMNS) + " |")
    notes = [f"\n{report['pairs']} video pairs."]
    for side in ("only_generated", "only_real"):
        if report[side]:
            notes.append(f"Unpaired ({side.replace('_', ' ')}): {', '.join(report[side])}.")
    if "synthetic" in report:
        from emo_jax.eval.synthetic import table

        notes += ["\nThe corpus analyser's scores (python -m emo_jax.eval.synthetic):\n", table(report["synthetic"])]
    return "\n".join(lines + notes)


def synthetic_report(
    checkpoint: str | Path, folder: Path, metrics: list[str], *, pairs: int = 2, seconds: float = 2.0, progress=True
) -> dict:
    """The whole evaluation on the synthetic corpus: the model's videos for `pairs` held-out (identity, audio)
    pairs (kept in `folder`: `model/`, `truth/`, `audio_free/`, `reference/`) against the true ones through
    random-weight metric networks (the numbers exercise the code, they mean nothing), and under 'synthetic' the
    corpus analyser's scores of the truth, the model and its audio-free baseline."""
    from emo_jax.eval import synthetic

    results = synthetic.evaluate(checkpoint, pairs=pairs, seconds=seconds, progress=progress, keep=folder)
    networks = random_networks(metrics)
    report = evaluate(folder / "model", folder / "truth", metrics, networks, reference=folder / "reference")
    return report | {"synthetic": synthetic.summary(results)}


def write(report: dict, out: Path) -> None:
    """`out` (JSON) and `out` with .md (the table)."""
    out.write_text(json.dumps(report, indent=1))
    out.with_suffix(".md").write_text(markdown(report) + "\n")
