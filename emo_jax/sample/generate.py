"""A talking video from a reference, audio features, a face mask and a head speed: clips of `num_frames`
chained by their last `num_motion_frames` frames, each denoised by one jitted loop.

Per video: the VAE encodes the reference and the ReferenceNet reads it once. Per clip: the last frames of the
previous clip are re-encoded (VAE, then ReferenceNet) as motion frames (zero maps for the first clip, as in
training), the whole denoising loop runs as one `lax.fori_loop` with every guidance branch in one batched
backbone call, and the VAE decodes the clip in chunks of frames; frames go to the caller as they are made, so
memory stays flat however long the audio.

Classifier-free guidance: `diffusion.guidance` (separate audio and reference scales; zero-weight branches are
not run).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from emo_jax.build import compute_of
from emo_jax.diffusion import guidance, samplers, schedules
from emo_jax.diffusion.loss import check_noise_share, frame_noise
from emo_jax.models import AutoencoderKL, kernels_in
from emo_jax.models.emo import EMO
from emo_jax.train.batch import to_pixels

SPEED_NAMES = ("slow", "normal", "fast")


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    sampler: str = "ddim"
    steps: int = 40
    eta: float = 0.0  # DDIM's noise; 0 deterministic
    timestep_spacing: str | None = None  # None: 'trailing' for zero-terminal-SNR schedules, else the sampler's
    guidance_audio: float = 3.5
    guidance_reference: float = 3.5
    seed: int = 0
    decode_chunk: int = 8  # frames per VAE decode call
    use_audio: bool = True  # False: every branch drops the audio (the audio-free baseline of evaluations)
    # 1: every clip starts from pure noise; below 1 it starts from the reference latent noised to the first of the
    # last int(steps * strength) steps (image-to-image, as diffusers' strength)
    strength: float = 1.0
    # share of the noise's variance common to a video's frames (`frame_noise`, one shared part for all its clips);
    # 0: independent draws
    noise_shared: float = 0.0

    def __post_init__(self):
        check_noise_share(self.noise_shared)

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, **changes) -> SamplingSettings:
        """The config's `sample` defaults (what the model was tuned with; noise_shared, where the section does not
        set it, the share the model was trained with, `loss.noise_shared`), then `changes` that are not None."""
        defaults = dict(config.get("sample", {}))
        defaults.setdefault("noise_shared", float(config.get("loss", {}).get("noise_shared", 0.0)))
        defaults.pop("speed", None), defaults.pop("mask_expand", None)
        return cls(**{**defaults, **{k: v for k, v in changes.items() if v is not None}})

    def table(self, config: ml_collections.ConfigDict) -> samplers.SamplerTable:
        abar = schedules.alphas_cumprod(**config.schedule)
        spacing = self.timestep_spacing
        if spacing is None:
            zero_snr = config.schedule.get("rescale_betas_zero_snr", False)
            spacing = "trailing" if zero_snr else ("leading" if self.sampler == "ddim" else "linspace")
        return samplers.make_table(
            self.sampler,
            abar,
            self.steps,
            prediction_type=config.model.prediction_type,
            eta=self.eta,
            timestep_spacing=spacing,
            strength=self.strength,
        )


def head_speed(speed: str | float, config: ml_collections.ConfigDict) -> float:
    """'slow' | 'normal' | 'fast' (the second, middle and second-to-last speed-bucket centres of the trained
    model) or degrees per frame."""
    centres = sorted(config.model.speed.centres) if config.model.get("speed") else [0.0]
    if isinstance(speed, str) and speed in SPEED_NAMES:
        index = {"slow": min(1, len(centres) - 1), "normal": len(centres) // 2, "fast": max(len(centres) - 2, 0)}
        return float(centres[index[speed]])
    try:
        value = float(speed)
    except ValueError:
        raise ValueError(f"speed must be one of {SPEED_NAMES} or degrees per frame, got {speed!r}") from None
    if not 0 <= value < 90:
        raise ValueError(f"speed must be in [0, 90) degrees per frame, got {value}")
    return value


class Progress:
    """What the jitted loop reports each step to (through `jax.debug.callback`): a callable or nothing."""

    step: Callable[[], None] | None = None

    @classmethod
    def report(cls, _) -> None:
        if cls.step is not None:
            cls.step()


def video_noise_key(key: jax.Array) -> jax.Array:
    """The key of the noise part common to a video's clips (`frame_noise`'s `common`), from the video's key whose
    `fold_in` with the clip index keys each clip: folded with a number no clip index reaches."""
    return jax.random.fold_in(key, 2**32 - 1)


def denoising_loop(
    predict: Callable[[jax.Array, jax.Array], jax.Array],
    table: samplers.SamplerTable,
    prediction_type: str,
    chosen: list[guidance.Branch],
    x: jax.Array,
    key: jax.Array,
    noise_shared: float = 0.0,
    common: jax.Array | None = None,
) -> jax.Array:
    """The sampler's steps from the start latents x [1, F, ...] as one `lax.fori_loop`: each step runs the guidance
    branches `chosen` as one batch, predict(x [K, ...], t [K]) -> outputs [K, ...], and combines them; `key` draws
    a stochastic sampler's noise (`frame_noise` with `noise_shared`, its shared part from `common`, folded with the
    step, where given). -> the clean latents [1, F, ...]."""
    arrays, k = table.arrays(), len(chosen)

    def body(i, carry):
        x, x0_prev = carry
        guided = guidance.combine(predict(jnp.repeat(x, k, axis=0), jnp.full((k,), arrays["timesteps"][i])), chosen)
        noise = None
        if table.stochastic:
            step_common = None if common is None else jax.random.fold_in(common, i)
            noise = frame_noise(jax.random.fold_in(key, i), x.shape, noise_shared, step_common)
        x, x0 = samplers.step(arrays, i, prediction_type, guided, x, x0_prev, noise)
        jax.debug.callback(Progress.report, i)
        return x, x0

    x, _ = jax.lax.fori_loop(0, table.num_steps, body, (x, jnp.zeros_like(x)))
    return x


def decode_in_chunks(decode: Callable[[jax.Array], jax.Array], latents: jax.Array, chunk: int) -> np.ndarray:
    """decode(latents [c, ...]) over latents [F, ...] in chunks of c = min(chunk, F) frames, the last one padded
    with copies of its final frame so every call has one shape (one compile) -> the outputs [F, ...] as numpy."""
    chunk, out = min(chunk, len(latents)), []
    for start in range(0, len(latents), chunk):
        part = latents[start : start + chunk]
        padded = jnp.concatenate([part, jnp.repeat(part[-1:], chunk - len(part), axis=0)])
        out.append(np.asarray(decode(padded))[: len(part)])
    return np.concatenate(out)


class VideoSampler:
    """`frames(...)` yields a video's frames [S, S, 3] uint8; one compile per clip shape and settings."""

    def __init__(self, model: EMO, vae: AutoencoderKL, config: ml_collections.ConfigDict, settings: SamplingSettings):
        self.config, self.settings = config, settings
        self.num_frames, self.num_motion = config.data.num_frames, config.model.num_motion_frames
        self.temporal = config.model.backbone.motion is not None
        self.table = settings.table(config)
        self.branches = guidance.branches(
            settings.guidance_audio, settings.guidance_reference, use_audio=settings.use_audio
        )
        self.scale = vae.config.scaling_factor
        self.prediction_type = config.model.prediction_type
        graph, state = nnx.split((model, vae))
        state = kernels_in(compute_of(config).dtype, state)
        self._encode_latents = jax.jit(lambda state, pixels: self._merge(graph, state)[1].encode(pixels).mean)
        self._decode = jax.jit(lambda state, latents: self._merge(graph, state)[1].decode(latents))
        self._reference = jax.jit(lambda state, latent: self._merge(graph, state)[0].encode_reference(latent))
        self._motion = jax.jit(lambda state, latents, has: self._merge(graph, state)[0].encode_motion(latents, has))
        self._denoise = jax.jit(lambda state, *args: self._loop(self._merge(graph, state)[0], *args))
        self._state = state

    @staticmethod
    def _merge(graph, state) -> tuple[EMO, AutoencoderKL]:
        return nnx.merge(graph, state)

    def _loop(self, model: EMO, reference, ref_latent, motion, face_mask, audio, speed, key, common) -> jax.Array:
        """The denoising loop of one clip (batch 1): -> clean latents [1, F, h, w, C] (scaled). ref_latent
        [1, h, w, C]: the start of an image-to-image loop (settings.strength < 1). key: the clip's noise; common:
        the video's, for the part of the noise its clips share (`frame_noise`)."""
        k = len(self.branches)
        ref_keep = jnp.array([b[0] for b in self.branches], jnp.float32)
        audio_keep = jnp.array([b[1] for b in self.branches], jnp.float32)
        tile = lambda x: None if x is None else jnp.repeat(x, k, axis=0)
        conditions = dict(
            face_mask=tile(face_mask),
            motion=None if motion is None else jax.tree.map(tile, motion),
            audio_features=tile(audio),
            speed=tile(speed),
            reference_keep=ref_keep,
            audio_keep=audio_keep if audio is not None else None,
        )
        reference = jax.tree.map(tile, reference)
        h, w = face_mask.shape[1] // model.config.mask_factor, face_mask.shape[2] // model.config.mask_factor
        shape = (1, self.num_frames, h, w, model.config.backbone.in_channels)
        k_init, k_steps = jax.random.split(key)
        c_init, c_steps = jax.random.split(common)
        x = frame_noise(k_init, shape, self.settings.noise_shared, c_init)
        if self.settings.strength < 1:
            abar = jnp.asarray(schedules.alphas_cumprod(**self.config.schedule))
            start = jnp.broadcast_to(ref_latent[:, None], shape)
            x = schedules.add_noise(start, x, self.table.arrays()["timesteps"][:1], abar)
        predict = lambda x, t: model.denoise(x, t, reference, **conditions)  # noqa: E731
        return denoising_loop(
            predict, self.table, self.prediction_type, self.branches, x, k_steps, self.settings.noise_shared, c_steps
        )

    def _pixels_to_latents(self, pixels: np.ndarray) -> jax.Array:
        """uint8 [N, S, S, 3] -> scaled latent means [N, h, w, C]."""
        return self._encode_latents(self._state, to_pixels(jnp.asarray(pixels))) * self.scale

    def _decode_frames(self, latents: jax.Array) -> np.ndarray:
        """Scaled latents [F, h, w, C] -> uint8 [F, S, S, 3], in chunks of the same shape (one compile)."""
        decode = lambda chunk: self._decode(self._state, chunk / self.scale)  # noqa: E731
        pixels = decode_in_chunks(decode, latents, self.settings.decode_chunk)
        return np.clip((pixels + 1.0) * 127.5, 0, 255).round().astype(np.uint8)

    def through_vae(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames [N, S, S, 3] encoded and decoded by the VAE, `decode_chunk` frames at a time -> uint8
        [N, S, S, 3]: what the model's frames would be if it denoised perfectly (what its VAE lets through)."""
        latents = decode_in_chunks(self._pixels_to_latents, frames, self.settings.decode_chunk)
        return self._decode_frames(jnp.asarray(latents))

    def compile_loop(
        self, reference: np.ndarray, face_mask: np.ndarray, audio_features: np.ndarray | None, speed: float | None
    ):
        """The denoising loop of one clip compiled for `frames`' inputs of these shapes, from shapes alone (the
        weights may be abstract, `models.shapes_only`): XLA's executable, e.g. for its `memory_analysis()`."""
        shape = lambda *dims: jax.ShapeDtypeStruct(dims, jnp.float32)
        to_latent = lambda state, pixels: self._encode_latents(state, pixels) * self.scale
        ref_latent = jax.eval_shape(to_latent, self._state, shape(1, *reference.shape))
        ref_features = jax.eval_shape(self._reference, self._state, ref_latent)
        motion = None
        if self.temporal and self.num_motion:
            latents = shape(1, self.num_motion, *ref_latent.shape[1:])
            motion = jax.eval_shape(self._motion, self._state, latents, shape(1))
        audio = None if audio_features is None else shape(1, self.num_frames, *audio_features.shape[1:])
        speeds = None if speed is None else shape(1, self.num_frames)
        key = jax.eval_shape(lambda: jax.random.key(0))
        mask = shape(1, *face_mask.shape)
        args = (ref_features, ref_latent, motion, mask, audio, speeds, key, key)
        return self._denoise.lower(self._state, *args).compile()

    def num_clips(self, total_frames: int) -> int:
        return -(-total_frames // self.num_frames)

    def frames(
        self,
        reference: np.ndarray,
        face_mask: np.ndarray,
        audio_features: np.ndarray | None,
        speed: float | None,
        total_frames: int,
        on_clip: Callable[[int], None] | None = None,
    ) -> Iterator[np.ndarray]:
        """reference [S, S, 3] uint8; face_mask [S, S, 1]; audio_features [>= clips * F, 2m + 1, L, D] (None for
        a model without audio); speed in degrees per frame (None without speed layers) -> `total_frames` frames."""
        f, n = self.num_frames, self.num_motion
        clips = self.num_clips(total_frames)
        if audio_features is not None and len(audio_features) < clips * f:
            raise ValueError(f"audio features cover {len(audio_features)} frames, {clips * f} needed")
        ref_latent = self._pixels_to_latents(reference[None])  # [1, h, w, C]
        ref_features = self._reference(self._state, ref_latent)
        mask = jnp.asarray(face_mask[None])
        speeds = None if speed is None else jnp.full((1, f), speed, jnp.float32)
        previous, made = None, 0
        key = jax.random.key(self.settings.seed)
        common = video_noise_key(key)
        for clip in range(clips):
            motion = None
            if self.temporal and n:
                if previous is None:
                    latents, has = jnp.zeros((1, n) + ref_latent.shape[1:]), jnp.zeros((1,))
                else:
                    latents, has = self._pixels_to_latents(previous[-n:])[None], jnp.ones((1,))
                motion = self._motion(self._state, latents, has)
            audio = None if audio_features is None else jnp.asarray(audio_features[None, clip * f : (clip + 1) * f])
            conditions = (ref_features, ref_latent, motion, mask, audio, speeds)
            latents = self._denoise(self._state, *conditions, jax.random.fold_in(key, clip), common)
            previous = self._decode_frames(latents[0])
            for frame in previous[: total_frames - made]:
                yield frame
            made += len(previous)
            if on_clip is not None:
                on_clip(clip)
