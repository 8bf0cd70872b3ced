"""The bundled demo: build the tiny EMO model and VAE and run one denoising forward on a real photo.

Random weights, so the picture it decodes is noise; what it shows is that the pieces fit and how fast the
jitted step runs. Later issues replace it with talking-head sampling.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from PIL import Image

from emo_jax.build import build_emo, build_vae
from emo_jax.diffusion.schedules import add_noise, alphas_cumprod, predict_x0
from emo_jax.models import param_counts


@dataclasses.dataclass
class DemoResult:
    shapes: dict[str, tuple[int, ...]]
    param_counts: dict[str, int]
    first_call_s: float
    step_s: float
    outputs: dict[str, np.ndarray]


def astronaut(resolution: int) -> np.ndarray:
    """`skimage.data.astronaut()` resized to [1, resolution, resolution, 3] in [-1, 1]."""
    from skimage import data

    image = Image.fromarray(data.astronaut()).resize((resolution, resolution), Image.Resampling.BICUBIC)
    return (np.asarray(image, np.float32) / 127.5 - 1.0)[None]


def run_demo(config: ml_collections.ConfigDict, demo_timestep: int = 500) -> DemoResult:
    """The config's EMO model and VAE at random init, one denoising forward of a clip of
    `config.data.num_frames` frames with `skimage.data.astronaut()` as the reference and synthetic speech."""
    from emo_jax.audio import LogMelFeatures, frame_features
    from emo_jax.data.synthetic import speech_audio

    vae = build_vae(config, config.seed + 1)
    model = build_emo(config, config.seed)
    abar = jnp.asarray(alphas_cumprod(**config.schedule))
    scale = vae.config.scaling_factor
    frames, size, fps = config.data.num_frames, config.data.size, config.data.fps
    audio, _ = speech_audio(frames / fps + 0.5, seed=config.seed)
    features = frame_features(audio, fps, frames, encoder=LogMelFeatures(config.model.audio.channels))[None]
    mask = np.zeros((1, size, size, 1), np.float32)
    mask[:, size // 8 : 7 * size // 8, size // 4 : 3 * size // 4] = 1  # a centred face box

    @nnx.jit
    def denoise_once(vae, model, image, key):
        k_latent, k_noise = jax.random.split(key)
        latent = vae.encode(image).sample(k_latent) * scale  # [1, h, w, 4]
        noise = jax.random.normal(k_noise, (1, frames) + latent.shape[1:])
        t = jnp.full((1,), demo_timestep)
        noisy = add_noise(jnp.broadcast_to(latent[:, None], noise.shape), noise, t, abar)
        speed = jnp.full((1, frames), 0.5)
        noise_pred = model(noisy, t, latent, face_mask=jnp.asarray(mask), audio_features=features, speed=speed)
        x0 = predict_x0(model.config.prediction_type, noise_pred, noisy, t, abar)
        return {"latent": latent, "noise_pred": noise_pred, "decoded": vae.decode(x0[0] / scale)}

    image = jnp.asarray(astronaut(size))
    key = jax.random.key(config.seed)
    start = time.perf_counter()
    outputs = jax.block_until_ready(denoise_once(vae, model, image, key))
    first = time.perf_counter() - start
    start = time.perf_counter()
    outputs = jax.block_until_ready(denoise_once(vae, model, image, key))
    step = time.perf_counter() - start
    return DemoResult(
        shapes={"image": image.shape, **{k: v.shape for k, v in outputs.items()}},
        param_counts={"emo": sum(param_counts(model).values()), "vae": sum(param_counts(vae).values())},
        first_call_s=first,
        step_s=step,
        outputs={k: np.asarray(v) for k, v in outputs.items()},
    )
