"""A synthetic talking-face corpus whose truth we know (../shared/DESIGN.md section 4).

Each video: a parametric 2D face (an `Identity`), speech- or singing-like audio whose loudness drives the mouth
opening (the mouth leads the sound by `MOUTH_LEAD_FRAMES`) and whose vowels drive its shape (wide vs round),
smooth head motion whose speed changes over time, and blinks. `write_video` saves an MP4 with the audio muxed
in and a sidecar JSON of the per-frame truth; `measure_frame` reads a frame back (mouth opening, face box,
skin colour), so generated videos can be scored the same way.

Held out for evaluation (never use them for training): identity seeds `HELD_OUT_IDENTITIES` and audio seeds
`HELD_OUT_AUDIO`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from emo_jax.audio.loading import SAMPLE_RATE
from emo_jax.data.video import write_mp4

HELD_OUT_IDENTITIES = range(10_000, 10_016)
HELD_OUT_AUDIO = range(20_000, 20_016)
MOUTH_LEAD_FRAMES = 1  # the mouth opens one frame before the sound (a small lead the model must learn)
MOUTH_COLOUR = (0.45, 0.08, 0.12)

# Vowels: (F1, F2) formants in Hz, and how round the lips are (0 wide .. 1 round).
VOWELS = {
    "a": (800, 1200, 0.2),
    "e": (500, 1900, 0.0),
    "i": (300, 2300, 0.0),
    "o": (500, 900, 0.8),
    "u": (320, 800, 1.0),
}


@dataclasses.dataclass(frozen=True)
class Identity:
    """Face geometry (fractions of the frame size) and colours (RGB in [0, 1])."""

    seed: int
    face_rx: float
    face_ry: float
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    eyes: tuple[float, float, float]
    background: tuple[float, float, float]
    eye_dx: float
    eye_dy: float
    mouth_dy: float
    mouth_w: float
    mouth_h: float  # half-height of the fully open mouth

    @classmethod
    def sample(cls, seed: int) -> Identity:
        """A random identity; colours are redrawn until skin and mouth stand apart from everything else by at
        least `COLOUR_SEPARATION` (what `measure_frame` relies on)."""
        rng = np.random.default_rng([seed, 1])
        while True:
            skin = rng.uniform([0.45, 0.3, 0.2], [0.95, 0.8, 0.7])
            hair, eyes = rng.uniform(0.0, 0.5, 3), rng.uniform(0.0, 0.3, 3)
            background = rng.uniform(0.55, 1.0, 3) * rng.choice([0.4, 1.0])
            others = [hair, eyes, background]
            if _separated(skin, [*others, np.array(MOUTH_COLOUR)]) and _separated(np.array(MOUTH_COLOUR), others):
                break
        return cls(
            seed=seed,
            face_rx=float(rng.uniform(0.17, 0.22)),
            face_ry=float(rng.uniform(0.23, 0.28)),
            skin=_rgb(skin),
            hair=_rgb(hair),
            eyes=_rgb(eyes),
            background=_rgb(background),
            eye_dx=float(rng.uniform(0.06, 0.08)),
            eye_dy=float(rng.uniform(0.05, 0.07)),
            mouth_dy=float(rng.uniform(0.1, 0.13)),
            mouth_w=float(rng.uniform(0.05, 0.07)),
            mouth_h=float(rng.uniform(0.03, 0.04)),
        )


COLOUR_SEPARATION = 0.25  # max-channel distance; measure_frame's tolerance is below half of it


def _separated(colour: np.ndarray, others: list[np.ndarray]) -> bool:
    return all(np.abs(colour - other).max() >= COLOUR_SEPARATION for other in others)


def _rgb(colour: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(c) for c in np.clip(colour, 0, 1))


def speech_audio(
    seconds: float, seed: int, *, singing: bool = False
) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """Voiced syllables (glottal pulses through vowel formants) with pauses and pitch contours; singing holds
    vowels longer at steadier pitch. -> (waveform [S] float32 at 16 kHz in [-1, 1], [(start s, end s, vowel)])."""
    from scipy.signal import lfilter

    rng = np.random.default_rng([seed, 2])
    n = int(seconds * SAMPLE_RATE)
    audio = np.zeros(n)
    syllables = []
    t = float(rng.uniform(0.1, 0.3))
    while t < seconds - 0.1:
        duration = float(rng.uniform(0.4, 0.9) if singing else rng.uniform(0.12, 0.3))
        end = min(t + duration, seconds)
        vowel = str(rng.choice(list(VOWELS)))
        f1, f2, _ = VOWELS[vowel]
        i0, i1 = int(t * SAMPLE_RATE), int(end * SAMPLE_RATE)
        local = np.arange(i1 - i0) / SAMPLE_RATE
        base = rng.uniform(180, 320) if singing else rng.uniform(100, 220)
        f0 = base * (1 + (0.02 if singing else 0.15) * np.sin(2 * np.pi * rng.uniform(0.5, 3) * local))
        pulses = (np.diff(np.floor(np.cumsum(f0) / SAMPLE_RATE), prepend=0) > 0).astype(np.float64)
        voiced = np.zeros_like(pulses)
        for formant, bandwidth in ((f1, 90), (f2, 110), (2700, 150)):
            r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
            voiced += lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * formant / SAMPLE_RATE), r * r], pulses)
        envelope = np.sin(np.pi * np.linspace(0, 1, voiced.size)) ** 0.5 * rng.uniform(0.5, 1.0)
        audio[i0:i1] += voiced * envelope
        syllables.append((t, end, vowel))
        pause = rng.uniform(0.02, 0.08) if rng.random() < 0.7 else rng.uniform(0.2, 0.5)
        t = end + float(pause)
    audio += 0.003 * rng.standard_normal(n)
    return (0.9 * audio / np.abs(audio).max()).astype(np.float32), syllables


def mouth_from_audio(
    audio: np.ndarray, syllables: list[tuple[float, float, str]], fps: float, num_frames: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame mouth opening in [0, 1] (the loudness envelope, leading by `MOUTH_LEAD_FRAMES`) and roundness."""
    hop = SAMPLE_RATE / fps
    rms = np.array([np.sqrt(np.mean(audio[int(f * hop) : int((f + 1) * hop)] ** 2) + 1e-12) for f in range(num_frames)])
    opening = np.clip(rms / np.percentile(rms, 95), 0, 1)
    opening = np.concatenate([opening[MOUTH_LEAD_FRAMES:], np.repeat(opening[-1:], MOUTH_LEAD_FRAMES)])
    roundness = np.zeros(num_frames)
    for start, end, vowel in syllables:
        roundness[int(start * fps) : int(end * fps) + 1] = VOWELS[vowel][2]
    return opening, roundness[:num_frames]


def head_motion(num_frames: int, fps: float, seed: int) -> dict[str, np.ndarray]:
    """Smooth yaw/pitch/roll (degrees) and translation (fraction of the frame) whose speed changes over time;
    rotation speed in degrees per frame; blinks in [0, 1]."""
    rng = np.random.default_rng([seed, 3])
    t = np.arange(num_frames) / fps
    activity = 0.2 + 1.8 * (0.5 + 0.5 * np.sin(2 * np.pi * t / rng.uniform(3, 6) + rng.uniform(0, 6)))  # speed varies

    def smooth_curve(amplitude: float) -> np.ndarray:
        velocity = np.convolve(rng.standard_normal(num_frames + 24), np.hanning(25) / 12.5, mode="valid")[:num_frames]
        curve = np.cumsum(velocity * activity) / fps * amplitude
        return amplitude * np.tanh(curve / amplitude)  # stay within +/- amplitude

    pose = {"yaw": smooth_curve(25.0), "pitch": smooth_curve(12.0), "roll": smooth_curve(10.0)}
    angles = np.stack([pose["yaw"], pose["pitch"], pose["roll"]], axis=1)
    speed = np.r_[0.0, np.linalg.norm(np.diff(angles, axis=0), axis=1)]
    blink = np.zeros(num_frames)
    frame = int(rng.uniform(0.5, 2.0) * fps)
    while frame < num_frames - 3:
        blink[frame : frame + 3] = (0.6, 1.0, 0.6)
        frame += int(rng.uniform(2.0, 5.0) * fps)
    return {**pose, "tx": smooth_curve(0.04), "ty": smooth_curve(0.03), "speed": speed, "blink": blink}


def render_frame(identity: Identity, size: int, state: dict[str, float]) -> np.ndarray:
    """One frame [size, size, 3] uint8. state: yaw, pitch, roll (deg), tx, ty, mouth_open, mouth_round, blink."""
    c = identity
    image = np.empty((size, size, 3), np.float32)
    image[:] = c.background
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    cx, cy = 0.5 + state["tx"], 0.5 + state["ty"]
    roll = np.deg2rad(state["roll"])
    # Head-centred coordinates, rolled: u to the face's right, v down.
    u = (xs - cx) * np.cos(roll) + (ys - cy) * np.sin(roll)
    v = -(xs - cx) * np.sin(roll) + (ys - cy) * np.cos(roll)
    yaw, pitch = np.deg2rad(state["yaw"]), np.deg2rad(state["pitch"])
    rx = c.face_rx * (0.85 + 0.15 * np.cos(yaw))  # foreshortened when turned
    shift_u, shift_v = c.face_rx * 0.6 * np.sin(yaw), c.face_ry * 0.5 * np.sin(pitch)  # features move on the face

    def ellipse(du: float, dv: float, ax: float, ay: float) -> np.ndarray:
        return ((u - du) / ax) ** 2 + ((v - dv) / max(ay, 1e-4)) ** 2 <= 1.0

    image[ellipse(0, -0.05, c.face_rx * 1.15, c.face_ry * 1.05)] = c.hair
    image[ellipse(0, 0, rx, c.face_ry)] = c.skin
    eye_h = 0.018 * (1.0 - 0.9 * state["blink"])
    for side in (-1, 1):
        image[ellipse(shift_u + side * c.eye_dx, shift_v - c.eye_dy, 0.022, eye_h)] = c.eyes
    mouth_w = c.mouth_w * (1.0 - 0.35 * state["mouth_round"])
    mouth_h = max(c.mouth_h * state["mouth_open"], 1.0 / size)  # closed: a one-pixel line
    image[ellipse(shift_u, shift_v + c.mouth_dy, mouth_w, mouth_h)] = MOUTH_COLOUR
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


@dataclasses.dataclass
class SyntheticVideo:
    identity: Identity
    audio: np.ndarray  # [S] float32, 16 kHz
    frames: np.ndarray  # [F, H, W, 3] uint8
    truth: dict[str, list]  # per-frame ground truth (see `make_video`)
    fps: float


def make_video(
    identity_seed: int,
    audio_seed: int,
    *,
    seconds: float = 4.0,
    fps: float = 25.0,
    size: int = 256,
    singing: bool = False,
) -> SyntheticVideo:
    """Renders a talking face. truth per frame: box [x0, y0, x1, y1] in pixels, yaw/pitch/roll (deg),
    speed (deg/frame), mouth_open, mouth_round, blink."""
    identity = Identity.sample(identity_seed)
    audio, syllables = speech_audio(seconds, audio_seed, singing=singing)
    num_frames = int(seconds * fps)
    opening, roundness = mouth_from_audio(audio, syllables, fps, num_frames)
    motion = head_motion(num_frames, fps, identity_seed * 7919 + audio_seed)
    frames, boxes = [], []
    for f in range(num_frames):
        state = {k: float(motion[k][f]) for k in ("yaw", "pitch", "roll", "tx", "ty", "blink")}
        state.update(mouth_open=float(opening[f]), mouth_round=float(roundness[f]))
        frames.append(render_frame(identity, size, state))
        boxes.append(_true_box(identity, state, size))
    truth = {k: [round(float(x), 5) for x in motion[k]] for k in ("yaw", "pitch", "roll", "speed", "blink")}
    truth.update(mouth_open=[round(float(x), 5) for x in opening], mouth_round=[float(x) for x in roundness], box=boxes)
    return SyntheticVideo(identity, audio, np.stack(frames), truth, fps)


def _true_box(identity: Identity, state: dict[str, float], size: int) -> list[float]:
    """Pixel box of the (rolled) face ellipse, hair excluded."""
    rx = identity.face_rx * (0.85 + 0.15 * np.cos(np.deg2rad(state["yaw"])))
    ry, roll = identity.face_ry, np.deg2rad(state["roll"])
    half_w = np.hypot(rx * np.cos(roll), ry * np.sin(roll))
    half_h = np.hypot(rx * np.sin(roll), ry * np.cos(roll))
    cx, cy = 0.5 + state["tx"], 0.5 + state["ty"]
    return [round(float(v) * size, 2) for v in (cx - half_w, cy - half_h, cx + half_w, cy + half_h)]


def measure_frame(frame: np.ndarray, identity: Identity, tolerance: float = 0.12) -> dict[str, object]:
    """Reads a (rendered or generated) frame [H, W, 3] uint8 back, knowing the identity's colours.

    mouth_open: mouth-coloured area / (pi * its half-width) / the identity's open half-height (0 closed, 1 open);
    mouth_area: the soft mouth area, robust to blur (a VAE's decode): every pixel counts by how close its colour
    is to the mouth's (1 at the mouth colour, 0 at `COLOUR_SEPARATION` or further, where every other colour of
    the face lies), over the area of the identity's open mouth;
    box: [x0, y0, x1, y1] of skin-coloured pixels (None if no face); skin: their mean RGB in [0, 1].
    """
    pixels = frame.astype(np.float32) / 255.0
    size = frame.shape[0]
    skin_mask = np.abs(pixels - np.asarray(identity.skin)).max(-1) < tolerance
    mouth_mask = np.abs(pixels - np.asarray(MOUTH_COLOUR)).max(-1) < tolerance
    closeness = np.clip(1.0 - np.abs(pixels - np.asarray(MOUTH_COLOUR)).max(-1) / COLOUR_SEPARATION, 0, 1)
    open_area = np.pi * identity.mouth_w * identity.mouth_h * size * size
    result: dict[str, object] = {
        "mouth_open": 0.0,
        "mouth_area": float(closeness.sum() / open_area),
        "box": None,
        "skin": None,
    }
    if skin_mask.sum() > 20:
        ys, xs = np.nonzero(skin_mask)
        result["box"] = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
        result["skin"] = [float(c) for c in pixels[skin_mask].mean(0)]
    if mouth_mask.any():
        xs = np.nonzero(mouth_mask)[1]
        half_width = max((xs.max() - xs.min() + 1) / 2, 1.0)
        half_height = mouth_mask.sum() / (np.pi * half_width)
        result["mouth_open"] = float(np.clip((half_height - 1.0) / (identity.mouth_h * size - 1.0), 0, 1))
    return result


def write_video(video: SyntheticVideo, directory: str | Path, name: str) -> Path:
    """`name.mp4` (H.264 + AAC audio) and `name.json` (identity, seeds, fps, per-frame truth) under `directory`."""
    directory = Path(directory)
    mp4 = write_mp4(directory / f"{name}.mp4", video.frames, video.fps, video.audio)
    sidecar = {
        "identity": dataclasses.asdict(video.identity),
        "fps": video.fps,
        "num_frames": len(video.frames),
        "truth": video.truth,
    }
    (directory / f"{name}.json").write_text(json.dumps(sidecar))
    return mp4


def warped_photo_video(
    photo: np.ndarray,
    *,
    seconds: float = 3.0,
    fps: float = 25.0,
    size: int = 256,
    seed: int = 0,
    roll: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A real face that moves: `photo` [H, W, 3] rotated (roll), shifted and zoomed along smooth random curves
    (`roll` [F] degrees, if given, replaces the random roll).

    -> frames [F, size, size, 3] uint8, roll [F] degrees (clockwise on screen positive, as `faces.pose_from_eyes`).
    For preprocessing tests with a real detector (e.g. on `skimage.data.astronaut()`).
    """
    from PIL import Image

    num_frames = int(seconds * fps)
    motion = head_motion(num_frames, fps, seed)
    if roll is not None:
        motion["roll"] = np.asarray(roll, np.float64)[:num_frames]
    image = Image.fromarray(photo).resize((size, size), Image.BICUBIC)
    frames = []
    for f in range(num_frames):
        zoom = 1.15 + 2.5 * motion["tx"][f]  # 1.05 .. 1.25
        moved = image.rotate(
            -motion["roll"][f],  # PIL turns counter-clockwise on screen
            resample=Image.BICUBIC,
            translate=(motion["tx"][f] * size, motion["ty"][f] * size),
            fillcolor=(0, 0, 0),
        )
        crop = size * (1 - 1 / zoom) / 2
        frames.append(np.asarray(moved.resize((size, size), Image.BICUBIC, box=(crop, crop, size - crop, size - crop))))
    return np.stack(frames), motion["roll"].astype(np.float32)


REST_STATE = dict(yaw=0.0, pitch=0.0, roll=0.0, tx=0.0, ty=0.0, mouth_open=0.0, mouth_round=0.0, blink=0.0)


def write_rest_image(identity_seed: int, path: str | Path, size: int = 256) -> Path:
    """The identity at rest (facing the camera, mouth closed) as an image at `path`, with its face box beside it
    in `path`.json ({"box": [x0, y0, x1, y1]}), as a synthetic video's sidecar: a reference for sampling."""
    from PIL import Image

    path = Path(path)
    identity = Identity.sample(identity_seed)
    Image.fromarray(render_frame(identity, size, REST_STATE)).save(path)
    path.with_suffix(".json").write_text(json.dumps({"box": _true_box(identity, REST_STATE, size)}) + "\n")
    return path


def write_example_inputs(directory: str | Path, *, seconds: float = 4.0, size: int = 256) -> dict[str, Path]:
    """The bundled sampling example (emo_jax/assets/examples): held-out identity `HELD_OUT_IDENTITIES[0]` at rest
    (face.png + face.json) and held-out speech `HELD_OUT_AUDIO[0]` (speech.wav, 16 kHz, 16-bit)."""
    import soundfile

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    image = write_rest_image(HELD_OUT_IDENTITIES[0], directory / "face.png", size)
    waveform, _ = speech_audio(seconds, HELD_OUT_AUDIO[0])
    audio = directory / "speech.wav"
    soundfile.write(audio, waveform, SAMPLE_RATE, subtype="PCM_16")
    return {"image": image, "audio": audio}
