"""DDIM and DPM-Solver++ (2M) as tables of per-step coefficients, so a whole denoising loop is one `fori_loop`.

Both samplers' updates are linear in what the step knows: the current sample x, the model's clean-sample
estimate x0 (and, for the second-order DPM-Solver++, the previous step's x0), the noise estimate eps and fresh
noise z:

    x_next = c_x * x + c_x0 * x0 + c_x0_prev * x0_prev + c_eps * eps + c_noise * z

`ddim(...)` and `dpm_solver_pp(...)` compute those coefficients once on the host (float64) from the schedule;
`step` applies row i inside the jitted loop. Each step equals diffusers' `DDIMScheduler.step` /
`DPMSolverMultistepScheduler.step` (solver_order=2, midpoint, lower_order_final, final_sigmas_type='zero')
on the same inputs (tests/test_samplers.py).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
SAMPLERS = ("ddim", "dpm++")


@dataclasses.dataclass(frozen=True)
class SamplerTable:
    """Per-step rows (all [n]): timesteps (descending), sqrt(abar_t) and sqrt(1 - abar_t) to turn the model
    output into x0 and eps, and the update coefficients above."""

    timesteps: np.ndarray
    sqrt_abar: np.ndarray
    sqrt_one_minus_abar: np.ndarray
    c_x: np.ndarray
    c_x0: np.ndarray
    c_x0_prev: np.ndarray
    c_eps: np.ndarray
    c_noise: np.ndarray

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    @property
    def stochastic(self) -> bool:
        return bool(np.any(self.c_noise != 0))

    def rows(self, first: int) -> SamplerTable:
        """The table from step `first` on (image-to-image: the loop starts part-way down the schedule)."""
        return SamplerTable(**{f.name: getattr(self, f.name)[first:] for f in dataclasses.fields(self)})

    def arrays(self) -> dict[str, jax.Array]:
        """The table as float32 device arrays (timesteps int32), for the jitted loop."""
        return {
            f.name: jnp.asarray(getattr(self, f.name), jnp.int32 if f.name == "timesteps" else jnp.float32)
            for f in dataclasses.fields(self)
        }


def _spaced(num_train: int, steps: int, spacing: str, *, steps_offset: int, extra: int) -> np.ndarray:
    """Descending timesteps as diffusers spaces them; `extra` = 1 where DPM-Solver spaces n + 1 points."""
    if spacing not in TIMESTEP_SPACINGS:
        raise ValueError(f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {spacing!r}")
    if not 1 <= steps <= num_train:
        raise ValueError(f"steps must be in 1..{num_train}, got {steps}")
    if spacing == "trailing":
        return (np.round(np.arange(num_train, 0, -num_train / steps)) - 1).astype(np.int64)
    if spacing == "linspace":
        return np.linspace(0, num_train - 1, steps + extra).round()[::-1][:steps].astype(np.int64)
    ratio = num_train // (steps + extra)
    return ((np.arange(steps + extra) * ratio).round()[::-1][:steps] + steps_offset).astype(np.int64)


def _x0_eps_rows(abar: np.ndarray, timesteps: np.ndarray, prediction_type: str) -> tuple[np.ndarray, np.ndarray]:
    a = abar[timesteps]
    if prediction_type == "epsilon" and np.any(a == 0):
        raise ValueError(
            "an epsilon-predicting model cannot start from zero SNR (abar = 0 at the first timestep): "
            "use v-prediction with rescale_betas_zero_snr, or 'leading' timesteps"
        )
    return np.sqrt(a), np.sqrt(1 - a)


def ddim(
    abar: np.ndarray,
    steps: int,
    *,
    prediction_type: str,
    eta: float = 0.0,
    timestep_spacing: str = "leading",
    steps_offset: int = 0,
    set_alpha_to_one: bool = True,
) -> SamplerTable:
    """DDIM (Song et al. 2020) as diffusers' `DDIMScheduler` (clip_sample=False, no thresholding): eta = 0 is
    deterministic, eta = 1 is DDPM-like."""
    abar = np.asarray(abar, np.float64)
    timesteps = _spaced(len(abar), steps, timestep_spacing, steps_offset=steps_offset, extra=0)
    prev = timesteps - len(abar) // steps
    final = 1.0 if set_alpha_to_one else abar[0]
    a, a_prev = abar[timesteps], np.where(prev >= 0, abar[np.maximum(prev, 0)], final)
    std = eta * np.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
    sqrt_a, sqrt_1ma = _x0_eps_rows(abar, timesteps, prediction_type)
    zeros = np.zeros(steps)
    return SamplerTable(
        timesteps=timesteps,
        sqrt_abar=sqrt_a,
        sqrt_one_minus_abar=sqrt_1ma,
        c_x=zeros,
        c_x0=np.sqrt(a_prev),
        c_x0_prev=zeros,
        c_eps=np.sqrt(np.maximum(1 - a_prev - std**2, 0.0)),
        c_noise=std,
    )


def dpm_solver_pp(
    abar: np.ndarray,
    steps: int,
    *,
    prediction_type: str,
    timestep_spacing: str = "linspace",
    steps_offset: int = 0,
    first: int = 0,
) -> SamplerTable:
    """DPM-Solver++ 2M (Lu et al. 2022) as diffusers' `DPMSolverMultistepScheduler` with its defaults
    (solver_order=2, midpoint, first step and last step first-order, final sigma 0). A zero-SNR schedule's last
    abar is raised to 2^-24, as diffusers does, so sigma stays finite. `first` > 0 starts the solver at that
    step (an image-to-image start: that step is first-order, as diffusers' first step)."""
    abar = np.asarray(abar, np.float64).copy()
    if abar[-1] == 0:
        abar[-1] = 2.0**-24
    timesteps = _spaced(len(abar), steps, timestep_spacing, steps_offset=steps_offset, extra=1)
    all_sigmas = np.sqrt((1 - abar) / abar)
    sigmas = np.interp(timesteps, np.arange(len(abar)), all_sigmas)
    sigmas = np.concatenate([sigmas, [0.0]])  # [n + 1]: the last step lands on the clean sample
    alpha = 1 / np.sqrt(sigmas**2 + 1)
    sigma_t = sigmas * alpha
    with np.errstate(divide="ignore"):
        lam = np.log(alpha) - np.log(sigma_t)  # +inf at the end
    c_x, c_x0, c_x0_prev = np.zeros(steps), np.zeros(steps), np.zeros(steps)
    for i in range(steps):
        decay = -np.expm1(-(lam[i + 1] - lam[i]))  # 1 - exp(-h); exactly 1 at the final step
        c_x[i] = sigma_t[i + 1] / sigma_t[i]
        first_order = i <= first or i == steps - 1
        if first_order:
            c_x0[i] = alpha[i + 1] * decay
        else:
            r0 = (lam[i] - lam[i - 1]) / (lam[i + 1] - lam[i])
            c_x0[i] = alpha[i + 1] * decay * (1 + 0.5 / r0)
            c_x0_prev[i] = -alpha[i + 1] * decay * 0.5 / r0
    sqrt_a, sqrt_1ma = _x0_eps_rows(abar, timesteps, prediction_type)
    zeros = np.zeros(steps)
    return SamplerTable(timesteps, sqrt_a, sqrt_1ma, c_x, c_x0, c_x0_prev, c_eps=zeros, c_noise=zeros).rows(first)


def make_table(
    sampler: str, abar: np.ndarray, steps: int, *, prediction_type: str, strength: float = 1.0, **options
) -> SamplerTable:
    """`sampler` in SAMPLERS; options: eta (ddim), timestep_spacing, steps_offset. strength < 1 keeps the last
    int(steps * strength) steps, as diffusers' image-to-image pipelines do (the sample starts as the noised
    init image at the first kept timestep)."""
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    first = steps - min(max(int(steps * strength), 1), steps)
    if sampler == "ddim":
        return ddim(abar, steps, prediction_type=prediction_type, **options).rows(first)
    if sampler == "dpm++":
        options.pop("eta", None)
        return dpm_solver_pp(abar, steps, prediction_type=prediction_type, first=first, **options)
    raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")


def x0_and_eps(
    prediction_type: str, output: jax.Array, sample: jax.Array, sqrt_abar: jax.Array, sqrt_one_minus_abar: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Model output (noise or v) at one step -> (clean-sample estimate, noise estimate)."""
    if prediction_type == "epsilon":
        return (sample - sqrt_one_minus_abar * output) / sqrt_abar, output
    if prediction_type == "v_prediction":
        return sqrt_abar * sample - sqrt_one_minus_abar * output, sqrt_abar * output + sqrt_one_minus_abar * sample
    raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")


def step(
    table: dict[str, jax.Array],
    i: jax.Array,
    prediction_type: str,
    output: jax.Array,
    sample: jax.Array,
    x0_prev: jax.Array,
    noise: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Step i of the loop (`table` from `SamplerTable.arrays()`): -> (next sample, this step's x0, which is the
    next step's `x0_prev`). Computes in float32."""
    row = {k: v[i] for k, v in table.items()}
    sample, output = sample.astype(jnp.float32), output.astype(jnp.float32)
    x0, eps = x0_and_eps(prediction_type, output, sample, row["sqrt_abar"], row["sqrt_one_minus_abar"])
    out = row["c_x"] * sample + row["c_x0"] * x0 + row["c_x0_prev"] * x0_prev + row["c_eps"] * eps
    if noise is not None:
        out = out + row["c_noise"] * noise
    return out, x0
