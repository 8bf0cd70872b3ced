"""What a person sees of a training run: JSON lines, TensorBoard events (no TensorFlow), frame grids as PNG.

Only process 0 writes. Files in the workdir:
    metrics.jsonl        one line per log step: step, loss, loss per timestep bucket, lr, grad norm, step time,
                         examples/s, FLOP/s and MFU (where the device's peak is known), memory in use
    events.out.tfevents  the same scalars, and the frame grids, for TensorBoard
    images/step_N.png    predicted clean frames of the first sample (bottom row) under the truth (top row),
                         marked as AI-generated (text chunks, a C2PA manifest)
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from etils import epath

from emo_jax.paths import is_remote, location
from emo_jax.provenance.credentials import sign_file
from emo_jax.provenance.metadata import png_info

log = logging.getLogger(__name__)

# Dense bf16 peak FLOP/s per device, by `device_kind` prefix (vendor datasheets); others report no MFU.
PEAK_FLOPS = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100": 312e12,
}
TIMESTEP_BUCKETS = 4  # loss per quarter of the timestep range


def peak_flops(device: jax.Device) -> float | None:
    kind = getattr(device, "device_kind", "")
    return next((v for k, v in PEAK_FLOPS.items() if kind.startswith(k)), None)


def memory_in_use() -> float:
    """Bytes in use on the first local device (accelerators), else this process's resident memory (CPU)."""
    stats = jax.local_devices()[0].memory_stats()
    if stats and "bytes_in_use" in stats:
        return float(stats["bytes_in_use"])
    with open("/proc/self/statm") as f:
        return float(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))


def timestep_buckets(losses: np.ndarray, timesteps: np.ndarray, num_train_timesteps: int) -> dict[str, float]:
    """Mean per-sample loss in each quarter of [0, T): {'loss_t0-249': ..., ...} for the buckets seen."""
    width = num_train_timesteps // TIMESTEP_BUCKETS
    out = {}
    for i in range(TIMESTEP_BUCKETS):
        seen = (timesteps >= i * width) & (timesteps < (i + 1) * width)
        if seen.any():
            out[f"loss_t{i * width}-{(i + 1) * width - 1}"] = float(losses[seen].mean())
    return out


def frame_grid(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """[F, S, S, 3] x2 in [-1, 1] -> [2S, F*S, 3] uint8: truth on top, prediction below."""
    rows = [np.concatenate(list(frames), axis=1) for frames in (truth, predicted)]
    return np.clip((np.concatenate(rows, axis=0) + 1) * 127.5, 0, 255).round().astype(np.uint8)


class MetricWriter:
    """JSON lines + TensorBoard + PNG grids in `workdir`; a no-op on every process but 0.

    A bucket workdir (gs://...; objects there cannot be appended to) is written through a local folder whose
    changed files are uploaded at most every `upload_every` seconds and at `close`; a resumed run first fetches
    the metrics.jsonl it continues.
    """

    def __init__(self, workdir: str | os.PathLike, *, upload_every: float = 60.0):
        self.workdir = location(workdir)
        self.active = jax.process_index() == 0
        if not self.active:
            return
        from tensorboardX import SummaryWriter

        self.remote = is_remote(workdir)
        self.local = Path(tempfile.mkdtemp(prefix="emo-jax-logs-")) if self.remote else Path(self.workdir)
        self.local.mkdir(parents=True, exist_ok=True)
        if self.remote and (self.workdir / "metrics.jsonl").exists():
            (self.workdir / "metrics.jsonl").copy(epath.Path(self.local / "metrics.jsonl"))
        self.upload_every, self.uploaded_at, self.uploaded = upload_every, time.monotonic(), {}
        self.jsonl = open(self.local / "metrics.jsonl", "a")
        self.tensorboard = SummaryWriter(str(self.local))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.active:
            return
        self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self.jsonl.flush()
        for name, value in values.items():
            self.tensorboard.add_scalar(name, value, step)
        self._upload()

    def image(self, step: int, grid: np.ndarray) -> epath.Path | None:
        """Writes the grid [H, W, 3] uint8 as images/step_<step>.png (marked as AI-generated: text chunks and a
        C2PA manifest signed by the local signer) and to TensorBoard. -> its path in the workdir."""
        if not self.active:
            return None
        from PIL import Image

        name = f"images/step_{step:07d}.png"
        (self.local / "images").mkdir(exist_ok=True)
        Image.fromarray(grid).save(self.local / name, pnginfo=png_info())
        try:
            sign_file(self.local / name, {"training_step": step})
        except (OSError, ValueError) as error:  # e.g. no writable config folder for the local key: train on
            log.warning("frame grid %s left without content credentials: %s", name, error)
        self.tensorboard.add_image("predicted_frames", grid, step, dataformats="HWC")
        self._upload()
        return self.workdir / name

    def _upload(self, force: bool = False) -> None:
        """Copies the local files changed since their last upload to a bucket workdir (every `upload_every` s)."""
        if not self.remote or not (force or time.monotonic() - self.uploaded_at >= self.upload_every):
            return
        self.tensorboard.flush()
        for file in sorted(p for p in self.local.rglob("*") if p.is_file()):
            stamp = file.stat().st_mtime_ns, file.stat().st_size
            if self.uploaded.get(file) != stamp:
                target = self.workdir / file.relative_to(self.local).as_posix()
                target.parent.mkdir(parents=True, exist_ok=True)
                epath.Path(file).copy(target, overwrite=True)
                self.uploaded[file] = stamp
        self.uploaded_at = time.monotonic()

    def close(self) -> None:
        if self.active:
            self.jsonl.close()
            self.tensorboard.close()
            self._upload(force=True)
