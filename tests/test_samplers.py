"""DDIM and DPM-Solver++ 2M: every step equals diffusers' scheduler on the same model outputs."""

import jax.numpy as jnp
import numpy as np
import pytest
from peers import require

from emo_jax.diffusion import samplers, schedules

CASES = [
    # sampler, prediction type, zero-terminal SNR, spacing, steps, eta, strength (image-to-image below 1)
    ("ddim", "epsilon", False, "leading", 10, 0.0, 1.0),
    ("ddim", "epsilon", False, "linspace", 7, 1.0, 1.0),
    ("ddim", "v_prediction", True, "trailing", 40, 0.0, 1.0),
    ("ddim", "v_prediction", True, "trailing", 12, 0.5, 1.0),
    ("ddim", "epsilon", False, "leading", 20, 0.0, 0.6),
    ("dpm++", "epsilon", False, "linspace", 10, 0.0, 1.0),
    ("dpm++", "epsilon", False, "leading", 20, 0.0, 1.0),
    ("dpm++", "v_prediction", True, "trailing", 25, 0.0, 1.0),
    ("dpm++", "epsilon", False, "linspace", 20, 0.0, 0.6),
]


def _peer(torch, sampler, prediction, zero_snr, spacing, steps):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    common = dict(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type=prediction,
        timestep_spacing=spacing,
        rescale_betas_zero_snr=zero_snr,
    )
    if sampler == "ddim":
        peer = DDIMScheduler(clip_sample=False, set_alpha_to_one=True, steps_offset=0, **common)
    else:
        peer = DPMSolverMultistepScheduler(**common)
    peer.set_timesteps(steps)
    return peer


@pytest.mark.parity
@pytest.mark.parametrize("sampler, prediction, zero_snr, spacing, steps, eta, strength", CASES)
def test_every_step_matches_diffusers(sampler, prediction, zero_snr, spacing, steps, eta, strength):
    torch = require("torch")
    peer = _peer(torch, sampler, prediction, zero_snr, spacing, steps)
    first = steps - int(steps * strength)  # as diffusers' image-to-image pipelines begin
    if hasattr(peer, "set_begin_index"):  # DPM-Solver counts its steps from here (DDIM has no state)
        peer.set_begin_index(first)
    abar = schedules.alphas_cumprod(rescale_betas_zero_snr=zero_snr)
    table = samplers.make_table(
        sampler, abar, steps, prediction_type=prediction, eta=eta, timestep_spacing=spacing, strength=strength
    )
    np.testing.assert_array_equal(table.timesteps, peer.timesteps.numpy()[first:])

    rng = np.random.default_rng(0)
    shape = (2, 3, 8, 8, 4)
    x = rng.standard_normal(shape).astype(np.float32)
    ours, theirs = jnp.asarray(x), torch.from_numpy(x)
    arrays, x0_prev = table.arrays(), jnp.zeros(shape)
    for i, t in enumerate(table.timesteps):  # i counts from the first kept step
        output = rng.standard_normal(shape).astype(np.float32)
        noise = rng.standard_normal(shape).astype(np.float32)
        kwargs = dict(eta=eta, variance_noise=torch.from_numpy(noise)) if sampler == "ddim" else {}
        theirs = peer.step(torch.from_numpy(output), int(t), theirs, **kwargs).prev_sample
        ours, x0_prev = samplers.step(arrays, i, prediction, jnp.asarray(output), ours, x0_prev, jnp.asarray(noise))
        scale = max(1.0, float(theirs.abs().max()))
        np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), atol=2e-5 * scale, err_msg=f"step {i} (t={t})")


def test_deterministic_samplers_denoise_a_known_clean_sample():
    """With the exact noise as the model's output, every sampler lands on the clean sample it came from."""
    abar = schedules.alphas_cumprod()
    rng = np.random.default_rng(1)
    x0 = jnp.asarray(rng.standard_normal((1, 4, 4, 4)), jnp.float32)
    noise = jnp.asarray(rng.standard_normal((1, 4, 4, 4)), jnp.float32)
    for name in samplers.SAMPLERS:
        table = samplers.make_table(name, abar, 15, prediction_type="epsilon")
        assert not table.stochastic
        x = schedules.add_noise(x0, noise, jnp.asarray([table.timesteps[0]]), jnp.asarray(abar))
        arrays, x0_prev = table.arrays(), jnp.zeros_like(x0)
        for i in range(table.num_steps):
            x, x0_prev = samplers.step(arrays, i, "epsilon", noise, x, x0_prev)
        np.testing.assert_allclose(np.asarray(x), np.asarray(x0), atol=1e-4, err_msg=name)


def test_bad_settings_are_named():
    abar = schedules.alphas_cumprod(rescale_betas_zero_snr=True)
    with pytest.raises(ValueError, match="zero SNR"):
        samplers.ddim(abar, 10, prediction_type="epsilon", timestep_spacing="trailing")
    with pytest.raises(ValueError, match="sampler must be one of"):
        samplers.make_table("euler", abar, 10, prediction_type="v_prediction")
    with pytest.raises(ValueError, match="timestep_spacing"):
        samplers.ddim(abar, 10, prediction_type="v_prediction", timestep_spacing="karras")
    with pytest.raises(ValueError, match="steps must be"):
        samplers.ddim(abar, 0, prediction_type="v_prediction")
