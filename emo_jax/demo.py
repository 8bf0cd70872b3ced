"""The bundled demo: build the tiny models and run one denoising forward on a real photo.

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

from emo_jax.diffusion.schedules import add_noise, alphas_cumprod
from emo_jax.models import AutoencoderKL, AutoencoderKLConfig, UNet, UNetConfig, param_counts


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


def run_demo(config: ml_collections.ConfigDict) -> DemoResult:
    rngs = nnx.Rngs(config.seed)
    vae = AutoencoderKL(AutoencoderKLConfig.from_diffusers(config.vae.to_dict()), rngs=rngs)
    unet = UNet(UNetConfig.from_diffusers(config.unet.to_dict()), rngs=rngs)
    abar = jnp.asarray(alphas_cumprod(**config.schedule))
    scale = vae.config.scaling_factor

    @nnx.jit
    def denoise_once(vae, unet, image, key):
        k_latent, k_noise, k_context = jax.random.split(key, 3)
        latent = vae.encode(image).sample(k_latent) * scale
        noise = jax.random.normal(k_noise, latent.shape)
        t = jnp.full((image.shape[0],), config.demo_timestep)
        noisy = add_noise(latent, noise, t, abar)
        context = jax.random.normal(k_context, (image.shape[0], config.context_tokens, unet.config.cross_attention_dim))
        noise_pred = unet(noisy, t, context)
        a = abar[t][:, None, None, None]
        latent_pred = (noisy - jnp.sqrt(1 - a) * noise_pred) / jnp.sqrt(a)
        return {"latent": latent, "noise_pred": noise_pred, "decoded": vae.decode(latent_pred / scale)}

    image = jnp.asarray(astronaut(config.resolution))
    key = jax.random.key(config.seed)
    start = time.perf_counter()
    outputs = jax.block_until_ready(denoise_once(vae, unet, image, key))
    first = time.perf_counter() - start
    start = time.perf_counter()
    outputs = jax.block_until_ready(denoise_once(vae, unet, image, key))
    step = time.perf_counter() - start
    return DemoResult(
        shapes={"image": image.shape, **{k: v.shape for k, v in outputs.items()}},
        param_counts={"unet": sum(param_counts(unet).values()), "vae": sum(param_counts(vae).values())},
        first_call_s=first,
        step_s=step,
        outputs={k: np.asarray(v) for k, v in outputs.items()},
    )
