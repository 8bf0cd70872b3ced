"""Hallo's `pretrained_models` folder with tiny random weights, laid out as its README lays it out (needs torch and
diffusers; with `preprocessing` also onnx and transformers).

The layout of `net.pth` is tests/data/hallo_net_keys.json (written by Hallo's own modules at tiny sizes). The
landmarker's `.task` file is an empty placeholder: no tiny model can stand in for mediapipe's, so tests that
sample replace `face_landmarks`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from emo_jax.models.emo import AudioProjectionConfig, ImageEmbeddingConfig
from emo_jax.models.vae import AutoencoderKLConfig

HALLO_KEYS = Path(__file__).parent / "data" / "hallo_net_keys.json"
# Hallo's DDIM scheduler: configs/inference/default.yaml's noise_scheduler_kwargs with enable_zero_snr's changes
HALLO_SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="linear",
    clip_sample=False,
    steps_offset=1,
    prediction_type="v_prediction",
    rescale_betas_zero_snr=True,
    timestep_spacing="trailing",
)
# A VAE that scales by 8: the face locator turns 8 pixels into one latent, as in SD.
VAE_BY_8 = AutoencoderKLConfig(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=8)


def layout() -> dict:
    return json.loads(HALLO_KEYS.read_text())


def model_sizes(net_layout: dict) -> dict:
    """`hallo_config` / `from_hallo` keyword arguments for the layout's audio and image-embedding sizes."""
    return dict(
        audio=AudioProjectionConfig(**net_layout["audio"]),
        image_embedding=ImageEmbeddingConfig(**net_layout["image_embedding"]),
    )


def write_pretrained_models(
    folder: Path, vae: AutoencoderKLConfig, *, preprocessing: bool = False, seed: int = 0
) -> dict[str, np.ndarray]:
    """Writes hallo/net.pth, stable-diffusion-v1-5/unet/config.json and sd-vae-ft-mse/ (and, with
    `preprocessing`, face_analysis/models/ and wav2vec/wav2vec2-base-960h/) -> the net.pth state dict."""
    import diffusers
    import torch

    net_layout = layout()
    rng = np.random.default_rng(seed)
    net = {k: rng.standard_normal(shape).astype(np.float32) for k, shape in net_layout["keys"].items()}
    (folder / "hallo").mkdir(parents=True)
    torch.save({k: torch.from_numpy(v) for k, v in net.items()}, folder / "hallo" / "net.pth")
    (folder / "stable-diffusion-v1-5" / "unet").mkdir(parents=True)
    unet_config = dict(net_layout["unet_config"], _class_name="UNet2DConditionModel")
    (folder / "stable-diffusion-v1-5" / "unet" / "config.json").write_text(json.dumps(unet_config))
    torch.manual_seed(seed)
    diffusers.AutoencoderKL(**vae.to_diffusers()).save_pretrained(folder / "sd-vae-ft-mse")
    if preprocessing:
        import transformers
        from onnx_faces import detector, recognizer

        from emo_jax.sample.hallo_faces import DETECTOR_FILE, LANDMARKER_FILE, RECOGNIZER_FILE

        models = folder / "face_analysis" / "models"
        models.mkdir(parents=True)
        detector(models / DETECTOR_FILE)
        recognizer(models / RECOGNIZER_FILE, dim=net_layout["image_embedding"]["dim"])
        (models / LANDMARKER_FILE).write_bytes(b"")
        audio = net_layout["audio"]
        config = transformers.Wav2Vec2Config(
            hidden_size=audio["channels"],
            num_hidden_layers=audio["blocks"],
            num_attention_heads=4,
            intermediate_size=32,
            conv_dim=(32,) * 7,
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
        )
        transformers.Wav2Vec2Model(config).save_pretrained(folder / "wav2vec" / "wav2vec2-base-960h")
    return net


def write_converted_folder(root: Path) -> tuple[Path, Path]:
    """root/pretrained_models (with preprocessing) and root/hallo_converted, its bundle for 8-frame clips at
    128 px and 2 steps -> (the folder, the bundle)."""
    from emo_jax.config import load_config
    from emo_jax.convert.hallo import convert_folder, hallo_config

    folder = root / "pretrained_models"
    write_pretrained_models(folder, VAE_BY_8, preprocessing=True)
    net_layout = layout()
    config = load_config("configs/hallo.py:float32")
    config.model = hallo_config(net_layout["unet_config"], **model_sizes(net_layout)).to_dict()
    config.data.update(size=128, num_frames=8)
    config.sample.steps = 2
    convert_folder(folder, root / "hallo_converted", config)
    return folder, root / "hallo_converted"
