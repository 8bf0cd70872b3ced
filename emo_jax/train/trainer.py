"""The training loop: `emo-jax train --config configs/<stage>.py --workdir DIR`.

One loop for every stage and every machine (big_vision / MaxText style):
  config -> mesh -> models (ReferenceNet + backbone + face locator + audio/speed layers, frozen VAE) split into
  trainable and frozen weights -> shardings from one rule table (`sharding.py`) -> initial weights (`init.py`)
  or the workdir's last checkpoint -> a jitted step with explicit in/out shardings and donated state ->
  grain batches placed as global arrays -> logs, frame grids and asynchronous checkpoints.

Weights travel as flat dicts {dotted parameter path: array}: the same keys in the step, the optimizer state,
the EMA, the checkpoints and the error messages. Randomness: the step's key is fold_in(seed key, step), so a
resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from emo_jax.build import build_emo, build_vae, vae_shapes
from emo_jax.diffusion import loss as diffusion_loss
from emo_jax.diffusion import schedules
from emo_jax.models import shapes_only
from emo_jax.paths import location
from emo_jax.train import sharding
from emo_jax.train.batch import Dropout, MotionAugment, Objective, to_pixels, training_inputs
from emo_jax.train.checkpointing import Checkpoints, check_workdir_config
from emo_jax.train.metrics import MetricWriter, frame_grid, memory_in_use, peak_flops, timestep_buckets
from emo_jax.train.optimizer import learning_rate, make_optimizer
from emo_jax.train.trainable import trainable_filter, trainable_paths

log = logging.getLogger(__name__)

Flat = dict[str, jax.Array]


class NonFiniteLoss(RuntimeError):
    """A step's loss or gradient was NaN or infinite (config.train.on_nan = 'stop')."""


def _flat(state: nnx.State) -> Flat:
    return {".".join(str(k) for k in path): var.get_value() for path, var in nnx.to_flat_state(state)}


class _Weights:
    """A group of a model's variables as a flat dict, and the way back to an `nnx.State`."""

    def __init__(self, state: nnx.State):
        self.template = list(nnx.to_flat_state(state))
        self.keys = [".".join(str(k) for k in path) for path, _ in self.template]

    def state(self, flat: Flat) -> nnx.State:
        return nnx.from_flat_state(
            [(path, var.replace(flat[key])) for (path, var), key in zip(self.template, self.keys)]
        )

    def abstract(self) -> dict[str, jax.ShapeDtypeStruct]:
        return {k: jax.ShapeDtypeStruct(var.shape, var.dtype) for k, (_, var) in zip(self.keys, self.template)}


@dataclasses.dataclass
class StepOutput:
    """What the host reads after a step (arrays on device until then)."""

    loss: jax.Array
    grad_norm: jax.Array
    finite: jax.Array
    per_sample: jax.Array  # [B] unweighted MSE
    timesteps: jax.Array  # [B]


jax.tree_util.register_dataclass(
    StepOutput, data_fields=[f.name for f in dataclasses.fields(StepOutput)], meta_fields=[]
)


class Trainer:
    """Everything a run of `config` computes, on `mesh`, built from shapes; `initial_state` makes the weights
    (compile studies never do)."""

    def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
        self.config, self.mesh = config, mesh
        self.objective = Objective.from_config(config)
        self.dropout = Dropout(**config.dropout)
        self.augment = MotionAugment(**config.motion_augment)
        self.tx = make_optimizer(config)
        self.lr = learning_rate(config)
        self.ema_decay = float(config.ema.decay)

        shapes = shapes_only(lambda: build_emo(config, config.seed))
        trainable_paths(shapes, config.trainable)  # a pattern that matches nothing is a typo: fail now
        self.graphdef, trainable, frozen = nnx.split(shapes, trainable_filter(config.trainable), ...)
        self.trainable, self.frozen = _Weights(trainable), _Weights(frozen)
        vae = vae_shapes(config)
        vae_factor, mask_factor = 2 ** (len(vae.config.block_out_channels) - 1), shapes.config.mask_factor
        if vae_factor != mask_factor:
            raise ValueError(
                f"config.model.face_locator_channels downsample {mask_factor}x, the VAE {vae_factor}x: they must agree"
            )
        self.vae_graphdef, vae_state = nnx.split(vae)
        self.vae = _Weights(vae_state)

        trainable_abstract = self.trainable.abstract()
        state_abstract = {
            "trainable": trainable_abstract,
            "opt": jax.eval_shape(self.tx.init, trainable_abstract),
            "ema": trainable_abstract if self.ema_decay else {},
            "step": jax.ShapeDtypeStruct((), jnp.int32),
            "rng": jax.ShapeDtypeStruct((2,), jnp.uint32),
        }
        frozen_abstract = {"emo": self.frozen.abstract(), "vae": self.vae.abstract()}
        self.state_shardings = sharding.param_shardings(state_abstract, mesh)
        self.frozen_shardings = sharding.param_shardings(frozen_abstract, mesh)
        self.state_abstract = _with_shardings(state_abstract, self.state_shardings)
        self.frozen_abstract = _with_shardings(frozen_abstract, self.frozen_shardings)
        self._step = jax.jit(
            self._train_step,
            in_shardings=(self.state_shardings, self.frozen_shardings, None),
            out_shardings=(self.state_shardings, sharding.replicated(mesh)),
            donate_argnums=0,
        )
        self._preview = jax.jit(self._preview_frames, out_shardings=sharding.replicated(mesh))

    # -- weights -------------------------------------------------------------------------------------------------

    def initial_state(self) -> tuple[dict, dict, list[str]]:
        """(state, frozen, what init did): the stage's starting weights (config.init), placed on the mesh."""
        from emo_jax.train.init import initialise

        model = build_emo(self.config, self.config.seed)
        done = initialise(model, self.config)
        vae = build_vae(self.config, self.config.seed + 1)
        _, trainable, frozen = nnx.split(model, trainable_filter(self.config.trainable), ...)
        trainable = _flat(trainable)
        state = {
            "trainable": trainable,
            "opt": self.tx.init(trainable),
            "ema": jax.tree.map(jnp.copy, trainable) if self.ema_decay else {},  # own buffers: the step donates both
            "step": jnp.zeros((), jnp.int32),
            "rng": jax.random.key_data(jax.random.key(self.config.seed)),
        }
        frozen = {"emo": _flat(frozen), "vae": _flat(nnx.state(vae))}
        return jax.device_put(state, self.state_shardings), jax.device_put(frozen, self.frozen_shardings), done

    def model(self, trainable: Flat, frozen: Flat):
        return nnx.merge(self.graphdef, self.trainable.state(trainable), self.frozen.state(frozen))

    # -- the step ------------------------------------------------------------------------------------------------

    def _train_step(self, state: dict, frozen: dict, batch: dict) -> tuple[dict, StepOutput]:
        key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
        vae = nnx.merge(self.vae_graphdef, self.vae.state(frozen["vae"]))
        inputs, truth = training_inputs(vae, batch, key, self.objective, self.dropout, self.augment)
        abar = jnp.asarray(self.objective.abar)

        def loss_fn(trainable: Flat):
            prediction = self.model(trainable, frozen["emo"])(**inputs)
            return diffusion_loss.denoising_loss(
                prediction,
                truth["x0"],
                truth["noise"],
                truth["timesteps"],
                abar,
                prediction_type=self.objective.prediction_type,
                snr_gamma=self.objective.snr_gamma,
                weights=truth.get("weights"),
                snr_floor=self.objective.snr_floor,
            )

        (loss, per_sample), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["trainable"])
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt = self.tx.update(grads, state["opt"], state["trainable"])
        new = {"trainable": optax.apply_updates(state["trainable"], updates), "opt": opt}
        if self.ema_decay:
            d = self.ema_decay
            new["ema"] = jax.tree.map(lambda e, p: d * e + (1 - d) * p, state["ema"], new["trainable"])
        else:
            new["ema"] = state["ema"]
        # A non-finite step changes nothing but the step count (the batch is consumed).
        new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, {k: state[k] for k in new})
        new.update(step=state["step"] + 1, rng=state["rng"])
        return new, StepOutput(loss, grad_norm, finite, per_sample, truth["timesteps"])

    def compiled_step(self, batch_abstract: dict):
        """The step compiled for batches shaped like `batch_abstract` (arrays or ShapeDtypeStructs)."""
        batch = _with_shardings(batch_abstract, sharding.batch_shardings(batch_abstract, self.mesh))
        return self._step.lower(self.state_abstract, self.frozen_abstract, batch).compile()

    def _preview_frames(self, state: dict, frozen: dict, batch: dict, key: jax.Array):
        """Truth and predicted clean frames of the first sample, decoded: ([F, S, S, 3], [F, S, S, 3], t)."""
        vae = nnx.merge(self.vae_graphdef, self.vae.state(frozen["vae"]))
        inputs, truth = training_inputs(vae, batch, key, self.objective, Dropout(), MotionAugment())
        prediction = self.model(state["trainable"], frozen["emo"])(**inputs)
        x0 = schedules.predict_x0(
            self.objective.prediction_type,
            prediction,
            inputs["noisy"],
            truth["timesteps"],
            jnp.asarray(self.objective.abar),
        )
        decoded = vae.decode(x0[0] / vae.config.scaling_factor)
        return to_pixels(batch["frames"][0]), jnp.clip(decoded, -1, 1), truth["timesteps"][0]

    def preview(self, state, frozen, batch, key):
        return self._preview(state, frozen, batch, key)


def step_flops(compiled) -> float:
    """FLOPs of one call of a compiled step, as XLA counts them (per device under SPMD)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0))


def _with_shardings(tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


# -- a run ---------------------------------------------------------------------------------------------------------


def maybe_initialize_distributed() -> None:
    """`jax.distributed.initialize()` where the environment describes several processes (a coordinator address,
    a SLURM job of several tasks, or a multi-host TPU slice). The launchers (launch/) name every process's place:
    JAX_COORDINATOR_ADDRESS and JAX_LOCAL_DEVICE_IDS, which jax reads itself, and JAX_NUM_PROCESSES and
    JAX_PROCESS_ID, passed on from here; what is not named, jax detects (SLURM, Cloud TPU)."""
    env = os.environ
    several = (
        env.get("JAX_COORDINATOR_ADDRESS")
        or int(env.get("SLURM_NTASKS", "1")) > 1
        or "," in env.get("TPU_WORKER_HOSTNAMES", "")
    )
    if not several or jax.distributed.is_initialized():
        return
    named = {}
    for argument, variable in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID")):
        if variable in env:
            if not env[variable].isdigit():
                raise ValueError(f"environment variable {variable}={env[variable]!r}: expected a whole number")
            named[argument] = int(env[variable])
    jax.distributed.initialize(**named)


def dataset_source(config: ml_collections.ConfigDict):
    """The grain source training reads: the `emo_clips/<config.audio.encoder>` dataset in config.data.data_dir
    (whole-video audio features, as the sampler computes them), checked against the model: frame rate, audio
    feature shape."""
    from emo_jax.data.pipeline import data_source
    from emo_jax.data.tfds_builder import EmoClipsConfig

    d, encoder = config.data, config.audio.encoder
    if not d.data_dir:
        raise ValueError("config.data.data_dir is empty: give the TFDS data_dir of `emo-jax build-dataset`")
    if encoder not in ("logmel", "wav2vec2"):
        raise ValueError(f"config.audio.encoder must be 'logmel' or 'wav2vec2', got {encoder!r}")
    name = EmoClipsConfig(name="wav2vec2", audio="wav2vec2") if encoder == "wav2vec2" else encoder
    source = data_source(d.data_dir, name)
    first = source[0]
    where = f"{d.data_dir}/emo_clips/{encoder}"
    if abs(float(first["fps"]) - d.fps) > 1e-3:
        raise ValueError(f"{where}: clips at {float(first['fps']):g} fps, config.data.fps is {d.fps:g}")
    audio = config.model.get("audio")
    if audio is not None:
        have = tuple(first["audio_features"].shape[1:])
        if have != (audio.blocks, audio.channels):
            raise ValueError(
                f"{where}: audio features of {have[0]} layers x {have[1]}, the model's audio projection reads "
                f"{audio.blocks} x {audio.channels} (config.model.audio)"
            )
    return source


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The config as this run uses it: speed buckets measured by preprocessing (config.data.report) and the
    layout and scaling factor of a VAE checkpoint (config.vae.checkpoint) filled in, so the saved config
    describes the run's models on its own."""
    config = ml_collections.ConfigDict(config.to_dict())
    if config.vae.checkpoint:
        vae = vae_shapes(config).config
        config.vae.scaling_factor = vae.scaling_factor
        config.vae.layout = {
            f.name: getattr(vae, f.name) for f in dataclasses.fields(vae) if f.name != "scaling_factor"
        }
    if config.model.get("speed") is not None and config.data.report:
        report = location(config.data.report)
        if not report.is_file():
            raise FileNotFoundError(f"{report}: no preprocessing report (config.data.report)")
        buckets = json.loads(report.read_text()).get("speed_buckets")
        if not buckets:
            raise ValueError(f"{report}: no speed_buckets (too few kept videos?)")
        config.model.speed.centres, config.model.speed.radii = list(buckets["centres"]), list(buckets["radii"])
    return config


class _Preemption:
    """SIGTERM (preemption, `kill`) asks the loop to save and stop at the next step boundary; a second SIGTERM
    ends the process at once (e.g. while it waits for data that never comes)."""

    def __init__(self):
        self.requested = False
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def train(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    *,
    allow_config_change: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Trains until config.train.steps, resuming from the workdir's last checkpoint. -> the last logged metrics."""
    from tqdm import tqdm

    from emo_jax.data.pipeline import PipelineConfig, make_loader

    maybe_initialize_distributed()
    config = resolve_config(config)
    workdir = location(workdir)
    check_workdir_config(workdir, config.to_dict(), allow_changes=allow_config_change)
    mesh = sharding.make_mesh(config.mesh.shape)
    source = dataset_source(config)
    d, t = config.data, config.train
    hosts = jax.process_count()
    if d.batch_size % hosts:
        raise ValueError(f"config.data.batch_size {d.batch_size} does not split over {hosts} hosts")
    checkpoints = Checkpoints(workdir, every=t.checkpoint_every, keep=t.keep_checkpoints)
    start = checkpoints.latest_step()
    worker_count = d.worker_count
    saved_workers = None if start is None else checkpoints.data_worker_count(start)
    if saved_workers is not None and saved_workers != worker_count:
        log.warning(
            "data.worker_count %d: resuming with the checkpoint's %d instead (grain's position is per worker)",
            worker_count,
            saved_workers,
        )
        worker_count = saved_workers
    loader = make_loader(
        source,
        PipelineConfig(
            num_frames=d.num_frames,
            num_motion_frames=d.num_motion_frames,
            size=d.size,
            window=d.window,
            batch_size=d.batch_size // hosts,
            seed=config.seed,
            worker_count=worker_count,
            mask_frames=d.mask_window if d.num_frames == 1 else 0,
            require_audio=config.model.get("audio") is not None,
            mouth_mask=bool(config.loss.get("mouth_weight", 0.0)),
        ),
    )
    iterator = iter(loader)
    trainer = Trainer(config, mesh)
    writer = MetricWriter(workdir)
    config_dict = config.to_dict()
    if start is not None:
        restored = checkpoints.restore(
            start, {"state": trainer.state_abstract, "frozen": trainer.frozen_abstract}, iterator
        )
        state, frozen = restored["state"], restored["frozen"]
        log.info("resumed from %s at step %d", checkpoints.directory, start)
    else:
        state, frozen, done = trainer.initial_state()
        start = 0
        for line in done:
            log.info("init: %s", line)
    preemption = _Preemption()

    def save(step: int, force: bool = False) -> None:
        checkpoints.save(step, {"state": state, "frozen": frozen}, iterator, config_dict, force=force)

    step_fn = flops = peak = None
    window: dict[str, list] = {"loss": [], "per_sample": [], "timesteps": [], "grad_norm": [], "time": []}
    last: dict[str, Any] = {}
    bar = tqdm(total=t.steps, initial=start, unit="step", disable=not progress or jax.process_index() != 0)
    step = start
    try:
        while step < t.steps:
            host = next(iterator)
            video_ids, frames = host.pop("video_id"), host.pop("frame")
            batch = sharding.global_batch(host, mesh)
            if step_fn is None:  # compiled once, for this batch shape; its FLOPs for MFU
                step_fn = trainer.compiled_step(batch)
                flops, peak = step_flops(step_fn), peak_flops(jax.devices()[0])
            began = time.perf_counter()
            state, out = step_fn(state, frozen, batch)
            out = jax.device_get(out)
            seconds = time.perf_counter() - began
            step += 1
            if not out.finite:
                where = ", ".join(f"{v} frame {f}" for v, f in zip(video_ids, frames))
                message = f"step {step}: loss {out.loss} / grad norm {out.grad_norm} is not finite (batch: {where})"
                if t.on_nan == "skip":
                    log.warning("%s; batch skipped", message)
                    continue
                save(step, force=True)  # the state is the last good one: a non-finite step changes no weight
                checkpoints.wait()
                raise NonFiniteLoss(f"{message}; saved the last good state at step {step} in {checkpoints.directory}")
            for name, value in (("loss", out.loss), ("grad_norm", out.grad_norm), ("time", seconds)):
                window[name].append(float(value))
            window["per_sample"].append(out.per_sample)
            window["timesteps"].append(out.timesteps)
            bar.update(1)
            bar.set_postfix(loss=f"{out.loss:.4f}")
            if step % t.log_every == 0 or step == t.steps:
                last = _summary(step, window, trainer, config, flops, peak)
                writer.scalars(step, last)
                window = {k: [] for k in window}
            if t.image_every and (step % t.image_every == 0 or step == 1):
                truth, predicted, timestep = jax.device_get(
                    trainer.preview(state, frozen, batch, jax.random.key(config.seed + step))
                )
                writer.image(step, frame_grid(np.asarray(truth), np.asarray(predicted)))
            save(step, force=step == t.steps)
            if preemption.requested:
                save(step, force=True)
                log.warning("SIGTERM: saved step %d in %s; stopping", step, checkpoints.directory)
                break
    finally:
        bar.close()
        checkpoints.wait()
        checkpoints.close()
        writer.close()
        iterator = None  # grain workers end before the interpreter does
    return last


def _summary(step, window, trainer, config, flops, peak) -> dict[str, float]:
    seconds = float(np.median(window["time"]))
    per_sample = np.concatenate(window["per_sample"])
    timesteps = np.concatenate(window["timesteps"])
    values = {
        "loss": float(np.mean(window["loss"])),
        "grad_norm": float(np.mean(window["grad_norm"])),
        "learning_rate": float(trainer.lr(step - 1)),
        "step_seconds": seconds,
        "examples_per_second": config.data.batch_size / seconds,
        "memory_bytes": memory_in_use(),
        **timestep_buckets(per_sample, timesteps, config.schedule.num_train_timesteps),
    }
    if flops:
        values["flops_per_second"] = flops / seconds  # per device: cost_analysis counts one partition
        if peak:
            values["mfu"] = flops / seconds / peak
    return values
