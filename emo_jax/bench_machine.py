"""What a benchmark must say about the machine it timed on: the CPU, and who else used it meanwhile.

On a 2-core machine PyTorch's OpenMP threads slow down several-fold when anything else runs, while XLA's slow
down less, so a ratio taken beside other work flatters JAX. `LoadMeter` reads `/proc/stat` (all processes) and
this process's own CPU time around a timed section, so a result can say how busy the machine was and by whom.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import time
from pathlib import Path

FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8")
OTHERS_WARN_SHARE = 0.1  # other processes using more than this share of the cores makes a timing suspect


def cpu_description() -> str:
    """'<model name>, N cores, flags: ...' from /proc/cpuinfo (or what the platform says elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    model, flags = "unknown CPU", set()
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    shown = [f for f in FLAGS_OF_INTEREST if f in flags]
    return f"{model}, {os.cpu_count()} cores, flags: {' '.join(shown) or 'none of ' + ' '.join(FLAGS_OF_INTEREST)}"


def _proc_stat() -> tuple[float, float, float] | None:
    """(busy, steal, total) jiffies of all CPUs, or None off Linux."""
    path = Path("/proc/stat")
    if not path.is_file():
        return None
    fields = [float(x) for x in path.read_text().splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0.0] * 8)[:8]
    busy = user + nice + system + irq + softirq + steal
    return busy, steal, busy + idle + iowait


def _own_cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclasses.dataclass
class Load:
    """Cores in use on average over `seconds`: by everything, by this process, by the others; steal (a VM's
    cores taken by the host)."""

    seconds: float
    busy: float
    own: float
    steal: float
    cores: int

    @property
    def others(self) -> float:
        return max(self.busy - self.own, 0.0)

    @property
    def suspect(self) -> bool:
        return self.others > OTHERS_WARN_SHARE * self.cores or self.steal > OTHERS_WARN_SHARE * self.cores

    def describe(self) -> str:
        text = f"cores busy {self.busy:.2f}/{self.cores} (this benchmark {self.own:.2f}, others {self.others:.2f})"
        return text + (f", steal {self.steal:.2f}" if self.steal > 0.005 else "")


class LoadMeter:
    """`with LoadMeter() as meter: ...` then `meter.load`: the machine's load over the block."""

    def __enter__(self) -> LoadMeter:
        self._stat, self._own, self._start = _proc_stat(), _own_cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        seconds = time.perf_counter() - self._start
        cores = os.cpu_count() or 1
        own = (_own_cpu_seconds() - self._own) / seconds
        stat = _proc_stat()
        if stat is None or self._stat is None:
            self.load = Load(seconds, own, own, 0.0, cores)
            return
        busy, steal, total = (b - a for a, b in zip(self._stat, stat))
        share = cores / total if total > 0 else 0.0
        self.load = Load(seconds, busy * share, own, steal * share, cores)
