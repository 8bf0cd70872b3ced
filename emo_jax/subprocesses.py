"""Running external programs (the ffmpeg bundled in imageio-ffmpeg) from a process that has started JAX."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def exec_after_fork() -> Iterator[None]:
    """Silences JAX's warning on fork for subprocesses that fork and immediately exec, which cannot deadlock."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        yield
