"""Hallo's released model (fudan-generative-vision/hallo, `net.pth`) -> an `EMO` model in Hallo's layout.

`net.pth` holds Hallo's `Net`: `reference_unet.*` (an SD1.5 `UNet2DConditionModel`), `denoising_unet.*` (its
`UNet3DConditionModel`: SD's weights, AnimateDiff v2 motion modules in the original layout, audio modules),
`face_locator.*`, `imageproj.*` and `audioproj.*`. The key rules:
  * the five prefixes -> `reference_net`, `backbone`, `face_locator`, `image_projection`, `audio_projection`;
  * motion modules: the original AnimateDiff names -> diffusers' (`convert.animatediff`), frame-position
    buffers dropped (recomputed);
  * the motion modules of the backbone's stages without spatial attention are dropped: Hallo's inference never
    runs them (`MotionConfig.in_plain_stages`);
every other key must land on exactly one parameter and every parameter must be filled (`load_state_dict`).

`convert_folder` turns Hallo's `pretrained_models` folder into a converted bundle (`emo-jax convert --hallo`)
that sampling loads without torch.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from flax import nnx

from emo_jax.convert.animatediff import motion_key
from emo_jax.convert.state_dict import load_state_dict
from emo_jax.models import Compute, shapes_only
from emo_jax.models.emo import EMO, AudioProjectionConfig, EMOConfig, ImageEmbeddingConfig
from emo_jax.models.temporal import MotionConfig
from emo_jax.models.unet import CROSS_ATTN_DOWN, CROSS_ATTN_UP, UNetConfig

PREFIXES = {
    "reference_unet.": "reference_net.",
    "denoising_unet.": "backbone.",
    "face_locator.": "face_locator.",
    "imageproj.": "image_projection.",
    "audioproj.": "audio_projection.",
}
# What conversion reads from Hallo's `pretrained_models` folder, and where Hallo's README gets each part (all in
# the Hugging Face repo fudan-generative-vision/hallo, under pretrained_models/).
FOLDER_PARTS = {
    "hallo/net.pth": "Hallo's own weights (fudan-generative-vision/hallo: hallo/net.pth)",
    "stable-diffusion-v1-5/unet/config.json": "SD1.5's UNet config (fudan-generative-vision/hallo: "
    "stable-diffusion-v1-5/unet/, from runwayml/stable-diffusion-v1-5)",
    "sd-vae-ft-mse/config.json": "SD's fine-tuned VAE (fudan-generative-vision/hallo: sd-vae-ft-mse/, from "
    "stabilityai/sd-vae-ft-mse)",
}
_MOTION_STAGE = re.compile(r"^backbone\.(down|up)_blocks\.(\d+)\.motion_modules\.")


def hallo_config(
    unet_config: Mapping[str, Any],
    *,
    audio: AudioProjectionConfig = AudioProjectionConfig(),
    image_embedding: ImageEmbeddingConfig = ImageEmbeddingConfig(),
    face_locator_channels: tuple[int, ...] = (16, 32, 64, 128),
    motion_heads: int = 8,
    source: str = "unet config",
) -> EMOConfig:
    """Hallo's model around an SD1.5-layout UNet config.json dict, with the settings of Hallo's
    `configs/inference/default.yaml` and `scripts/inference.py`: a ReferenceNet without output layers, reference
    attention joined to self-attention,
    face-embedding tokens in attn2 of both UNets, region audio modules reading 768-wide audio tokens, AnimateDiff
    v2 motion modules (8 heads, 32 positions, per-frame GroupNorm) fed the motion frames' normed self-attention
    inputs, 2 motion frames, a 3-channel face-locator mask, v-prediction, and the arithmetic of Hallo's
    reference bank (`EMOConfig.reference_feature_dtype`, `reference_interleaved`). One more bank rule is the
    caller's: Hallo's ReferenceNet pass over B videos x (reference + n motion frames), rows ordered by video,
    gives row j the face-embedding tokens of video j mod B (pass them per row to `EMO.encode_reference` /
    `encode_motion`). The keyword arguments exist for smaller test models; their defaults are Hallo's."""
    unet = UNetConfig.from_diffusers({**unet_config, "_class_name": "UNet2DConditionModel"}, source=source)
    motion = MotionConfig(
        motion_num_attention_heads=motion_heads,
        motion_max_seq_length=32,
        norm_per_frame=True,
        motion_features="attention_input",
        in_plain_stages=False,
    )
    backbone = dataclasses.replace(
        unet,
        motion=motion,
        reference_attention="concat_self",
        audio_cross_attention_dim=unet.cross_attention_dim,
        audio_attention="regions",
    )
    return EMOConfig(
        reference_net=dataclasses.replace(unet, features_only=True),
        backbone=backbone,
        audio=audio,
        image_embedding=image_embedding,
        face_locator_conditioning_channels=3,
        guidance_drops_face=True,
        reference_feature_dtype="float16",
        reference_interleaved=True,
        face_locator_channels=face_locator_channels,
        num_motion_frames=2,
        prediction_type="v_prediction",
    )


def _plain_stages(config: UNetConfig) -> set[tuple[str, int]]:
    """(direction, index) of the backbone stages without spatial attention."""
    down = {("down", i) for i, kind in enumerate(config.down_block_types) if kind != CROSS_ATTN_DOWN}
    return down | {("up", i) for i, kind in enumerate(config.up_block_types) if kind != CROSS_ATTN_UP}


def hallo_key(key: str, plain_stages: set[tuple[str, int]] = frozenset()) -> str | None:
    """A key of Hallo's `net.pth` -> our parameter path (None: dropped on purpose); unknown prefixes pass
    through unchanged, so the loader reports them."""
    prefix = next((p for p in PREFIXES if key.startswith(p)), None)
    if prefix is None:
        return key
    key = PREFIXES[prefix] + key[len(prefix) :]
    if key.startswith("backbone.") and ".motion_modules." in key:
        stage = _MOTION_STAGE.match(key)
        if stage and (stage[1], int(stage[2])) in plain_stages:
            return None
        return motion_key(key)
    return key


def from_hallo(
    net_state_dict: Mapping[str, np.ndarray],
    unet_config: Mapping[str, Any],
    *,
    compute: Compute = Compute(),
    source: str = "hallo/net.pth",
    **config_overrides: Any,
) -> EMO:
    """Hallo's `net.pth` state dict (key -> numpy) + SD1.5's `unet/config.json` dict -> `EMO` in Hallo's layout
    (`hallo_config(unet_config, **config_overrides)`). Strict: every key is used or dropped by a rule above,
    every parameter is filled, or `ConversionError` lists what is not."""
    config = hallo_config(unet_config, source=source, **config_overrides)
    model = shapes_only(lambda: EMO(config, compute=compute, rngs=nnx.Rngs(0)))
    plain = _plain_stages(config.backbone)
    return load_state_dict(model, net_state_dict, source=source, rename=lambda k: hallo_key(k, plain))


def check_folder(folder: str | Path, parts: Mapping[str, str] = FOLDER_PARTS) -> Path:
    """Hallo's `pretrained_models` folder, with every missing part named and where to get it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder (Hallo's pretrained_models, as its README lays it out)")
    missing = [f"  {name}: {source}" for name, source in parts.items() if not (folder / name).exists()]
    if missing:
        raise FileNotFoundError(f"{folder}: Hallo's pretrained_models folder lacks\n" + "\n".join(missing))
    return folder


def read_folder(folder: str | Path, config: ml_collections.ConfigDict):
    """Hallo's `pretrained_models` folder -> a `sample.Bundle` in memory: the model of `net.pth` laid out from the
    folder's SD1.5 UNet config (the sizes of `config.model`, normally configs/hallo.py's), sd-vae-ft-mse, and
    `config` with that model and VAE. Reading `net.pth` needs torch."""
    from emo_jax.build import compute_of
    from emo_jax.convert.diffusers import from_diffusers_folder
    from emo_jax.convert.files import read_state_dict
    from emo_jax.sample.bundle import Bundle

    folder = check_folder(folder).absolute()
    unet_file = folder / "stable-diffusion-v1-5/unet/config.json"
    model = EMOConfig.from_dict(config.model)
    sizes = dict(
        audio=model.audio,
        image_embedding=model.image_embedding,
        face_locator_channels=model.face_locator_channels,
        motion_heads=model.backbone.motion.motion_num_attention_heads,
    )
    emo = from_hallo(
        read_state_dict(folder / "hallo/net.pth"),
        json.loads(unet_file.read_text()),
        compute=compute_of(config),
        source=str(folder / "hallo/net.pth"),
        **sizes,
    )
    vae = from_diffusers_folder(folder / "sd-vae-ft-mse")
    config = ml_collections.ConfigDict(config.to_dict())
    config.model = emo.config.to_dict()
    vae_layout = {k: v for k, v in dataclasses.asdict(vae.config).items() if k != "scaling_factor"}
    config.vae.update(checkpoint="", random=False, layout=vae_layout, scaling_factor=vae.config.scaling_factor)
    config.exported_from = f"{folder} (Hallo's pretrained_models)"
    return Bundle(config, emo, vae, f"{folder} (Hallo's pretrained_models, converted in memory)")


def convert_folder(folder: str | Path, out: str | Path, config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Hallo's `pretrained_models` folder -> a converted bundle at `out` (`sample.bundle`): `config.json`
    (`read_folder`'s config), `emo/` (the model's parameters, Orbax) and `vae/` (sd-vae-ft-mse,
    `checkpoint.save_model`). Reading `net.pth` needs torch; the bundle does not. Returns the config written."""
    from emo_jax.checkpoint import save_model, save_params

    bundle = read_folder(folder, config)
    out = Path(out)
    save_params(out / "emo", bundle.model)
    save_model(out / "vae", bundle.vae)
    (out / "config.json").write_text(json.dumps(bundle.config.to_dict(), indent=1) + "\n")
    return bundle.config
