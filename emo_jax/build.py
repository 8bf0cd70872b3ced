"""The models a training config describes: the EMO model, its VAE, and how they compute."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
from flax import nnx

from emo_jax.models import AutoencoderKL, AutoencoderKLConfig, Compute, shapes_only
from emo_jax.models.emo import EMO, EMOConfig

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_of(config: ml_collections.ConfigDict) -> Compute:
    """config.compute: dtype ('float32' | 'bfloat16' | 'float16', parameters stay fp32), attention, remat."""
    c = config.compute
    if c.dtype not in DTYPES:
        raise ValueError(f"config.compute.dtype must be one of {sorted(DTYPES)}, got {c.dtype!r}")
    return Compute(dtype=DTYPES[c.dtype], attention=c.attention, remat=bool(c.get("remat", False)))


def build_emo(config: ml_collections.ConfigDict, seed: int = 0) -> EMO:
    """The EMO model at its random initialisation from `seed`."""
    return EMO(EMOConfig.from_dict(config.model), compute=compute_of(config), rngs=nnx.Rngs(seed))


def vae_config(config: ml_collections.ConfigDict) -> AutoencoderKLConfig:
    return AutoencoderKLConfig(**dict(config.vae.layout.to_dict(), scaling_factor=config.vae.scaling_factor))


def vae_shapes(config: ml_collections.ConfigDict) -> AutoencoderKL:
    """The config's VAE built abstractly (`models.shapes_only`): from the checkpoint's config.json where one is
    given, else from `vae.layout`. Nothing is read but that JSON."""
    if config.vae.checkpoint:
        import json
        from pathlib import Path

        from emo_jax.models import abstract_model

        path = Path(config.vae.checkpoint) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"config.vae.checkpoint: {path} does not exist (a folder from emo-jax convert)")
        return abstract_model(json.loads(path.read_text()), compute=compute_of(config), source=str(path))
    layout = vae_config(config)
    return shapes_only(lambda: AutoencoderKL(layout, compute=compute_of(config), rngs=nnx.Rngs(0)))


def build_vae(config: ml_collections.ConfigDict, seed: int = 0) -> AutoencoderKL:
    """The config's frozen VAE: a converted checkpoint folder (`vae.checkpoint`, from `emo-jax convert`), or its
    layout at random init from `seed` where `vae.random` (the tiny size)."""
    compute = compute_of(config)
    if config.vae.checkpoint:
        from emo_jax.checkpoint import load_model

        vae = load_model(config.vae.checkpoint, compute=compute)
        if not isinstance(vae, AutoencoderKL):
            raise ValueError(f"config.vae.checkpoint {config.vae.checkpoint}: holds a {type(vae).__name__}, not a VAE")
        return vae
    if not config.vae.random:
        raise ValueError(
            "config.vae.checkpoint is empty: give a converted SD VAE folder (emo-jax convert path/to/sd15 --out DIR)"
        )
    return AutoencoderKL(vae_config(config), compute=compute, rngs=nnx.Rngs(seed))
