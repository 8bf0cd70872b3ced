"""Running external programs (the ffmpeg bundled in imageio-ffmpeg) from a process that has started JAX."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def exec_after_fork() -> Iterator[None]:
    """Silences JAX's warning on fork for subprocesses that fork and immediately exec, which cannot deadlock.

    imageio-ffmpeg starts ffmpeg in its own process group (`preexec_fn=os.setpgrp`, so Ctrl-C reaches only
    Python) unless IMAGEIO_FFMPEG_NO_PREVENT_SIGINT is set; a preexec_fn makes Python fork and run code in the
    child before exec, where gRPC's fork handlers (in Apache Beam's workers) broke ffmpeg starts ("not a
    readable video") in 4 of 6 Beam runs over the test corpus, and in none of 5 with it set. Set, Python can
    vfork and exec at once; Ctrl-C then stops ffmpeg too, which every caller handles (a reader fails, a writer
    leaves no file)."""
    os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        yield
