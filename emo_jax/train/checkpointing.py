"""Training checkpoints in a workdir (Orbax `CheckpointManager`), and reading a finished stage's weights.

    workdir/config.json                the run's full config (written once; a different config refuses to resume)
    workdir/checkpoints/<step>/state   every array of the run: trainable and frozen EMO weights, the VAE,
                                       optimizer state, EMA, step, RNG key
    workdir/checkpoints/<step>/data    the grain iterator's position (one file per host)
    workdir/checkpoints/<step>/config  the config again, so one step folder rebuilds its model on its own

Saves are asynchronous and atomic: a step folder appears only when complete, so a run killed mid-save resumes
from the checkpoint before. All hosts call `save`; Orbax writes each array's shards from the hosts that hold
them.
"""

from __future__ import annotations

import json
import os
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from emo_jax.paths import location

CONFIG_FILE = "config.json"
# Config entries a resumed run may change: how long and how verbosely it runs, where files are, the mesh, and
# the defaults sampling uses.
RESUMABLE_CHANGES = ("train.", "data.data_dir", "data.worker_count", "init.", "vae.checkpoint", "mesh.", "sample.")
# Config keys added after runs were made, with the value that does what those runs did: a saved config without
# one reads as having it, so such a run resumes with the new code unless the key is set otherwise.
ADDED_KEYS = {"loss.mouth_weight": 0.0, "loss.snr_floor": 0.0, "loss.noise_shared": 0.0}


class Checkpoints:
    """The checkpoints of one run. `save` every `every` steps (or when forced), keep the last `keep`."""

    def __init__(self, workdir: str | os.PathLike, *, every: int, keep: int):
        self.directory = location(workdir) / "checkpoints"
        self.every = every
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        handlers = {
            "state": ocp.StandardCheckpointHandler(),
            "data": grain.checkpoint.CheckpointHandler(),
            "config": ocp.JsonCheckpointHandler(),
        }
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def data_worker_count(self, step: int) -> int | None:
        """The grain worker count the iterator position at `step` was saved with (a position is per worker, so
        only a loader with as many workers can continue it); None if the step has no data position."""
        saved = sorted((self.directory / str(step) / "data").glob("process_*.json"))
        return int(json.loads(saved[0].read_text())["worker_count"]) if saved else None

    def save(self, step: int, state: Any, iterator, config: dict, *, force: bool = False) -> bool:
        """Starts an asynchronous save of `state` (a pytree of arrays) and the data position at every `every`-th
        step, or when forced; True if it saved."""
        if not (force or step % self.every == 0) or step == self.manager.latest_step():
            return False
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(iterator),
            config=ocp.args.JsonSave(config),
        )
        return self.manager.save(step, args=args, force=force)

    def restore(self, step: int, abstract_state: Any, iterator) -> Any:
        """The state saved at `step`, placed as `abstract_state`'s shardings say; moves `iterator` to its
        saved position."""
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), data=grain.checkpoint.CheckpointRestore(iterator)
            ),
        )
        return restored.state

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def check_workdir_config(workdir: str | os.PathLike, config: dict, *, allow_changes: bool = False) -> None:
    """Writes workdir/config.json on first use; later runs must bring the same config (apart from
    `RESUMABLE_CHANGES`) unless `allow_changes`. Only process 0 writes."""
    path = location(workdir) / CONFIG_FILE
    if path.is_file():
        saved = _with_added_keys(json.loads(path.read_text()))
        changed = [k for k in _differences(saved, config) if not k.startswith(RESUMABLE_CHANGES)]
        if changed and not allow_changes:
            shown = ", ".join(changed[:10]) + (f" and {len(changed) - 10} more" if len(changed) > 10 else "")
            raise ValueError(
                f"{path}: this workdir holds a run with another config (differs at {shown}); use another "
                "--workdir, or --allow-config-change to resume it with this config"
            )
        if not changed:
            return
    if jax.process_index() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _with_added_keys(saved: dict) -> dict:
    for dotted, value in ADDED_KEYS.items():
        *parents, leaf = dotted.split(".")
        node = saved
        for parent in parents:
            node = node.setdefault(parent, {})
        node.setdefault(leaf, value)
    return saved


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two JSON-like trees differ (lists and tuples compare equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return [] if json.dumps(list(a)) == json.dumps(list(b)) else [prefix.rstrip(".")]
    return [] if a == b else [prefix.rstrip(".")]


def step_folder(path: epath.Path) -> epath.Path:
    """A workdir's latest finished checkpoint step folder; any other path as it is."""
    if (path / "checkpoints").is_dir():
        steps = sorted(int(p.name) for p in (path / "checkpoints").iterdir() if p.name.isdigit())
        if not steps:
            raise FileNotFoundError(f"{path}: a training workdir without any finished checkpoint")
        return path / "checkpoints" / str(steps[-1])
    return path


def read_stage_params(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The EMO weights (trainable and frozen, by dotted path, as numpy) of a training run: a workdir (its latest
    checkpoint) or one step folder, or of an exported bundle (`emo-jax export`: its emo.safetensors, the EMA
    weights where the run kept them). Only those arrays are read, not the optimizer state."""
    path = location(path)
    if (path / "emo.safetensors").is_file():
        from safetensors.numpy import load

        return load((path / "emo.safetensors").read_bytes())
    step_dir = step_folder(path)
    if not (step_dir / "state").is_dir():
        raise FileNotFoundError(
            f"{path}: neither a training workdir, a checkpoint step folder (no state/) nor an exported bundle "
            "(no emo.safetensors)"
        )
    with ocp.PyTreeCheckpointer() as checkpointer:
        tree = checkpointer.metadata(step_dir / "state").item_metadata.tree
        wanted = {"state": {"trainable": tree["state"]["trainable"]}, "frozen": {"emo": tree["frozen"]["emo"]}}
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
        restored = checkpointer.restore(
            step_dir / "state", args=ocp.args.PyTreeRestore(wanted, restore_args=restore_args, partial_restore=True)
        )
    weights = {**restored["state"]["trainable"], **restored["frozen"]["emo"]}
    return {key: np.asarray(value) for key, value in weights.items()}
