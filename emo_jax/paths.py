"""Local paths and bucket URLs (gs://, s3://) as one kind of path: `etils.epath`, which Orbax and grain use too.

gs:// needs `gcsfs` (the `gcs` extra) where TensorFlow is not installed.
"""

from __future__ import annotations

import os
import pathlib
import tempfile

from etils import epath


def location(path: str | os.PathLike) -> epath.Path:
    """`path` as an epath.Path: a URL as it is, a local path made absolute."""
    text = os.fspath(path)
    return epath.Path(text) if is_remote(text) else epath.Path(os.path.abspath(text))


def as_path(path: str | os.PathLike) -> pathlib.Path | epath.Path:
    """A pathlib.Path for a local path (as given), an epath.Path for a URL: for code that local tools (ffmpeg,
    numpy) also read, which want real local paths."""
    return epath.Path(os.fspath(path)) if is_remote(path) else pathlib.Path(path)


def is_remote(path: str | os.PathLike) -> bool:
    """True for a URL such as gs://bucket/run (anything with a scheme), False for a local path."""
    return "://" in os.fspath(path)


def local_copy(path: str | os.PathLike) -> str:
    """A local path to read `path` from: itself when local, else a copy of the remote file or folder in this
    machine's temporary folder (made once per process; for inputs that only local readers open: diffusers and
    AnimateDiff weights, wav2vec2 folders)."""
    text = os.fspath(path)
    if not is_remote(text):
        return text
    if text not in _COPIES:
        source = epath.Path(text)
        if not source.exists():
            raise FileNotFoundError(f"{text}: not found")
        target = epath.Path(tempfile.mkdtemp(prefix="emo-jax-copy-")) / source.name
        _copy(source, target)
        _COPIES[text] = str(target)
    return _COPIES[text]


def _copy(source: epath.Path, target: epath.Path) -> None:
    if not source.is_dir():
        source.copy(target)
        return
    target.mkdir(parents=True, exist_ok=True)
    for child in source.iterdir():
        _copy(child, target / child.name)


_COPIES: dict[str, str] = {}
