"""The bundled demo: the demo model (the tiny EMO, trained on the synthetic talking-face corpus) makes the
example face (a held-out synthetic identity) speak the example audio (held-out synthetic speech)."""

from __future__ import annotations

from pathlib import Path

from emo_jax.assets import DEMO_MODEL, EXAMPLE_AUDIO, EXAMPLE_IMAGE
from emo_jax.sample import SampleResult, SamplingSettings, load_bundle, sample_video


def run_demo(out: str | Path = "demo.mp4", *, progress: bool = True, **sampling) -> SampleResult:
    """Writes `out` and its PNG strip. `sampling`: SamplingSettings fields that override the demo model's
    defaults (e.g. steps=5), plus speed and mask_expand."""
    bundle = load_bundle(DEMO_MODEL)
    speed, mask_expand = sampling.pop("speed", None), sampling.pop("mask_expand", None)
    settings = SamplingSettings.from_config(bundle.config, **sampling)
    return sample_video(
        bundle, EXAMPLE_IMAGE, EXAMPLE_AUDIO, out, settings, speed=speed, mask_expand=mask_expand, progress=progress
    )
