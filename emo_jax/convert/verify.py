"""Cross-framework check of a conversion: the PyTorch model and ours on the same random inputs.

Needs torch and diffusers (the `test` extra); used by `emo-jax convert --verify` and the benchmarks.
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from emo_jax.models import AutoencoderKL, UNet


def relative_error(ours, reference) -> float:
    """||ours - reference|| / ||reference|| in float64."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.linalg.norm(ours - reference) / np.linalg.norm(reference))


def load_peer(folder: str | Path, class_name: str, variant: str | None = None):
    """The diffusers model in `folder` (local files only), in fp32 eval mode."""
    try:
        import diffusers
        import torch
    except ImportError as e:
        raise RuntimeError("--verify needs torch and diffusers: pip install 'emo-jax[test]'") from e
    cls = getattr(diffusers, class_name)
    return cls.from_pretrained(str(folder), variant=variant, local_files_only=True, torch_dtype=torch.float32).eval()


def verify(model: UNet | AutoencoderKL, peer, *, seed: int = 0) -> dict[str, float]:
    """Relative errors of `model` against the diffusers `peer` on random inputs (UNet: one noise prediction;
    VAE: encode mean and decode)."""
    import torch

    rng = np.random.default_rng(seed)
    nchw = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # noqa: E731
    nhwc = lambda t: t.numpy().transpose(0, 2, 3, 1)  # noqa: E731
    with torch.no_grad():
        if isinstance(model, UNet):
            c = model.config
            sample = rng.standard_normal((1, 32, 32, c.in_channels), dtype=np.float32)
            context = rng.standard_normal((1, 77, c.cross_attention_dim), dtype=np.float32)
            t = np.array([500])
            expected = nhwc(peer(nchw(sample), torch.from_numpy(t), torch.from_numpy(context)).sample)
            return {
                "noise prediction": relative_error(
                    model(jnp.asarray(sample), jnp.asarray(t), jnp.asarray(context)), expected
                )
            }
        c = model.config
        image = rng.uniform(-1, 1, (1, 64, 64, c.in_channels)).astype(np.float32)
        latent = rng.standard_normal((1, 8, 8, c.latent_channels), dtype=np.float32)
        mean = nhwc(peer.encode(nchw(image)).latent_dist.mean)
        decoded = nhwc(peer.decode(nchw(latent)).sample)
        return {
            "encode mean": relative_error(model.encode(jnp.asarray(image)).mean, mean),
            "decode": relative_error(model.decode(jnp.asarray(latent)), decoded),
        }
