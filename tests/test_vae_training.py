"""The tiny size's VAE: trained on preprocessed frames, saved with its measured scaling factor, and what a
training config that points at it records."""

import json

import numpy as np
from tiny import micro_config

from emo_jax.build import build_vae
from emo_jax.checkpoint import load_model, save_model
from emo_jax.data.synthetic import make_video
from emo_jax.train.trainer import resolve_config
from emo_jax.train.vae import VAETraining, reconstruction_psnr, train_vae


def test_training_lowers_the_loss_and_measures_the_scale(tmp_path):
    config = micro_config(0)
    frames = make_video(3, 3, seconds=0.6, fps=25, size=16).frames  # [15, 16, 16, 3]
    logged = []
    vae = build_vae(config, 1)
    before = reconstruction_psnr(vae, frames)
    vae = train_vae(vae, frames, VAETraining(steps=30, batch_size=4, learning_rate=3e-3), lambda s, m: logged.append(m))
    assert len(logged) == 30 and np.mean([m["l1"] for m in logged[-5:]]) < np.mean([m["l1"] for m in logged[:5]])
    assert reconstruction_psnr(vae, frames) > before + 3
    assert vae.config.scaling_factor != config.vae.scaling_factor and vae.config.scaling_factor > 0

    save_model(tmp_path / "vae", vae)
    assert load_model(tmp_path / "vae").config == vae.config
    config.vae.checkpoint, config.vae.random = str(tmp_path / "vae"), False
    resolved = resolve_config(config)  # what the run saves: the VAE as it is, not the layout's defaults
    assert resolved.vae.scaling_factor == vae.config.scaling_factor
    assert tuple(resolved.vae.layout.block_out_channels) == vae.config.block_out_channels
    saved = json.loads((tmp_path / "vae" / "config.json").read_text())
    assert saved["scaling_factor"] == vae.config.scaling_factor
