"""Where a benchmark's time goes: op time by kind (convolution, matmul, reductions, layout, elementwise), for a
jitted JAX function (from a `jax.profiler` trace of its XLA ops) and for a PyTorch call (`torch.profiler`).

Both sides are put in the same kinds, so `python -m emo_jax.bench unet --profile` can print them side by side.
Op time is the sum of the ops' own durations over all threads, per call: where ops run at once (XLA's thunk
executor, PyTorch's intra-op threads inside one op) it can exceed the wall time, and `busy_cores` = op time /
wall time says how much of the machine the ops kept busy.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

KINDS = ("convolution", "matmul", "reduction", "layout", "elementwise", "other")
KIND_HELP = {
    "convolution": "convolutions and their gradients",
    "matmul": "dots / linear / batched matmuls (attention included)",
    "reduction": "anything reducing: GroupNorm, LayerNorm, softmax statistics, bias gradients",
    "layout": "transposes, copies, pads, concatenations, slices",
    "elementwise": "the rest: activations, adds, scales",
    "other": "whatever fits none of the above",
}
_LAYOUT_OPS = {
    "transpose",
    "copy",
    "bitcast",
    "reshape",
    "broadcast",
    "slice",
    "concatenate",
    "pad",
    "parameter",
    "constant",
    "tuple",
    "get-tuple-element",
    "dynamic-slice",
    "dynamic-update-slice",
    "iota",
}
_CONTAINERS = {"while", "conditional", "call"}  # their events span the ops inside them, which are counted alone


@dataclasses.dataclass
class Breakdown:
    """Op seconds per call by kind (`KINDS`), the wall seconds of one call, and the op events counted."""

    seconds: dict[str, float]
    wall_s: float
    events: int

    @property
    def op_s(self) -> float:
        return sum(self.seconds.values())

    @property
    def busy_cores(self) -> float:
        return self.op_s / self.wall_s if self.wall_s else 0.0

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def table(breakdowns: dict[str, Breakdown]) -> str:
    """Markdown: one row per kind, milliseconds and share of op time for each side."""
    names = list(breakdowns)
    head = "| kind | " + " | ".join(f"{n} ms | {n} share" for n in names) + " |"
    rows = [head, "|" + "---|" * (1 + 2 * len(names))]
    for kind in KINDS:
        cells = []
        for b in breakdowns.values():
            cells += [f"{b.seconds.get(kind, 0.0) * 1e3:.1f}", f"{b.seconds.get(kind, 0.0) / max(b.op_s, 1e-12):.0%}"]
        rows.append(f"| {kind} | " + " | ".join(cells) + " |")
    totals = (("op time ms", lambda b: f"{b.op_s * 1e3:.1f}"), ("wall ms", lambda b: f"{b.wall_s * 1e3:.1f}"))
    for label, value in (*totals, ("busy cores", lambda b: f"{b.busy_cores:.2f}")):
        rows.append(f"| {label} | " + " | ".join(f"{value(b)} | " for b in breakdowns.values()) + " |")
    return "\n".join(rows)


# -- XLA ---------------------------------------------------------------------------------------------------------

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?\b([a-z][a-z\-]*)\((.*)$")
_COMPUTATION = re.compile(r"^\s*(?:ENTRY )?%?([\w.\-]+) .*\{\s*$")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")


def hlo_kinds(hlo_text: str) -> dict[str, str]:
    """Instruction name -> kind, from an optimized HLO module's text (`compiled.as_text()`); a fusion takes the
    kind of the heaviest op inside it (convolution > matmul > reduction > elementwise > layout)."""
    computations: dict[str, list[tuple[str, str, str]]] = {}
    current = None
    for line in hlo_text.splitlines():
        if (m := _COMPUTATION.match(line)) and "=" not in line.split("{")[0]:
            current = computations.setdefault(m.group(1), [])
        elif current is not None and (m := _INSTRUCTION.match(line)):
            current.append(m.groups())

    def opcodes(computation: str, seen: frozenset = frozenset()) -> set[str]:
        found = set()
        for _, opcode, rest in computations.get(computation, []):
            found.add(opcode)
            for called in _CALLS.findall(rest):
                if called not in seen:
                    found |= opcodes(called, seen | {called})
        return found

    kinds = {}
    for instructions in computations.values():
        for name, opcode, rest in instructions:
            if opcode in _CONTAINERS:
                kinds[name] = "container"
                continue
            ops = {opcode}
            if opcode == "fusion" or opcode == "custom-call":
                for called in _CALLS.findall(rest):
                    ops |= opcodes(called)
                target = rest.split("custom_call_target=")[-1][:40]
                if "__onednn$matmul" in rest or "matmul" in target or "attention" in target:  # our CPU kernel
                    ops.add("dot")
            kinds[name] = _kind_of(ops)
    return kinds


def _kind_of(ops: set[str]) -> str:
    if "convolution" in ops:
        return "convolution"
    if "dot" in ops:
        return "matmul"
    if ops & {"reduce", "reduce-window", "select-and-scatter", "scatter"}:
        return "reduction"
    if ops - {"fusion", "custom-call"} <= _LAYOUT_OPS:
        return "layout"
    return "elementwise"


def xla_breakdown(function: Callable, args: tuple, *, calls: int = 3) -> Breakdown:
    """Traces `calls` calls of the jitted `function(*args)` (already compiled and warm) and sums its ops' time."""
    import time

    import jax
    from jax.profiler import ProfileData

    kinds = hlo_kinds(function.lower(*args).compile().as_text())
    with tempfile.TemporaryDirectory(prefix="emo_profile_") as tmp:
        jax.profiler.start_trace(tmp)
        start = time.perf_counter()
        for _ in range(calls):
            jax.block_until_ready(function(*args))
        wall = (time.perf_counter() - start) / calls
        jax.profiler.stop_trace()
        (trace,) = Path(tmp).rglob("*.xplane.pb")
        profile = ProfileData.from_file(str(trace))
    seconds = dict.fromkeys(KINDS, 0.0)
    events = 0
    for plane in profile.planes:
        for line in plane.lines:
            for event in line.events:
                kind = kinds.get(event.name)
                if kind is None or kind == "container":
                    continue
                seconds[kind] += event.duration_ns * 1e-9 / calls
                events += 1
    return Breakdown(seconds, wall, events)


# -- PyTorch -----------------------------------------------------------------------------------------------------

_TORCH_KINDS = (
    ("convolution", re.compile(r"conv")),
    (
        "matmul",
        re.compile(r"\b(aten::)?(mm|addmm|bmm|baddbmm|matmul|linear|_scaled_dot_product\w*|mkldnn_\w*matmul)\b"),
    ),
    ("reduction", re.compile(r"norm|softmax|sum|mean|var|std")),
    ("layout", re.compile(r"copy_|contiguous|clone|permute|transpose|cat|pad|slice|index|to$|_to_copy|empty_like")),
)
_TORCH_VIEWS = re.compile(r"\b(view|reshape|expand|as_strided|unsqueeze|squeeze|t|detach|empty|resize_|zero_|fill_)$")


def torch_kind(op: str) -> str | None:
    """The kind of a `torch.profiler` op name; None for ops that only make views or allocate."""
    name = op.split("::")[-1]
    if _TORCH_VIEWS.search(name):
        return None
    for kind, pattern in _TORCH_KINDS:
        if pattern.search(name):
            return kind
    return "elementwise"


def torch_breakdown(call: Callable[[], object], *, calls: int = 3) -> Breakdown:
    """Profiles `calls` calls of `call()` with `torch.profiler` and sums the ops' self CPU time by kind."""
    import time

    import torch

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        start = time.perf_counter()
        for _ in range(calls):
            call()
        wall = (time.perf_counter() - start) / calls
    seconds = dict.fromkeys(KINDS, 0.0)
    events = 0
    for average in profiler.key_averages():
        kind = torch_kind(average.key)
        if kind is None:
            continue
        seconds[kind] += average.self_cpu_time_total * 1e-6 / calls
        events += average.count
    return Breakdown(seconds, wall, events)
