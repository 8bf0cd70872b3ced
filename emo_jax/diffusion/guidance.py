"""Classifier-free guidance with separate audio and reference scales A and R, from three branches:

    pred = none + R * (reference_only - none) + A * (full - reference_only)

R = A is Hallo's form (the unconditional branch drops every condition); R = 1 keeps the reference in the
unconditional branch (EchoMimic's form); A = R = 1 is no guidance. `branches` lists only the branches with a
non-zero weight, so a sampler batches exactly those into one backbone call and sums them with `combine`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Branch = tuple[int, int, float]  # (reference_keep, audio_keep, weight)


def branches(audio: float, reference: float, *, use_audio: bool = True) -> list[Branch]:
    """The branches with a non-zero weight (the full branch first, always). Without `use_audio` every branch
    drops the audio (an audio-free baseline): only the reference scale applies."""
    if not use_audio:
        weighted = [(1, 0, reference), (0, 0, 1.0 - reference)]
    else:
        weighted = [(1, 1, audio), (1, 0, reference - audio), (0, 0, 1.0 - reference)]
    return [b for i, b in enumerate(weighted) if i == 0 or b[2] != 0]


def combine(outputs: jax.Array, chosen: list[Branch]) -> jax.Array:
    """outputs [K, ...]: one model output per branch, in `chosen`'s order -> the guided output [1, ...] (fp32)."""
    weights = jnp.asarray([b[2] for b in chosen], jnp.float32).reshape((-1,) + (1,) * (outputs.ndim - 1))
    return (outputs.astype(jnp.float32) * weights).sum(0, keepdims=True)
