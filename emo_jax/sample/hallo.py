"""Hallo's sampling loop (its `scripts/inference.py` around `FaceAnimatePipeline`) for a model in Hallo's layout
(`convert.hallo`), arithmetic for arithmetic:

  * the video is cut into clips of `num_frames` (16); each clip's ReferenceNet pass reads the reference and
    `num_motion_frames` (2) motion frames: the reference itself repeated for the first clip, the previous clip's
    last decoded frames after it, as floats (not rounded to 8 bits);
  * the reference and motion pixels are encoded by the VAE's mean times 0.18215; where none of those pixels is
    below 0, diffusers' image processor (as Hallo calls it) maps them through 2x - 1 once more, and so does this;
  * two guidance branches, [unconditional, conditional], in that batch order: the unconditional one gets the image
    tokens of a zero face embedding, zero face-locator features and zero audio tokens, but the reference bank of
    its own ReferenceNet rows. The ReferenceNet's six rows (reference, motion 1, motion 2 per branch) read the
    two branches' image tokens alternately, row j branch j mod 2's, as Hallo's batch broadcast does;
  * one guidance scale g: uncond + g (cond - uncond); at g <= 1 only the conditional branch runs;
  * frames decoded to [0, 1] (clamped); the video is cut to the audio's frames and rounded down to 8 bits.

The clip's ReferenceNet passes and its whole denoising loop are one jitted function; the VAE decodes in chunks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from emo_jax.build import compute_of
from emo_jax.diffusion.loss import frame_noise
from emo_jax.models import AutoencoderKL, kernels_in
from emo_jax.models.emo import EMO
from emo_jax.sample.generate import SamplingSettings, decode_in_chunks, denoising_loop, video_noise_key
from emo_jax.sample.hallo_masks import HalloMasks

HALLO_VAE_SCALE = 0.18215  # FaceAnimatePipeline's constant, whatever the VAE's config says


@dataclasses.dataclass(frozen=True)
class HalloInputs:
    """What Hallo's preprocessing makes of one reference image and one audio track.

    reference [S, S, 3] float in [-1, 1]; face_embedding [D] (insightface's ArcFace, D = 512; zeros where no face
    was found); masks: `hallo_masks` of the reference; audio_features [F', 5, L, C] with F' whole clips
    (`audio.hallo.hallo_audio_features`); frames: how many of the F' the audio covers (the video's length)."""

    reference: np.ndarray
    face_embedding: np.ndarray
    masks: HalloMasks
    audio_features: np.ndarray
    frames: int


class HalloSampler:
    """`frames(inputs)` yields the video's frames [S, S, 3] uint8; `clips(inputs)` each clip's frames as floats."""

    def __init__(self, model: EMO, vae: AutoencoderKL, config: ml_collections.ConfigDict, settings: SamplingSettings):
        if model.image_projection is None or model.audio_projection is None:
            raise ValueError("HalloSampler needs a model in Hallo's layout (convert.hallo.hallo_config)")
        if settings.guidance_audio != settings.guidance_reference:
            raise ValueError(
                "Hallo's model has one guidance scale: guidance_audio and guidance_reference must be equal, got "
                f"{settings.guidance_audio} and {settings.guidance_reference}"
            )
        if settings.strength != 1 or not settings.use_audio:
            raise ValueError("HalloSampler samples from pure noise with the audio (strength 1, use_audio)")
        self.config, self.settings = config, settings
        self.num_frames, self.num_motion = config.data.num_frames, config.model.num_motion_frames
        self.table = settings.table(config)
        scale = settings.guidance_audio
        # [unconditional, conditional]: Hallo's batch order, which its reference bank and token rows depend on
        self.branches = [(0, 0, 1.0 - scale), (1, 1, scale)] if scale > 1 else [(1, 1, 1.0)]
        graph, state = nnx.split((model, vae))
        self._state = kernels_in(compute_of(config).dtype, state)
        merge = lambda state: nnx.merge(graph, state)  # noqa: E731
        self._encode = jax.jit(lambda state, pixels: merge(state)[1].encode(pixels).mean * HALLO_VAE_SCALE)
        self._decode = jax.jit(lambda state, latents: merge(state)[1].decode(latents / HALLO_VAE_SCALE))
        self._clip = jax.jit(lambda state, *args: self._denoise_clip(merge(state)[0], *args))

    def _denoise_clip(
        self, model: EMO, latents, embedding, face_mask, region_masks, audio, motion_scale, noise, key, common
    ):
        """latents [1 + n, h, w, 4]: the reference's and the motion frames'; embedding [D]; face_mask [H, W, c];
        region_masks per level [3, S]; audio [F, 5, L, C]; noise [1, F, h, w, 4], the start; key: a stochastic
        sampler's, common: the video's for its shared part -> clean latents [1, F, h, w, 4]."""
        k, n = len(self.branches), self.num_motion
        keep = jnp.asarray([b[0] for b in self.branches], jnp.float32)
        tile = lambda x: jnp.repeat(x[None], k, axis=0)  # noqa: E731
        tokens = model.image_tokens(tile(embedding), keep)  # [K, T, D]
        rows = jnp.tile(tokens, (1 + n, 1, 1)).reshape((k, 1 + n) + tokens.shape[1:])  # row j: branch j mod K's
        reference = model.encode_reference(tile(latents[0]), rows[:, 0])
        motion = model.encode_motion(tile(latents[1:]), jnp.ones((k,)), rows[:, 1:])

        conditions = dict(
            face_mask=tile(face_mask),
            motion=motion,
            audio_features=tile(audio),
            reference_keep=keep,
            audio_keep=keep,
            image_tokens=tokens,
            region_masks=tuple(tile(m) for m in region_masks),
            motion_scale=motion_scale,
        )
        predict = lambda x, t: model.denoise(x, t, reference, **conditions)  # noqa: E731
        prediction_type, shared = self.config.model.prediction_type, self.settings.noise_shared
        return denoising_loop(predict, self.table, prediction_type, self.branches, noise, key, shared, common)

    def _latents(self, pixels: np.ndarray) -> jax.Array:
        """[N, S, S, 3] float in [-1, 1] -> [N, h, w, 4]; diffusers' image processor normalises again where no
        pixel is negative (it takes such tensors for [0, 1] images)."""
        pixels = jnp.asarray(pixels, jnp.float32)
        if float(pixels.min()) >= 0:
            pixels = pixels * 2.0 - 1.0
        return self._encode(self._state, pixels)

    def _decode_clip(self, latents: jax.Array) -> np.ndarray:
        """[F, h, w, 4] -> [F, S, S, 3] float32 in [0, 1], in chunks of the same shape (one compile)."""
        decode = lambda chunk: self._decode(self._state, chunk)  # noqa: E731
        pixels = decode_in_chunks(decode, latents, self.settings.decode_chunk).astype(np.float32)
        return np.clip(pixels / 2 + 0.5, 0.0, 1.0)

    def compile_clip(self, inputs: HalloInputs):
        """One clip's jitted function (ReferenceNet passes and denoising loop) compiled for `inputs`' shapes, from
        shapes alone (the weights may be abstract, `models.shapes_only`): XLA's executable, e.g. for its
        `memory_analysis()`."""
        f, n, side = self.num_frames, self.num_motion, inputs.reference.shape[0]
        shape = lambda *dims: jax.ShapeDtypeStruct(dims, jnp.float32)  # noqa: E731
        latents = jax.eval_shape(self._encode, self._state, shape(1 + n, side, side, 3))
        channels = self.config.model.face_locator_conditioning_channels
        args = (
            latents,
            shape(*inputs.face_embedding.shape),
            shape(side, side, channels),
            tuple(shape(*m.shape) for m in inputs.masks.levels(side)),
            shape(f, *inputs.audio_features.shape[1:]),
            shape(3),
            shape(1, f, *latents.shape[1:]),
            jax.eval_shape(lambda: jax.random.key(0)),
        )
        return self._clip.lower(self._state, *args).compile()

    def num_clips(self, inputs: HalloInputs) -> int:
        return len(inputs.audio_features) // self.num_frames

    def clips(
        self,
        inputs: HalloInputs,
        motion_scale: Sequence[float] = (1.0, 1.0, 1.0),
        noise: Callable[[int], np.ndarray] | None = None,
    ) -> Iterator[np.ndarray]:
        """Each clip's frames [F, S, S, 3] float32 in [0, 1], all `num_clips` of them (the last may run past the
        audio). motion_scale: the full / face / lip weights (Hallo's pose_weight, face_weight, lip_weight);
        noise(clip) -> the clip's starting latents [F, h, w, 4] (default: `frame_noise` from settings.seed)."""
        f, n = self.num_frames, self.num_motion
        side = inputs.reference.shape[0]
        if inputs.reference.shape != (side, side, 3) or inputs.masks.face_locator.shape != (side, side):
            raise ValueError(
                f"Hallo's inputs: the reference [S, S, 3] {inputs.reference.shape} and the face-locator mask [S, S] "
                f"{inputs.masks.face_locator.shape} must be one square size"
            )
        if len(inputs.audio_features) % f:
            raise ValueError(f"audio features cover {len(inputs.audio_features)} frames, not whole clips of {f}")
        channels = self.config.model.face_locator_conditioning_channels
        face_mask = jnp.repeat(jnp.asarray(inputs.masks.face_locator, jnp.float32)[..., None] / 255.0, channels, -1)
        region_masks = tuple(jnp.asarray(m) for m in inputs.masks.levels(side))
        scale = jnp.asarray(motion_scale, jnp.float32)
        embedding = jnp.asarray(inputs.face_embedding, jnp.float32)
        key = jax.random.key(self.settings.seed)
        c_start, c_steps = jax.random.split(video_noise_key(key))
        motion = np.repeat(inputs.reference[None], n, axis=0)
        for clip in range(self.num_clips(inputs)):
            latents = self._latents(np.concatenate([inputs.reference[None], motion]))
            k_start, k_steps = jax.random.split(jax.random.fold_in(key, clip))
            if noise is not None:
                start = jnp.asarray(noise(clip), jnp.float32)[None]
            else:
                start = frame_noise(k_start, (1, f, *latents.shape[1:]), self.settings.noise_shared, c_start)
            audio = jnp.asarray(inputs.audio_features[clip * f : (clip + 1) * f])
            args = (latents, embedding, face_mask, region_masks, audio, scale, start, k_steps, c_steps)
            video = self._decode_clip(self._clip(self._state, *args)[0])
            motion = video[-n:] * 2.0 - 1.0
            yield video

    def frames(
        self,
        inputs: HalloInputs,
        motion_scale: Sequence[float] = (1.0, 1.0, 1.0),
        noise: Callable[[int], np.ndarray] | None = None,
        on_clip: Callable[[int], None] | None = None,
    ) -> Iterator[np.ndarray]:
        """The video's `inputs.frames` frames [S, S, 3] uint8, rounded down as Hallo's `tensor_to_video`; the
        arguments as `clips`'."""
        made = 0
        for clip, video in enumerate(self.clips(inputs, motion_scale, noise)):
            for frame in video[: inputs.frames - made]:
                yield (frame * 255).astype(np.uint8)
            made += len(video)
            if on_clip is not None:
                on_clip(clip)


__all__ = ["HALLO_VAE_SCALE", "HalloInputs", "HalloSampler"]
