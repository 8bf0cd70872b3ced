"""PyTorch checkpoints (diffusers; later AnimateDiff, wav2vec2) -> emo_jax models."""

from emo_jax.convert.diffusers import from_diffusers_folder, from_diffusers_unet, from_diffusers_vae
from emo_jax.convert.files import read_diffusers_folder, read_state_dict
from emo_jax.convert.state_dict import ConversionError, load_state_dict

__all__ = [
    "ConversionError",
    "from_diffusers_folder",
    "from_diffusers_unet",
    "from_diffusers_vae",
    "load_state_dict",
    "read_diffusers_folder",
    "read_state_dict",
]
