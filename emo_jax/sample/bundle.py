"""What sampling loads: a trained EMO model, its VAE and the config they were trained with.

Three sources, one result (`Bundle`):
  * a training run (`emo-jax train --workdir`): the workdir (its latest checkpoint) or one step folder. The
    EMO weights are the EMA where the run kept one, else the trained weights, plus the frozen ones; the VAE is
    the one the run trained with (its weights are part of every checkpoint).
  * an exported bundle (`export_bundle`, `emo-jax export`): a folder with `config.json`, `emo.safetensors` and
    `vae.safetensors`, weights by dotted parameter path. Small and self-contained: the demo model ships as one.
  * a converted bundle (`emo-jax convert --hallo`): `config.json`, `emo/` (Orbax parameters, `save_params`) and
    `vae/` (`save_model`): for models too large for one safetensors file in memory, e.g. Hallo's.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from emo_jax.build import build_emo, compute_of, vae_config
from emo_jax.checkpoint import load_model, restore_params
from emo_jax.models import AutoencoderKL, shapes_only
from emo_jax.models.emo import EMO
from emo_jax.paths import location
from emo_jax.train.checkpointing import CONFIG_FILE, step_folder
from emo_jax.train.init import load_stage

BUNDLE_FILES = ("config.json", "emo.safetensors", "vae.safetensors")
CONVERTED_PARTS = ("config.json", "emo", "vae")


@dataclasses.dataclass
class Bundle:
    config: ml_collections.ConfigDict
    model: EMO
    vae: AutoencoderKL
    source: str  # where it came from (a path and, for a run, the step)


def read_run(path: str | Path) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray], str]:
    """A training workdir or step folder (local or gs://) -> (config dict, EMO weights, VAE weights,
    'path @ step N')."""
    path = location(path)
    step_dir = step_folder(path)
    if not (step_dir / "state").is_dir():
        raise FileNotFoundError(
            f"{path}: not a training workdir, checkpoint step folder or exported bundle "
            f"(none of checkpoints/, state/, {', '.join(BUNDLE_FILES)})"
        )
    config_file = step_dir / "config" / "metadata" if (step_dir / "config" / "metadata").is_file() else None
    config_file = config_file or step_dir.parent.parent / CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(f"{step_dir}: no config saved with the checkpoint ({config_file})")
    with ocp.PyTreeCheckpointer() as checkpointer:
        tree = checkpointer.metadata(step_dir / "state").item_metadata.tree
        use_ema = bool(tree["state"].get("ema"))
        wanted = {
            "state": {"ema" if use_ema else "trainable": tree["state"]["ema" if use_ema else "trainable"]},
            "frozen": tree["frozen"],
        }
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
        restored = checkpointer.restore(
            step_dir / "state", args=ocp.args.PyTreeRestore(wanted, restore_args=restore_args, partial_restore=True)
        )
    emo = {**restored["state"]["ema" if use_ema else "trainable"], **restored["frozen"]["emo"]}
    vae = restored["frozen"]["vae"]
    source = f"{path} @ step {step_dir.name}" + (" (EMA)" if use_ema else "")
    return json.loads(config_file.read_text()), emo, vae, source


def read_bundle(path: str | Path) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray], str]:
    """An exported bundle folder -> (config dict, EMO weights, VAE weights, its path)."""
    from safetensors.numpy import load_file

    path = Path(path).absolute()
    return (
        json.loads((path / "config.json").read_text()),
        load_file(path / "emo.safetensors"),
        load_file(path / "vae.safetensors"),
        str(path),
    )


def load_bundle(path: str | Path) -> Bundle:
    """A training run or an exported bundle, built for sampling (weights strictly checked against the config)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--checkpoint {path}: does not exist")
    if all((path / name).exists() for name in CONVERTED_PARTS):
        return _load_converted(path.absolute())
    is_bundle = all((path / name).is_file() for name in BUNDLE_FILES)
    config_dict, emo_weights, vae_weights, source = (read_bundle if is_bundle else read_run)(path)
    config = ml_collections.ConfigDict(config_dict)
    config.vae.checkpoint, config.vae.random = "", True  # the weights come from here, not from the VAE folder
    model = shapes_only(lambda: build_emo(config, 0))
    load_stage(model, emo_weights, keep=[], source=f"{source} (EMO)")
    vae_layout = vae_config(config)
    vae = shapes_only(lambda: AutoencoderKL(vae_layout, compute=compute_of(config), rngs=nnx.Rngs(0)))
    load_stage(vae, vae_weights, keep=[], source=f"{source} (VAE)")
    return Bundle(config, model, vae, source)


def export_bundle(checkpoint: str | Path, out: str | Path) -> Path:
    """A training run's weights (EMA where kept) -> an exported bundle folder `out` (fp32 safetensors). The
    config keeps everything but the training machine's paths (data, VAE folder), and says where it came from."""
    from safetensors.numpy import save_file

    config, emo, vae, source = read_run(checkpoint)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads(json.dumps(config))  # a copy; the training machine's paths go, the weights are here
    config["data"].update(data_dir="", report="")
    config["vae"].update(checkpoint="", random=False)
    config["exported_from"] = source
    save_file({k: np.ascontiguousarray(v) for k, v in emo.items()}, out / "emo.safetensors")
    save_file({k: np.ascontiguousarray(v) for k, v in vae.items()}, out / "vae.safetensors")
    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    return out


def _load_converted(path: Path) -> Bundle:
    config = ml_collections.ConfigDict(json.loads((path / "config.json").read_text()))
    compute = compute_of(config)
    # kernels read in the compute dtype: Hallo's model samples in fp16 from 4.2 GiB of kernels instead of 8.4
    model = restore_params(path / "emo", shapes_only(lambda: build_emo(config, 0)), kernel_dtype=compute.dtype)
    vae = load_model(path / "vae", compute=compute)
    return Bundle(config, model, vae, str(path))
