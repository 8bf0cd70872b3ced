"""Read PyTorch weights from disk as numpy: safetensors, torch pickles, and diffusers model folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from emo_jax.convert.state_dict import ConversionError

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Weights file -> {key: numpy array}. bf16 tensors come back as ml_dtypes bfloat16 arrays.

    `.safetensors` needs only the safetensors package; `.bin/.pt/.pth/.ckpt` need torch (loaded with
    `weights_only=True`). A checkpoint that wraps its tensors in {'state_dict': ...} or {'net_recon': ...} (with
    other entries beside it) is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such weights file")
    if path.suffix in SAFETENSORS_SUFFIXES:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="flax") as f:
                return {key: np.asarray(f.get_tensor(key)) for key in f.keys()}
        except (SafetensorError, OSError) as e:
            raise ConversionError(f"{path}: not a readable safetensors file ({e})") from e
    if path.suffix in TORCH_SUFFIXES:
        try:
            import torch
        except ImportError as e:
            raise ConversionError(
                f"{path}: reading a PyTorch pickle needs torch (pip install 'emo-jax[test]'), "
                "or convert the file to .safetensors first"
            ) from e
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for a corrupt or non-pickle file
            raise ConversionError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
        for wrapper in ("state_dict", "net_recon"):  # Lightning-style, Deep3DFaceRecon's epoch_20.pth
            if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
        if not isinstance(obj, dict):
            raise ConversionError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
        return {
            key: (t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy())
            for key, t in obj.items()
            if isinstance(t, torch.Tensor)
        }
    raise ConversionError(
        f"{path}: unknown weights format {path.suffix!r} (expected {SAFETENSORS_SUFFIXES + TORCH_SUFFIXES})"
    )


def _read_model_folder(folder: Path, weights_stem: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """config.json + `{weights_stem}.safetensors` / `.bin`, or their sharded `.index.json` -> (config, state dict)."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ConversionError(f"{folder}: not a model folder (no config.json)")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise ConversionError(f"{config_path}: invalid JSON ({e})") from e
    for suffix in (".safetensors", ".bin"):
        single = folder / f"{weights_stem}{suffix}"
        if single.is_file():
            return config, read_state_dict(single)
        index = folder / f"{weights_stem}{suffix}.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state_dict: dict[str, np.ndarray] = {}
            for shard in shards:
                state_dict.update(read_state_dict(folder / shard))
            return config, state_dict
    raise ConversionError(f"{folder}: no {weights_stem}.safetensors or {weights_stem}.bin (nor a sharded index) found")


def read_diffusers_folder(
    folder: str | Path, *, variant: str | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A diffusers model folder (`config.json` + `diffusion_pytorch_model[.variant].{safetensors,bin}`,
    possibly sharded) -> (config dict, state dict)."""
    return _read_model_folder(Path(folder), "diffusion_pytorch_model" + (f".{variant}" if variant else ""))


def read_transformers_folder(folder: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A transformers model folder (`config.json` + `model.safetensors` or `pytorch_model.bin`, possibly
    sharded) -> (config dict, state dict)."""
    folder = Path(folder)
    stem = (
        "pytorch_model"
        if (folder / "pytorch_model.bin").is_file() or (folder / "pytorch_model.bin.index.json").is_file()
        else "model"
    )
    return _read_model_folder(folder, stem)
