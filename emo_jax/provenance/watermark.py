"""An invisible watermark in the frames of a video: a fixed 32-bit payload, spread over space and time.

Why not `invisible-watermark`'s DWT-DCT (Stable Diffusion's): it marks one image at a time, refuses images under
256x256 (the demo model's frames are 64x64) and does not survive a resize or a crop. A video gives more room:
this mark adds to every frame's brightness a smooth keyed pattern (a `GRID` x `GRID` lattice of cells in frame
coordinates, bilinear between cell centres, so the same mark at any resolution), whose sign flips every
`HOLD` frames. Each cell carries one payload bit times a keyed chip (+1/-1); each bit owns several cells.

Reading it back: frames (any size, up to `MAX_FRAMES` of them) are scaled to `READ_SIZE`; for each of the
`HOLD` ways to cut the video into runs of `HOLD` frames (a trimmed video starts anywhere), the per-pixel median
of the sign-corrected differences of neighbouring runs' means cancels the picture (and, being a median, most of
its motion) and keeps twice the mark; a high-pass (minus a Gaussian blur of one cell) removes what is left of
the picture's broad shading. That estimate is pulled back onto the cells under every crop hypothesis (the
window of the original frame the video still shows: scales 1 down to `MIN_SCALE`, offsets in steps of
`OFFSET_STEP`); the hypothesis with the strongest bit correlations wins and its signs are the bits, up to one
sign for all (which run came first is unknown): the polarity that matches the payload better. The payload
counts as found at `FOUND_BITS` of 32 matching bits or more: a video without the mark reads as found about
2.6 times in a million per reading (at least 29 of 32 fair coin flips, either polarity); `read_file` reads a
file at up to three frame rates (under 1 in 100,000).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator

import numpy as np

PAYLOAD = b"EMO\x01"  # 'EMO', mark version 1
BITS = 8 * len(PAYLOAD)
GRID = 8  # cells per side of the frame
HOLD = 4  # frames between sign flips
STRENGTH = 3.0  # peak brightness change, in 8-bit levels
READ_SIZE = 64  # frames are read at this size
MIN_SCALE, SCALE_STEP, OFFSET_STEP = 0.8, 0.025, 1 / 64
MAX_FRAMES = 3000  # two minutes at 25 fps: plenty to read the mark
FRAME_RATES = (25.0, 30.0)  # the rates emo-jax's configs make videos at
FOUND_BITS = 29
_KEY = 0x454D4F  # the keyed layout below; changing it unmarks every video made before


def payload_bits(payload: bytes = PAYLOAD) -> np.ndarray:
    """[BITS] of 0/1, most significant bit first."""
    return np.unpackbits(np.frombuffer(payload, np.uint8))


def _layout() -> tuple[np.ndarray, np.ndarray]:
    """(bit of each cell [GRID, GRID] int, chip of each cell [GRID, GRID] +1/-1): every bit owns the same
    number of cells, at keyed places."""
    rng = np.random.default_rng(_KEY)
    cells = GRID * GRID
    bit = np.resize(np.arange(BITS), cells)[rng.permutation(cells)].reshape(GRID, GRID)
    chip = rng.choice(np.array([-1.0, 1.0]), size=(GRID, GRID))
    return bit, chip


def _interpolation(positions: np.ndarray) -> np.ndarray:
    """[N, GRID] bilinear weights of the cell centres at `positions` (fractions of the frame side, [N]); flat
    beyond the outer centres."""
    centre = np.clip(positions * GRID - 0.5, 0, GRID - 1)
    low = np.minimum(np.floor(centre).astype(int), GRID - 2)
    frac = centre - low
    weights = np.zeros((len(positions), GRID))
    weights[np.arange(len(positions)), low] = 1 - frac
    weights[np.arange(len(positions)), low + 1] = frac
    return weights


def _pixel_centres(n: int) -> np.ndarray:
    return (np.arange(n) + 0.5) / n


def pattern(height: int, width: int, payload: bytes = PAYLOAD) -> np.ndarray:
    """[height, width] float in [-1, 1]: the mark of one frame, before its sign and `STRENGTH`."""
    bit, chip = _layout()
    cells = chip * (2.0 * payload_bits(payload)[bit] - 1)
    return _interpolation(_pixel_centres(height)) @ cells @ _interpolation(_pixel_centres(width)).T


def sign(frame_index: int) -> float:
    """+1 or -1: the mark's sign in frame `frame_index` (counted from the video's first frame)."""
    return 1.0 if (frame_index // HOLD) % 2 == 0 else -1.0


class Marker:
    """Adds the mark to frames in order: `marker(frame)` for frame 0, 1, 2, ... of one video ([H, W, 3] uint8
    -> the same, marked)."""

    def __init__(self, payload: bytes = PAYLOAD, strength: float = STRENGTH):
        self.payload, self.strength, self.count = payload, strength, 0
        self._pattern: np.ndarray | None = None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if self._pattern is None or self._pattern.shape != frame.shape[:2]:
            self._pattern = pattern(*frame.shape[:2], payload=self.payload)
        delta = self.strength * sign(self.count) * self._pattern
        self.count += 1
        return np.clip(np.rint(frame.astype(np.float32) + delta[..., None]), 0, 255).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class Reading:
    """What `read` found: the decoded bits, how many match the payload, and where the mark sat."""

    bits: np.ndarray  # [BITS] 0/1
    matching: int
    window: tuple[float, float, float, float]  # (x, y, width, height) of the original frame, as fractions
    phase: int  # the frame where the video's first whole run starts, + HOLD if that run's sign is negative
    frames: int
    fps: float = 0.0  # the rate the file was read at (0: frames given directly)

    @property
    def accuracy(self) -> float:
        return self.matching / BITS

    @property
    def found(self) -> bool:
        return self.matching >= FOUND_BITS

    @property
    def payload(self) -> bytes:
        return np.packbits(self.bits.astype(np.uint8)).tobytes()


def _windows() -> list[tuple[float, float]]:
    """(offset, scale) along one side of the frame: the part of the original side a cropped video shows."""
    out = []
    for scale in np.arange(1.0, MIN_SCALE - 1e-9, -SCALE_STEP):
        out += [(offset, scale) for offset in np.arange(0.0, 1.0 - scale + 1e-9, OFFSET_STEP)]
    return out


def _luma(frame: np.ndarray) -> np.ndarray:
    return frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def demodulate(frames: Iterable[np.ndarray]) -> tuple[np.ndarray, int]:
    """([HOLD, READ_SIZE, READ_SIZE] the mark's estimate for each way to cut the video into runs (offset 0 ..
    HOLD - 1), zeros where the video is too short; the frames read). Frames: [READ_SIZE, READ_SIZE, 3] uint8."""
    from scipy.ndimage import gaussian_filter

    luma = np.stack([_luma(f) for f in itertools.islice(frames, MAX_FRAMES)] or [np.zeros((READ_SIZE,) * 2)])
    count = len(luma)
    estimates = np.zeros((HOLD, READ_SIZE, READ_SIZE))
    for offset in range(HOLD):
        runs = (count - offset) // HOLD
        if runs < 2:
            continue
        means = luma[offset : offset + runs * HOLD].reshape(runs, HOLD, READ_SIZE, READ_SIZE).mean(1)
        signs = np.where(np.arange(runs - 1) % 2 == 0, 1.0, -1.0)[:, None, None]
        estimate = np.median(signs * (means[:-1] - means[1:]), axis=0)
        estimates[offset] = estimate - gaussian_filter(estimate, READ_SIZE / GRID)
    return estimates, count


def decode(estimates: np.ndarray, frames: int) -> Reading:
    """The strongest reading of `estimates` ([HOLD, READ_SIZE, READ_SIZE], from `demodulate`) over every way to
    cut the video into runs and every crop window."""
    bit, chip = _layout()
    owner = np.zeros((BITS, GRID * GRID))  # [bit, cell]: the cell's chip where the bit owns it
    owner[bit.ravel(), np.arange(GRID * GRID)] = chip.ravel()
    windows = _windows()
    pull = np.stack([_interpolation(offset + scale * _pixel_centres(READ_SIZE)) for offset, scale in windows])
    # cells[p, wy, wx] = pull[wy].T @ estimates[p] @ pull[wx]: the estimate pulled back onto the cells
    rows = np.einsum("yhi,phw->pyiw", pull, estimates)
    cells = np.einsum("pyiw,xwj->pyxij", rows, pull).reshape(*rows.shape[:2], len(windows), GRID * GRID)
    correlation = cells @ owner.T  # [phase, wy, wx, bit]
    strength = np.abs(correlation).sum(-1)
    p, wy, wx = np.unravel_index(np.argmax(strength), strength.shape)
    bits = (correlation[p, wy, wx] > 0).astype(np.uint8)
    matching = int((bits == payload_bits()).sum())
    if matching < BITS - matching:  # the other polarity: the video's first run was a negative one
        bits, matching, p = 1 - bits, BITS - matching, p + HOLD
    (x, sx), (y, sy) = windows[wx], windows[wy]
    return Reading(bits, matching, (float(x), float(y), float(sx), float(sy)), int(p), frames)


def read(frames: Iterable[np.ndarray]) -> Reading:
    """Reads the mark from a video's frames ([READ_SIZE, READ_SIZE, 3] uint8, in order)."""
    return decode(*demodulate(frames))


def frames_of(path, fps: float | None = None) -> Iterator[np.ndarray]:
    """A video file's frames at `READ_SIZE` (area filter), at its own frame rate unless `fps` is given."""
    from emo_jax.data.video import probe, read_frames

    return read_frames(path, fps or probe(path).fps, size=(READ_SIZE, READ_SIZE))


def read_file(path) -> Reading | None:
    """The mark of a video file, read at its own frame rate and, unless found there, at each of `FRAME_RATES`
    (a video converted to another rate, read back at the rate it was made at, lines its flips up again): the
    reading with the most matching bits. None for a video under 2 * HOLD frames."""
    from emo_jax.data.video import probe

    own = probe(path).fps
    best = None
    for fps in (own, *(rate for rate in FRAME_RATES if abs(rate - own) > 0.01)):
        estimates, frames = demodulate(frames_of(path, fps))
        if frames < 2 * HOLD:
            return best
        reading = dataclasses.replace(decode(estimates, frames), fps=fps)
        if best is None or reading.matching > best.matching:
            best = reading
        if best.found:
            break
    return best
