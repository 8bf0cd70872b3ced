"""Training a small `AutoencoderKL` on a corpus' frames: the VAE a CPU-size model works in.

SD1.5's VAE is 84M parameters at /8; the tiny size needs its own (/2, `configs/emo_base.py`), and a random one
decodes noise. This fits one to the preprocessed frames with an L1 reconstruction loss plus a small KL term
(SD's VAE adds LPIPS and a patch GAN, which flat synthetic faces do not need), then sets `scaling_factor` to one
over the latents' standard deviation, as SD's 0.18215 was chosen. The result is an ordinary saved model folder
(`emo_jax.checkpoint.save_model`) that `config.vae.checkpoint` points at.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from PIL import Image

from emo_jax.models.vae import AutoencoderKL
from emo_jax.train.batch import to_pixels


@dataclasses.dataclass(frozen=True)
class VAETraining:
    steps: int = 2000
    batch_size: int = 16
    learning_rate: float = 1e-3
    kl_weight: float = 1e-6  # SD's VAE: 1e-6 against a pixel loss in [-1, 1]
    seed: int = 0


def preprocessed_frames(directory: str | Path, size: int, *, every: int = 2) -> np.ndarray:
    """Every `every`-th frame of every `emo-jax preprocess` video under `directory`/videos, at `size` px.
    -> [N, size, size, 3] uint8."""
    from emo_jax.data.preprocess import load_processed

    paths = sorted((Path(directory) / "videos").glob("*.npz"))
    if not paths:
        raise FileNotFoundError(f"{directory}/videos: no preprocessed videos (*.npz from emo-jax preprocess)")
    frames = []
    for path in paths:
        for jpeg in load_processed(path)["jpeg"][::every]:
            image = Image.open(io.BytesIO(jpeg)).convert("RGB")
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BICUBIC)
            frames.append(np.asarray(image))
    return np.stack(frames)


def vae_loss(vae: AutoencoderKL, pixels: jax.Array, key: jax.Array, kl_weight: float) -> tuple[jax.Array, dict]:
    """L1 of the reconstruction of a posterior sample + kl_weight * KL(posterior || N(0, 1)) per latent."""
    posterior = vae.encode(pixels)
    reconstruction = vae.decode(posterior.sample(key))
    l1 = jnp.abs(reconstruction - pixels).mean()
    kl = 0.5 * (posterior.mean**2 + jnp.exp(posterior.logvar) - 1.0 - posterior.logvar).sum((1, 2, 3)).mean()
    return l1 + kl_weight * kl, {"l1": l1, "kl": kl}


def train_vae(
    vae: AutoencoderKL,
    frames: np.ndarray,
    settings: VAETraining,
    log: Callable[[int, dict[str, float]], None] = lambda step, metrics: None,
) -> AutoencoderKL:
    """Fits `vae` (in place) to `frames` [N, S, S, 3] uint8 and returns it with its `scaling_factor` measured."""
    optimizer = nnx.Optimizer(
        vae, optax.adam(optax.cosine_decay_schedule(settings.learning_rate, settings.steps, 0.05)), wrt=nnx.Param
    )

    @nnx.jit
    def step(vae, optimizer, batch, key):
        pixels = to_pixels(batch)
        grad_fn = nnx.value_and_grad(lambda model: vae_loss(model, pixels, key, settings.kl_weight), has_aux=True)
        (loss, metrics), grads = grad_fn(vae)
        optimizer.update(vae, grads)
        return dict(metrics, loss=loss)

    rng = np.random.default_rng(settings.seed)
    key = jax.random.key(settings.seed)
    for i in range(1, settings.steps + 1):
        batch = frames[rng.integers(0, len(frames), settings.batch_size)]
        metrics = step(vae, optimizer, jnp.asarray(batch), jax.random.fold_in(key, i))
        log(i, {k: float(v) for k, v in metrics.items()})
    return with_measured_scale(vae, frames[rng.permutation(len(frames))[:256]])


def with_measured_scale(vae: AutoencoderKL, frames: np.ndarray) -> AutoencoderKL:
    """Sets `vae.config.scaling_factor` to 1 / std of the posterior means of `frames` (uint8 [N, S, S, 3])."""
    means = nnx.jit(lambda vae, x: vae.encode(to_pixels(x)).mean)(vae, jnp.asarray(frames))
    vae.config = dataclasses.replace(vae.config, scaling_factor=float(1.0 / jnp.std(means)))
    return vae


def reconstruction_psnr(vae: AutoencoderKL, frames: np.ndarray) -> float:
    """PSNR (dB, pixels in [0, 255]) of decode(posterior mean) against `frames` [N, S, S, 3] uint8."""
    decode = nnx.jit(lambda vae, x: vae.decode(vae.encode(to_pixels(x)).mean))
    out = np.clip((np.asarray(decode(vae, jnp.asarray(frames))) + 1.0) * 127.5, 0, 255)
    mse = np.mean((out - frames.astype(np.float32)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))
