"""Benchmarks: `python -m emo_jax.bench {unet,motion,audio,data,train,backbone,compile,sample} [options]`.

unet: the jitted Flax UNet forward against diffusers' PyTorch forward (`UNet2DConditionModel`);
motion: the same for the video UNet with AnimateDiff motion modules (`UNetMotionModel`, `--frames`);
audio: wav2vec2 (base size, random weights) on speech-like audio against transformers' PyTorch model.
Same config, weights and inputs on both sides. Each side runs in its own process, `--rounds` times, alternating
which goes first: warm-up calls, then the median of `--repeats` timed calls, with the machine's load during them
(`bench_machine.LoadMeter`: cores used by this side and by everything else, steal); the CPU model and flags come
first and a warning comes last when other processes were busy. PyTorch is timed only when torch, diffusers and
transformers are installed (the `test` extra).
data: preprocessing (videos per minute) and the grain pipeline (clips per second) on a corpus it writes first.
train: training steps of a config (random batches of its shapes): step time, examples/s, FLOPs and MFU.
backbone: the EMO model call inside that step (ReferenceNet + backbone), forward and forward + backward, with MFU.
compile: a config's training step built abstractly and compiled for a mesh: memory and FLOPs per device.
sample: `emo-jax sample`'s clip loop on random weights of a config: seconds per clip and per frame, and the
compiled denoising loop's memory (`--compile-only`: from shapes alone, e.g. SD1.5 size on a small machine).
Each ends with a table of its figures (`Results`); `--json FILE` writes them with the command and the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import inspect
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from emo_jax.bench_machine import OTHERS_WARN_SHARE, Load, LoadMeter
from emo_jax.bench_profile import KIND_HELP, Breakdown, table, torch_breakdown, xla_breakdown
from emo_jax.models import Compute, MotionConfig, UNet, UNetConfig, param_counts, shapes_only
from emo_jax.models.layers import ATTENTION_IMPLEMENTATIONS


def median_seconds(fn: Callable[[], object], *, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclasses.dataclass
class Results:
    """What a benchmark measured, one row per figure: printed as a table at the end, and with `--json FILE`
    written there with the command and the machine."""

    rows: list[dict] = dataclasses.field(default_factory=list)

    def add(self, what: str, value: float, unit: str) -> None:
        self.rows.append({"what": what, "value": float(value), "unit": unit})

    def table(self) -> str:
        lines = ["| measured | value | unit |", "|---|---|---|"]
        return "\n".join(lines + [f"| {r['what']} | {r['value']:.4g} | {r['unit']} |" for r in self.rows])

    def write(self, path: str, argv: list[str]) -> None:
        from emo_jax.bench_machine import cpu_description

        machine = {"cpu": cpu_description(), "backend": jax.default_backend(), "device": jax.devices()[0].device_kind}
        record = {"command": ["python", "-m", "emo_jax.bench", *argv], "machine": machine, "results": self.rows}
        Path(path).write_text(json.dumps(record, indent=1) + "\n")


def peers_installed(*modules: str) -> bool:
    """Whether the PyTorch peers are importable (the `test` extra); without them JAX is timed alone."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        print(f"{', '.join(missing)} not installed: timing JAX only (pip install 'emo-jax[test]' for the comparison)")
    return not missing


# -- JAX vs PyTorch, each side in its own process --------------------------------------------------------------
#
# A comparison runs `--rounds` rounds; each round starts one fresh process per side (alternating which goes
# first), which builds its model from the weights the parent wrote, compiles / warms up, and times `--repeats`
# calls under a LoadMeter. Sides never share a process or a moment, so PyTorch's and XLA's thread pools never
# compete, and each timing says how busy the machine was.


@dataclasses.dataclass
class Side:
    """One side of a comparison, as its process reports it."""

    name: str
    seconds: float
    first_call_s: float
    threads: str
    load: Load
    output: np.ndarray
    profile: Breakdown | None


def _run_side(argv: list[str], side: str, workdir: Path, round_: int) -> Side:
    result = workdir / f"{side}_{round_}.npz"
    command = [sys.executable, "-m", "emo_jax.bench", *argv, "--side", side, "--workdir", str(workdir)]
    completed = subprocess.run(command + ["--result", str(result)], capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"the {side} side failed:\n{completed.stderr[-3000:]}")
    with np.load(result) as saved:
        meta = json.loads(str(saved["meta"]))
        output = saved["output"]
    profile = Breakdown(**meta["profile"]) if "profile" in meta else None
    return Side(side, meta["seconds"], meta["first_call_s"], meta["threads"], Load(**meta["load"]), output, profile)


def _timed_side(
    call: Callable[[], object],
    to_numpy: Callable[[object], np.ndarray],
    threads: str,
    args: argparse.Namespace,
    profile: Callable[[], Breakdown],
) -> None:
    """The child's job: first call, then the median of `repeats` under a LoadMeter, then with `--profile` the op
    time by kind (`profile()`, after the timing so that it never slows it); writes `--result`."""
    start = time.perf_counter()
    output = to_numpy(call())
    first = time.perf_counter() - start
    with LoadMeter() as meter:
        seconds = median_seconds(call, warmup=args.warmup, repeats=args.repeats)
    meta = dict(seconds=seconds, first_call_s=first, threads=threads, load=dataclasses.asdict(meter.load))
    if args.profile:
        meta["profile"] = profile().to_json()
    np.savez(args.result, output=output, meta=json.dumps(meta))


def compare(args: argparse.Namespace, argv: list[str], speed: Callable[[float], str], prepare: Callable) -> None:
    """The parent: writes the shared weights (`prepare(workdir) -> sides`), runs the rounds, prints the table."""
    from emo_jax.bench_machine import cpu_description

    print(f"machine: {cpu_description()}")
    with tempfile.TemporaryDirectory(prefix="emo_bench_") as tmp:
        workdir = Path(tmp)
        sides = prepare(workdir)
        runs: dict[str, list[Side]] = {side: [] for side in sides}
        for round_ in range(args.rounds):
            for side in sides if round_ % 2 == 0 else sides[::-1]:
                run = _run_side(argv, side, workdir, round_)
                runs[side].append(run)
                flag = "  <- others were busy: not trustworthy" if run.load.suspect else ""
                print(
                    f"  round {round_ + 1} {side:<7} median of {args.repeats}: {speed(run.seconds)}  "
                    f"({run.threads}; first call {run.first_call_s:.2f} s; {run.load.describe()}){flag}"
                )
    medians = {side: statistics.median(r.seconds for r in rs) for side, rs in runs.items()}
    for side, seconds in medians.items():
        print(f"  {side:<7} median over {args.rounds} rounds: {speed(seconds)}")
        args.results.add(f"{side} time per call (median of rounds)", seconds, "s")
    if "torch" in runs:
        from emo_jax.convert.verify import relative_error

        print(f"  PyTorch / JAX time: {medians['torch'] / medians['jax']:.2f}x  (> 1: JAX faster)")
        error = relative_error(runs["jax"][0].output, runs["torch"][0].output)
        print(f"  relative error JAX vs PyTorch: {error:.2e}")
        args.results.add("PyTorch / JAX time", medians["torch"] / medians["jax"], "x")
        args.results.add("relative error JAX vs PyTorch", error, "")
    profiles = {side: rs[-1].profile for side, rs in runs.items() if rs[-1].profile is not None}
    if profiles:
        print(f"op time per call by kind (last round; {', '.join(f'{k}: {v}' for k, v in KIND_HELP.items())}):")
        print(table(profiles))
    if any(r.load.suspect for rs in runs.values() for r in rs):
        print(
            f"WARNING: other processes used more than {OTHERS_WARN_SHARE:.0%} of the cores during some timed runs; "
            "PyTorch slows down far more than JAX beside other work: rerun on a quiet machine"
        )


def _unet_config(args: argparse.Namespace) -> UNetConfig:
    channels = tuple(int(c) for c in args.channels.split(","))
    n = len(channels)
    return UNetConfig(
        block_out_channels=channels,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        layers_per_block=args.layers,
        attention_head_dim=args.heads,
        cross_attention_dim=args.cross_dim,
        norm_num_groups=32,
        motion=MotionConfig(motion_num_attention_heads=args.heads) if args.bench == "motion" else None,
    )


def _unet_inputs(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """sample [B, H, W, 4] (or [B, F, H, W, 4] for `motion`), timesteps [B], context [B, tokens, dim]."""
    rng = np.random.default_rng(0)
    frames = (args.frames,) if args.bench == "motion" else ()
    sample = rng.standard_normal((args.batch, *frames, args.size, args.size, 4), dtype=np.float32)
    timesteps = rng.integers(0, 1000, size=args.batch)
    context = rng.standard_normal((args.batch, args.tokens, args.cross_dim), dtype=np.float32)
    return sample, timesteps, context


def _cotangent(sample: np.ndarray) -> np.ndarray:
    """The fixed output cotangent of the backward benchmark (output has the sample's shape)."""
    return np.random.default_rng(1).standard_normal(sample.shape, dtype=np.float32)


def _channels_last(tensor) -> np.ndarray:
    """A PyTorch [B, C, ...] result as our [B, ..., C] array."""
    return np.moveaxis(tensor.detach().numpy(), 1, -1)


def _channels_first(array: np.ndarray):
    """Our [B, ..., C] array as a PyTorch [B, C, ...] tensor."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(array, -1, 1)))


def _peer_unet(config: UNetConfig, weights: dict[str, np.ndarray] | None = None):
    """diffusers' twin of `config` (`UNet2DConditionModel`, or `UNetMotionModel` with motion modules), with
    `weights`, or at its random initialisation with the motion modules' zero output projections made random."""
    import torch
    from diffusers import UNet2DConditionModel, UNetMotionModel

    peer_class = UNet2DConditionModel if config.motion is None else UNetMotionModel
    accepted = inspect.signature(peer_class.__init__).parameters  # not EMO's own keys (all off here)
    peer = peer_class.from_config({k: v for k, v in config.to_diffusers().items() if k in accepted})
    if weights is not None:
        peer.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
        return peer.eval()
    with torch.no_grad():
        for name, param in peer.named_parameters():
            if "motion_modules" in name and "proj_out" in name:
                param.normal_(0, 0.02, generator=torch.Generator().manual_seed(0))
    return peer.eval()


def _weights(workdir: Path) -> dict[str, np.ndarray] | None:
    path = workdir / "weights.npz"
    if not path.is_file():
        return None
    with np.load(path) as saved:
        return dict(saved)


def _torch_threads() -> str:
    import torch

    torch.set_num_threads(os.cpu_count())
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads"


def _jax_threads() -> str:
    return f"jax {jax.__version__} {jax.default_backend()}, XLA's own thread pool"


def bench_unet(args: argparse.Namespace) -> None:
    config = _unet_config(args)
    sample, timesteps, context = _unet_inputs(args)
    if args.side == "torch":
        import torch

        threads = _torch_threads()
        peer = _peer_unet(config, _weights(Path(args.workdir)))
        x, t = _channels_first(sample), torch.from_numpy(timesteps)
        per_frame = args.frames if config.motion is not None else 1  # diffusers' video pipelines repeat it per frame
        c = torch.from_numpy(np.repeat(context, per_frame, axis=0))
        if args.backward:  # d(sum(output * cotangent)) / d(params, sample); the sample's gradient is compared
            cotangent = _channels_first(_cotangent(sample))
            x.requires_grad_(True)

            def call():
                peer.zero_grad(set_to_none=True)
                x.grad = None
                (peer(x, t, c).sample * cotangent).sum().backward()
                return x.grad

            _timed_side(call, _channels_last, threads, args, lambda: torch_breakdown(call))
            return
        with torch.inference_mode():
            call = lambda: peer(x, t, c).sample  # noqa: E731
            _timed_side(call, _channels_last, threads, args, lambda: torch_breakdown(call))
        return
    compute = Compute(dtype=jnp.dtype(args.dtype), attention=args.attention)
    if args.side == "jax":
        from emo_jax.convert import from_diffusers_unet

        weights = _weights(Path(args.workdir))
        if weights is None:
            model = UNet(config, compute=compute, rngs=nnx.Rngs(0))
        else:
            model = from_diffusers_unet(weights, config.to_diffusers(), compute=compute)
        graphdef, state = nnx.split(model)
        forward = lambda state, x, t, c: nnx.merge(graphdef, state)(x, t, c)  # noqa: E731
        if args.backward:
            cotangent = jnp.asarray(_cotangent(sample), compute.dtype)
            loss = lambda state, x, t, c: jnp.sum(forward(state, x, t, c) * cotangent, dtype=jnp.float32)  # noqa: E731
            function = jax.jit(lambda state, x, t, c: jax.grad(loss, argnums=(0, 1))(state, x, t, c)[1])
        else:
            function = jax.jit(forward)
        inputs = (
            state,
            jnp.asarray(sample, compute.dtype),
            jnp.asarray(timesteps),
            jnp.asarray(context, compute.dtype),
        )
        call = lambda: jax.block_until_ready(function(*inputs))  # noqa: E731
        _timed_side(
            call, lambda out: np.asarray(out, np.float32), _jax_threads(), args, lambda: xla_breakdown(function, inputs)
        )
        return

    def prepare(workdir: Path) -> list[str]:
        if not peers_installed("torch", "diffusers"):
            return ["jax"]
        import torch

        torch.manual_seed(0)
        peer = _peer_unet(config)
        np.savez(workdir / "weights.npz", **{k: v.numpy() for k, v in peer.state_dict().items()})
        return ["jax", "torch"]

    model = shapes_only(lambda: UNet(config, compute=compute, rngs=nnx.Rngs(0)))
    kind = "UNet" if config.motion is None else f"video UNet with motion modules, {args.frames} frames,"
    print(
        f"{kind} {list(config.block_out_channels)}, {args.layers} layers/block, {args.heads} heads, "
        f"{sum(param_counts(model).values()) / 1e6:.1f} M params; input {list(sample.shape)}, "
        f"context [{args.batch}, {args.tokens}, {args.cross_dim}]; JAX {args.dtype}, {args.attention} attention; "
        + ("forward + backward (parameter and sample gradients)" if args.backward else "forward")
    )
    milliseconds = lambda s: f"{s * 1e3:8.1f} ms"  # noqa: E731
    compare(args, args.argv, milliseconds, prepare)


def bench_audio(args: argparse.Namespace) -> None:
    from emo_jax.models.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model

    waveform = np.random.default_rng(0).standard_normal((1, int(args.seconds * 16000)), dtype=np.float32)
    if args.side == "torch":
        import torch
        import transformers

        threads = _torch_threads()
        peer = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config()).eval()
        peer.load_state_dict({k: torch.from_numpy(v) for k, v in _weights(Path(args.workdir)).items()})
        with torch.inference_mode():
            call = lambda: peer(torch.from_numpy(waveform)).last_hidden_state  # noqa: E731
            _timed_side(call, lambda out: out.numpy(), threads, args, lambda: torch_breakdown(call))
        return
    compute = Compute(attention=args.attention)
    if args.side == "jax":
        from emo_jax.convert.wav2vec2 import from_hf_wav2vec2

        weights = _weights(Path(args.workdir))
        if weights is None:
            model = Wav2Vec2Model(Wav2Vec2Config(), compute=compute, rngs=nnx.Rngs(0))
        else:
            config = json.loads((Path(args.workdir) / "config.json").read_text())
            model = from_hf_wav2vec2(weights, config, compute=compute)
        graphdef, state = nnx.split(model)
        forward = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x).last_hidden_state)
        inputs = (state, jnp.asarray(waveform))
        call = lambda: jax.block_until_ready(forward(*inputs))  # noqa: E731
        _timed_side(call, np.asarray, _jax_threads(), args, lambda: xla_breakdown(forward, inputs))
        return

    def prepare(workdir: Path) -> list[str]:
        if not peers_installed("torch", "transformers"):
            return ["jax"]
        import torch
        import transformers

        torch.manual_seed(0)
        peer = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config())  # wav2vec2-base layout
        np.savez(workdir / "weights.npz", **{k: v.numpy() for k, v in peer.state_dict().items()})
        (workdir / "config.json").write_text(json.dumps(peer.config.to_dict()))
        return ["jax", "torch"]

    print(f"wav2vec2-base layout (random weights), {args.seconds:.0f} s of audio at 16 kHz; {args.attention} attention")
    audio_rate = lambda s: f"{s:.3f} s = {args.seconds / s:6.1f} s of audio per second"  # noqa: E731
    compare(args, args.argv, audio_rate, prepare)


def bench_data(args: argparse.Namespace) -> None:
    import tempfile
    from pathlib import Path

    import skimage.data

    from emo_jax.data.pipeline import PipelineConfig, data_source, make_loader
    from emo_jax.data.preprocess import PreprocessConfig, preprocess_folder
    from emo_jax.data.synthetic import make_video, speech_audio, warped_photo_video, write_video
    from emo_jax.data.tfds_builder import build_dataset
    from emo_jax.data.video import write_mp4

    root = Path(args.workdir or tempfile.mkdtemp(prefix="emo_bench_data_"))
    print(
        f"corpus in {root}: {args.videos} synthetic talking faces (sidecar truth) and {args.videos} moving astronaut "
        f"photos (OpenCV detector), {args.seconds:g} s at 25 fps, {args.source_size}px sources; {os.cpu_count()} CPU "
        f"cores, {args.workers} workers"
    )
    for i in range(args.videos):
        write_video(make_video(i, i, seconds=args.seconds, size=args.source_size), root / "sidecar", f"synth_{i:03d}")
        frames, _ = warped_photo_video(skimage.data.astronaut(), seconds=args.seconds, size=args.source_size, seed=i)
        write_mp4(root / "detector" / f"photo_{i:03d}.mp4", frames, 25.0, speech_audio(args.seconds, seed=i)[0])

    config = PreprocessConfig(size=args.size)
    for kind in ("sidecar", "detector"):
        start = time.perf_counter()
        report = preprocess_folder(root / kind, root / f"out_{args.size}", config, workers=args.workers, progress=False)
        seconds = time.perf_counter() - start
        print(
            f"preprocess ({kind:>8}) -> {args.size}px: {args.videos} videos in {seconds:.1f} s = "
            f"{args.videos / seconds * 60:.1f} videos/min ({args.videos * args.seconds / seconds:.2f} s of video per s)"
        )
        args.results.add(f"preprocess ({kind}) at {args.size}px", args.videos / seconds * 60, "videos/min")
    assert report["done"] == 2 * args.videos, report["skipped_videos"]
    build_dataset(root / f"out_{args.size}", root / f"tfds_{args.size}")
    source = data_source(str(root / f"tfds_{args.size}"))
    for (frames, motion), workers in itertools.product(((12, 4), (1, 0)), sorted({0, args.workers})):
        pipeline = PipelineConfig(
            num_frames=frames, num_motion_frames=motion, size=args.size, batch_size=args.batch, worker_count=workers
        )
        iterator = iter(make_loader(source, pipeline))
        for _ in range(args.warmup):
            next(iterator)
        start = time.perf_counter()
        for _ in range(args.batches):
            next(iterator)
        clips = args.batches * args.batch / (time.perf_counter() - start)
        print(
            f"pipeline {frames}+{motion} frames at {args.size}px, batch {args.batch}, {workers} workers: "
            f"{clips:.1f} clips/s ({clips * (frames + motion + 1):.0f} decoded JPEG frames/s)"
        )
        args.results.add(f"pipeline {frames}+{motion} frames, {workers} workers", clips, "clips/s")
        del iterator  # stop its worker processes now


def _trainer(args: argparse.Namespace):
    from emo_jax.config import apply_overrides, load_config
    from emo_jax.train import sharding
    from emo_jax.train.trainer import Trainer

    config = apply_overrides(load_config(args.config), args.overrides)
    if args.remat:
        config.compute.remat = True
    if args.dtype:
        config.compute.dtype = args.dtype
    shape = tuple(int(x) for x in args.mesh.split(","))
    needed = int(np.prod([s for s in shape if s > 0]))
    if jax.device_count() < needed:
        raise SystemExit(
            f"mesh {shape} needs {needed} devices, JAX sees {jax.device_count()}; on CPU simulate them with "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={needed}"
        )
    mesh = sharding.make_mesh(shape, jax.devices()[:needed] if -1 not in shape else None)
    data_ways = mesh.shape["data"] * mesh.shape["fsdp"]
    config.data.batch_size = args.batch_per_device * data_ways if args.batch_per_device else config.data.batch_size
    return config, mesh, Trainer(config, mesh)


def matmul_peak_flops(size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a jitted fp32 [size, size] matmul on the first device: this machine's practical peak."""
    x = jnp.ones((size, size), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    seconds = median_seconds(lambda: jax.block_until_ready(f(x)), warmup=2, repeats=repeats)
    return 2 * size**3 / seconds


def _device_peak() -> tuple[jax.Device, float, str]:
    """(the first device, its peak FLOP/s, where that figure comes from): the datasheet's, else on CPU a measured
    fp32 matmul's."""
    from emo_jax.train.metrics import peak_flops

    device = jax.devices()[0]
    if (peak := peak_flops(device)) is not None:
        return device, peak, "datasheet"
    return device, matmul_peak_flops(), "measured fp32 matmul"


def bench_train(args: argparse.Namespace) -> None:
    from emo_jax.train import sharding
    from emo_jax.train.batch import example_batch
    from emo_jax.train.trainer import step_flops

    config, mesh, trainer = _trainer(args)
    state, frozen, _ = trainer.initial_state()
    batch = sharding.global_batch(example_batch(config), mesh)
    start = time.perf_counter()
    step = trainer.compiled_step(batch)
    compile_s = time.perf_counter() - start
    flops = step_flops(step)

    def one():
        nonlocal state
        state, out = step(state, frozen, batch)
        jax.block_until_ready(out)

    seconds = median_seconds(one, warmup=args.warmup, repeats=args.repeats)
    device, peak, source = _device_peak()
    d = config.data
    print(
        f"train step, {args.config} ({config.compute.dtype}, remat {config.compute.remat}): batch {d.batch_size} x "
        f"{d.num_frames}+{d.num_motion_frames} frames at {d.size}px on {mesh.devices.size} x {device.device_kind}"
    )
    print(
        f"  compile {compile_s:.1f} s; step median of {args.repeats}: {seconds * 1e3:.0f} ms, "
        f"{d.batch_size / seconds:.2f} examples/s"
    )
    print(
        f"  {flops / 1e9:.1f} GFLOP per step per device (XLA cost analysis): {flops / seconds / 1e9:.1f} GFLOP/s; "
        f"peak {peak / 1e9:.0f} GFLOP/s ({source}): MFU {flops / seconds / peak:.1%}"
    )
    args.results.add("train step (median)", seconds, "s")
    args.results.add("examples per second", d.batch_size / seconds, "examples/s")
    args.results.add("MFU", flops / seconds / peak, "fraction of peak")


def bench_backbone(args: argparse.Namespace) -> None:
    """The EMO model call of a training step (ReferenceNet on the reference and motion frames, the backbone with
    audio, temporal and speed layers) on a config's batch: forward, and forward + backward (the trainable
    parameters' gradients), each with XLA's FLOP count and MFU. The VAE encoding and the optimizer are left out
    (`bench train` times the whole step)."""
    from emo_jax.train import sharding
    from emo_jax.train.batch import Dropout, MotionAugment, example_batch, training_inputs
    from emo_jax.train.trainer import step_flops

    config, mesh, trainer = _trainer(args)
    state, frozen, _ = trainer.initial_state()
    batch = sharding.global_batch(example_batch(config), mesh)
    vae = nnx.merge(trainer.vae_graphdef, trainer.vae.state(frozen["vae"]))
    encode = jax.jit(lambda batch, key: training_inputs(vae, batch, key, trainer.objective, Dropout(), MotionAugment()))
    inputs, _ = encode(batch, jax.random.key(0))
    call = lambda trainable, inputs: trainer.model(trainable, frozen["emo"])(**inputs)  # noqa: E731
    cotangent = jax.tree.map(lambda x: jnp.ones(x.shape, x.dtype), jax.eval_shape(call, state["trainable"], inputs))
    loss = lambda trainable, inputs: jnp.sum(call(trainable, inputs) * cotangent, dtype=jnp.float32)  # noqa: E731
    device, peak, source = _device_peak()
    d = config.data
    print(
        f"EMO model call, {args.config} ({config.compute.dtype}, remat {config.compute.remat}): batch "
        f"{d.batch_size} x {d.num_frames}+{d.num_motion_frames} frames at {d.size}px on {mesh.devices.size} x "
        f"{device.device_kind}; peak {peak / 1e9:.0f} GFLOP/s ({source})"
    )
    for name, function in (("forward", call), ("forward + backward", jax.grad(loss))):
        start = time.perf_counter()
        compiled = jax.jit(function).lower(state["trainable"], inputs).compile()
        compile_s, flops = time.perf_counter() - start, step_flops(compiled)
        seconds = median_seconds(
            lambda: jax.block_until_ready(compiled(state["trainable"], inputs)),
            warmup=args.warmup,
            repeats=args.repeats,
        )
        print(
            f"  {name}: {seconds * 1e3:.0f} ms (median of {args.repeats}; compiled in {compile_s:.1f} s), "
            f"{flops / 1e9:.1f} GFLOP per device: {flops / seconds / 1e9:.1f} GFLOP/s, MFU {flops / seconds / peak:.1%}"
        )
        args.results.add(f"{name} (median)", seconds, "s")
        args.results.add(f"{name} MFU", flops / seconds / peak, "fraction of peak")


def bench_compile(args: argparse.Namespace) -> None:
    from emo_jax.train.batch import example_batch
    from emo_jax.train.trainer import step_flops

    config, mesh, trainer = _trainer(args)
    start = time.perf_counter()
    compiled = trainer.compiled_step(example_batch(config, abstract=True))
    seconds = time.perf_counter() - start
    d = config.data
    print(
        f"{args.config}: batch {d.batch_size} ({args.batch_per_device or '-'} per device) x {d.num_frames}+"
        f"{d.num_motion_frames} frames at {d.size}px, {config.compute.dtype}, remat {config.compute.remat}, "
        f"mesh {dict(mesh.shape)}; compiled in {seconds:.0f} s"
    )
    sizes, peak = _memory(compiled)
    flops = step_flops(compiled)
    print(f"  per device: {sizes}")
    print(
        f"  peak estimate (argument + output + temp - alias): {peak:.2f} GiB; {flops / 1e12:.2f} TFLOP per step "
        "per device"
    )
    args.results.add("train step memory per device (estimate)", peak, "GiB")
    args.results.add("train step FLOPs per device", flops / 1e12, "TFLOP")


def _sampling_inputs(config, clips: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float | None]:
    """Random inputs of a config's shapes: reference [S, S, 3] uint8, face mask [S, S, 1] (the middle half),
    audio features [clips * F, 2m + 1, L, D] (None without audio layers), a head speed (None without speed)."""
    rng = np.random.default_rng(0)
    size, model = config.data.size, config.model
    reference = rng.integers(0, 256, (size, size, 3), np.uint8)
    mask = np.zeros((size, size, 1), np.float32)
    mask[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1.0
    audio = model.get("audio")
    features = None
    if audio is not None:
        shape = (clips * config.data.num_frames, audio.seq_len, audio.blocks, audio.channels)
        features = rng.standard_normal(shape).astype(np.float32)
    speed = float(np.median(model.speed.centres)) if model.get("speed") is not None else None
    return reference, mask, features, speed


def _hallo_inputs(config, clips: int):
    """Random `HalloInputs` of a Hallo-layout config's shapes: the face box and its blurred regions in the middle."""
    from emo_jax.sample.hallo import HalloInputs
    from emo_jax.sample.hallo_masks import HalloMasks

    rng, size, model = np.random.default_rng(0), config.data.size, config.model
    box = lambda side, lo, hi: np.pad(np.full((hi - lo, hi - lo), 255, np.uint8), (lo, side - hi))  # noqa: E731
    face = box(64, 16, 48)
    masks = HalloMasks(box(size, size // 4, 3 * size // 4), 255 - face, face, box(64, 28, 40))
    a = model.audio
    return HalloInputs(
        reference=rng.uniform(-1, 1, (size, size, 3)).astype(np.float32),
        face_embedding=rng.standard_normal(model.image_embedding.dim).astype(np.float32),
        masks=masks,
        audio_features=rng.standard_normal((clips * config.data.num_frames, a.seq_len, a.blocks, a.channels)),
        frames=clips * config.data.num_frames,
    )


def bench_sample(args: argparse.Namespace) -> None:
    """Seconds per clip and per frame of `VideoSampler`, or `HalloSampler` for a Hallo-layout config (random
    weights of a config: the cost does not depend on them), and the compiled clip's memory (XLA's memory analysis;
    on a GPU also the measured peak)."""
    from emo_jax.build import build_emo, build_vae
    from emo_jax.config import apply_overrides, load_config
    from emo_jax.sample.generate import SamplingSettings, VideoSampler
    from emo_jax.sample.hallo import HalloSampler

    config = apply_overrides(load_config(args.config), args.overrides)
    if args.dtype:
        config.compute.dtype = args.dtype
    config.vae.checkpoint, config.vae.random = "", True  # random weights of the config's VAE layout
    settings = SamplingSettings.from_config(
        config, steps=args.steps, guidance_audio=args.guidance_audio, guidance_reference=args.guidance_reference
    )
    model = shapes_only(lambda: build_emo(config)) if args.compile_only else build_emo(config)
    vae = shapes_only(lambda: build_vae(config)) if args.compile_only else build_vae(config)
    f, size, device, clips = config.data.num_frames, config.data.size, jax.devices()[0], args.clips
    if config.model.get("image_embedding") is not None:
        sampler, inputs = HalloSampler(model, vae, config, settings), _hallo_inputs(config, clips)
        run = lambda on_clip: sampler.frames(inputs, on_clip=on_clip)  # noqa: E731
        compile_clip = lambda: sampler.compile_clip(inputs)  # noqa: E731
    else:
        sampler, inputs = VideoSampler(model, vae, config, settings), _sampling_inputs(config, clips)
        run = lambda on_clip: sampler.frames(*inputs, total_frames=clips * f, on_clip=on_clip)  # noqa: E731
        compile_clip = lambda: sampler.compile_loop(*inputs)  # noqa: E731
    print(
        f"sample, {args.config} ({config.compute.dtype}): {f}-frame clips at {size}px, {settings.sampler} "
        f"{settings.steps} steps, {len(sampler.branches)} guidance branches per step, {type(sampler).__name__}, "
        f"on {device.device_kind}"
    )
    if not args.compile_only:
        ends = [time.perf_counter()]
        for _ in run(lambda _: ends.append(time.perf_counter())):
            pass
        per_clip = np.diff(ends)
        steady = statistics.median(per_clip[1:]) if len(per_clip) > 1 else per_clip[0]
        print(
            f"  first clip {per_clip[0]:.2f} s (with compiling); then {steady:.2f} s per clip, {steady / f:.3f} s per "
            f"frame (median of {max(len(per_clip) - 1, 1)} clips)"
        )
        args.results.add("seconds per clip", steady, "s")
        args.results.add("seconds per frame", steady / f, "s")
        peak = (device.memory_stats() or {}).get("peak_bytes_in_use")
        if peak:
            print(f"  device memory peak while sampling: {peak / 2**30:.2f} GiB")
            args.results.add("device memory peak", peak / 2**30, "GiB")
    start = time.perf_counter()
    compiled = compile_clip()
    took = f" in {time.perf_counter() - start:.0f} s" if args.compile_only else ""
    sizes, peak = _memory(compiled)
    print(f"  denoising loop of one clip compiled{took}: memory {sizes}, peak ~{peak:.2f} GiB")
    args.results.add("denoising loop memory (estimate)", peak, "GiB")


def bench_metrics(args: argparse.Namespace) -> None:
    """Frames per second through each evaluation network (`emo-jax eval`; random weights: the cost does not
    depend on them), and the time an HDTF-size test set would take (`--videos` of `--seconds` at 25 fps, both
    sides of FID, FVD and E-FID, one side of Sync and F-SIM)."""
    import jax.numpy as jnp

    from emo_jax.eval.i3d import CLIP_FRAMES
    from emo_jax.eval.report import I3D_BATCH, METRICS, random_networks

    networks = random_networks(list(METRICS))
    b, rng = args.batch, np.random.default_rng(0)
    clips = rng.uniform(0, 1, (I3D_BATCH, CLIP_FRAMES, 256, 256, 3))
    cases = {  # name: (forward, input of one batch, frames per item, passes over the test set)
        "FID Inception (299 px)": (networks.inception, rng.uniform(0, 1, (b, 256, 256, 3)), 1, 2),
        f"FVD I3D ({CLIP_FRAMES} x 224 px clips)": (networks.i3d, clips, CLIP_FRAMES, 2),
        "SyncNet lip tower (5 x 224 px)": (
            networks.syncnet.forward_lip,
            rng.uniform(0, 255, (b, 5, 224, 224, 3)),
            1,
            1,
        ),
        "SyncNet audio tower": (networks.syncnet.forward_aud, rng.standard_normal((b, 13, 20, 1)), 1, 1),
        "ArcFace r18 (112 px)": (networks.arcface, rng.uniform(0, 255, (b, 112, 112, 3)), 1, 1),
        "Deep3DFaceRecon ResNet-50 (224 px)": (networks.face3d, rng.uniform(0, 255, (b, 224, 224, 3)), 1, 2),
    }
    frames = args.videos * args.seconds * 25
    total = 0.0
    print(f"metrics: batch {b} on {jax.devices()[0].device_kind}; test set {args.videos} videos x {args.seconds:g} s")
    for name, (forward, inputs, per_item, passes) in cases.items():
        jitted, x = jax.jit(lambda v, f=forward: f(v)), jnp.asarray(inputs, jnp.float32)
        with LoadMeter() as meter:
            seconds = median_seconds(lambda: jitted(x).block_until_ready(), warmup=1, repeats=args.repeats)
        rate = len(inputs) * per_item / seconds
        total += passes * frames / rate
        print(f"  {name}: {rate:.1f} frames/s; {meter.load.describe()}")
        args.results.add(f"{name} frames per second", rate, "frames/s")
    print(f"  estimated time for the test set: {total / 60:.1f} min (plus video decoding and face detection)")
    args.results.add("estimated evaluation time of the test set", total / 60, "min")


def _memory(compiled) -> tuple[str, float]:
    """XLA's memory analysis of a compiled function: (its sizes as text, 'argument 1.00 GiB, ...', the peak
    estimate argument + output + temp - alias in GiB)."""
    memory, gib = compiled.memory_analysis(), 2**30
    names = ("argument", "output", "temp", "alias", "generated_code")
    sizes = {name: getattr(memory, f"{name}_size_in_bytes", 0) / gib for name in names}
    peak = sizes["argument"] + sizes["output"] + sizes["temp"] - sizes["alias"]
    return ", ".join(f"{name} {size:.2f} GiB" for name, size in sizes.items()), peak


def _side_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=3, help="rounds of one fresh process per side, alternating")
    parser.add_argument("--profile", action="store_true", help="also op time by kind on each side (bench_profile)")
    parser.add_argument("--side", choices=["jax", "torch"], help=argparse.SUPPRESS)  # a child process
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)


def _unet_parser(unet: argparse.ArgumentParser) -> None:
    unet.add_argument("--channels", default="64,128,256", help="block_out_channels, comma-separated")
    unet.add_argument("--layers", type=int, default=2, help="layers per block")
    unet.add_argument("--heads", type=int, default=8)
    unet.add_argument("--cross-dim", type=int, default=768)
    unet.add_argument("--tokens", type=int, default=77, help="context tokens")
    unet.add_argument("--size", type=int, default=32, help="latent height = width")
    unet.add_argument("--batch", type=int, default=2)
    unet.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="JAX compute dtype")
    unet.add_argument("--attention", default="auto", choices=ATTENTION_IMPLEMENTATIONS)
    unet.add_argument("--backward", action="store_true", help="forward + backward (parameter and sample gradients)")
    unet.add_argument("--warmup", type=int, default=2)
    unet.add_argument("--repeats", type=int, default=10)
    unet.add_argument("--frames", type=int, default=8, help="frames per video (motion)")
    _side_flags(unet)
    unet.set_defaults(func=bench_unet)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m emo_jax.bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="bench", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", metavar="FILE", help="also write the results, command and machine as JSON")
    add = lambda name, **kwargs: sub.add_parser(name, parents=[common], **kwargs)  # noqa: E731
    for name, what in (
        ("unet", "SD-layout UNet forward (or forward + backward), JAX vs diffusers' UNet2DConditionModel"),
        ("motion", "video UNet with AnimateDiff motion modules, JAX vs diffusers' UNetMotionModel"),
    ):
        _unet_parser(add(name, help=what))

    audio = add("audio", help="wav2vec2-base forward, JAX vs PyTorch")
    audio.add_argument("--seconds", type=float, default=10.0, help="audio length")
    audio.add_argument("--attention", default="auto", choices=ATTENTION_IMPLEMENTATIONS)
    audio.add_argument("--warmup", type=int, default=1)
    audio.add_argument("--repeats", type=int, default=5)
    _side_flags(audio)
    audio.set_defaults(func=bench_audio)

    data = add("data", help="preprocessing and grain pipeline throughput")
    data.add_argument("--size", type=int, default=256, help="output frame size (256 or 512)")
    data.add_argument("--source-size", type=int, default=512, help="frame size of the corpus videos")
    data.add_argument("--videos", type=int, default=4, help="videos of each kind")
    data.add_argument("--seconds", type=float, default=6.0, help="length of each video")
    data.add_argument("--workers", type=int, default=2, help="preprocessing and grain worker processes")
    data.add_argument("--batch", type=int, default=4)
    data.add_argument("--warmup", type=int, default=5, help="batches before timing")
    data.add_argument("--batches", type=int, default=60, help="batches timed")
    data.add_argument("--workdir", help="folder for the corpus (default: a new temporary folder)")
    data.set_defaults(func=bench_data)

    sample = add(
        "sample",
        help="sampling: seconds per clip and per frame, loop memory",
        description="Config entries: --config.a.b=value.",
    )
    sample.add_argument(
        "--config",
        default="tiny",
        help="config file[:arg] (default: tiny; configs/stage3.py: SD1.5; configs/hallo.py: Hallo's)",
    )
    sample.add_argument("--steps", type=int, default=40)
    sample.add_argument("--guidance-audio", type=float, default=3.5)
    sample.add_argument("--guidance-reference", type=float, default=3.5)
    sample.add_argument("--clips", type=int, default=3, help="clips generated (the first one includes compiling)")
    sample.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], help="compute dtype (default: the config's)"
    )
    sample.add_argument(
        "--compile-only", action="store_true", help="compile the denoising loop from shapes alone: memory, no run"
    )
    sample.set_defaults(func=bench_sample, overrides=[])

    metrics = add("metrics", help="frames/s through each emo-jax eval network, and a test set's estimated time")
    metrics.add_argument("--batch", type=int, default=8)
    metrics.add_argument("--repeats", type=int, default=3)
    metrics.add_argument("--videos", type=int, default=10, help="test-set videos (HDTF's EMO split: about 10)")
    metrics.add_argument("--seconds", type=float, default=60.0, help="seconds per test video")
    metrics.set_defaults(func=bench_metrics)

    for name, func, what in (
        ("train", bench_train, "training steps of a config: time, examples/s, MFU"),
        ("backbone", bench_backbone, "the EMO model call of a training step: forward and backward, FLOPs, MFU"),
        ("compile", bench_compile, "a config's training step compiled abstractly: memory and FLOPs per device"),
    ):
        p = add(name, help=what, description="Config entries: --config.a.b=value.")
        p.add_argument("--config", default="tiny", help="config file[:arg] (default: tiny)")
        p.add_argument("--mesh", default="-1,1,1", help="data,fsdp,tensor (default -1,1,1: all devices data)")
        p.add_argument("--batch-per-device", type=int, default=0, help="batch per data-parallel device (0: config)")
        p.add_argument("--remat", action="store_true", help="recompute blocks in the backward pass")
        p.add_argument("--dtype", choices=["float32", "bfloat16"], help="compute dtype (default: the config's)")
        p.add_argument("--warmup", type=int, default=1)
        p.add_argument("--repeats", type=int, default=5)
        p.set_defaults(func=func, overrides=[])
    return parser


def main(argv: list[str] | None = None) -> None:
    args, rest = build_parser().parse_known_args(argv)
    if rest and args.bench not in ("train", "backbone", "compile", "sample"):
        build_parser().parse_args(argv)  # the usual error for unknown arguments
    if rest:
        args.overrides = rest
    args.argv = [a for a in (sys.argv[1:] if argv is None else argv)]
    args.results = Results()
    args.func(args)
    if args.results.rows and not getattr(args, "side", None):  # a comparison's child process reports to its parent
        print(args.results.table())
        if args.json:
            args.results.write(args.json, args.argv)
            print(f"results: {args.json}")


if __name__ == "__main__":
    main()
