"""Builds this package's C++ kernels (XLA FFI handlers) for the machine it runs on, at first use.

A kernel is one `.cc` file beside this module, compiled with the system's C++ compiler against the XLA FFI
headers that jaxlib ships (`jax.ffi.include_dir()`), with `-march=native`, into a shared library cached under
`$EMO_JAX_CACHE_DIR` (else `$XDG_CACHE_HOME/emo-jax`, else `~/.cache/emo-jax`). The cache key covers the source,
the flags, the compiler, jaxlib's version and the CPU, so a library is never loaded on a machine or jaxlib it was
not built for. Where no compiler is found or the build fails, `load` returns the reason instead, and callers use
their XLA path.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jaxlib

FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w")


def cache_dir() -> Path:
    if os.environ.get("EMO_JAX_CACHE_DIR"):
        return Path(os.environ["EMO_JAX_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "emo-jax"


def _cpu() -> str:
    """The CPU's model and feature flags (what -march=native compiles for)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine() + platform.processor()
    wanted = [line for line in lines if line.startswith(("model name", "flags", "Features", "CPU part"))]
    return "\n".join(dict.fromkeys(wanted))


def _compiler() -> tuple[str, str] | str:
    """(path, version) of $CXX or c++ / g++ / clang++, or why there is none."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["c++", "g++", "clang++"]
    for name in names:
        if path := shutil.which(name):
            try:
                version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
            except (OSError, subprocess.SubprocessError) as error:
                return f"{path} --version failed: {error}"
            return path, version
    return f"no C++ compiler found ({' / '.join(names)} not on PATH)"


@functools.cache
def load(name: str) -> ctypes.CDLL | str:
    """The kernel `name` (`emo_jax/kernels/<name>.cc`) as a loaded library, built first if its cache entry is
    missing; or the reason it cannot be had (no compiler, or the compiler's first error lines)."""
    source = Path(__file__).with_name(f"{name}.cc")
    compiler = _compiler()
    if isinstance(compiler, str):
        return compiler
    path, version = compiler
    include = jax.ffi.include_dir()
    key = hashlib.sha256(
        "\0".join([source.read_text(), " ".join(FLAGS), path, version, jaxlib.__version__, _cpu()]).encode()
    ).hexdigest()[:20]
    library = cache_dir() / "kernels" / f"{name}-{key}.so"
    if not library.exists():
        try:
            library.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=library.parent) as scratch:
                built = Path(scratch) / library.name
                command = [path, *FLAGS, "-I", include, str(source), "-o", str(built)]
                result = subprocess.run(command, capture_output=True, text=True, timeout=600)
                if result.returncode != 0:
                    first = "\n".join(result.stderr.strip().splitlines()[:5])
                    return f"building {source.name} with {path} failed:\n{first}"
                os.replace(built, library)  # atomic: processes building at once each leave a whole file
        except (OSError, subprocess.SubprocessError) as error:
            return f"building {source.name} into {library.parent} failed: {error}"
    try:
        return ctypes.cdll.LoadLibrary(str(library))
    except OSError as error:
        return f"loading {library} failed: {error}"
