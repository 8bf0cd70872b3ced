"""Does a model use its audio? The denoising loss on training clips with their own audio, with another clip's,
and with none, at fixed noise levels.

    python -m emo_jax.eval.audio_use --checkpoint RUN_OR_BUNDLE [--data-dir TFDS_DIR] [--clips 32]
        [--timesteps 250,500,750,950]

Each clip is noised once per timestep and denoised three times: with its own audio features, with the audio of
the next clip in its batch (`other`), and with the audio path cut (`none`, audio_keep = 0, as guidance does).
The plain loss is measured over the whole frame and inside the clip's mouth regions (`pipeline.MOUTH_REGION`).
`gain` = (loss with other audio - loss with own audio) / loss with own audio, paired per clip, with its standard
error: a model that learned lip sync predicts its clip better with the right audio, most at high noise where the
noisy frames no longer show the mouth. A gain within its error of zero means the audio is ignored. Seconds on a
CPU, where a lip-sync score needs minutes of sampling (`emo_jax.eval.synthetic`), and it works on any dataset
`emo-jax build-dataset` wrote, not only the synthetic corpus.
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from emo_jax.diffusion import schedules
from emo_jax.diffusion.loss import per_sample_mse, region_share
from emo_jax.models import AutoencoderKL
from emo_jax.models.emo import EMO
from emo_jax.train.batch import Dropout, MotionAugment, Objective, training_inputs

VARIANTS = ("own", "other", "none")
REGIONS = ("frame", "mouth")


@dataclasses.dataclass
class AudioUse:
    """At one timestep and over one region (the whole frame, or the clip's mouth regions): the mean loss per
    variant and the paired relative gain of own over other audio, with its standard error."""

    timestep: int
    region: str
    loss: dict[str, float]
    gain: float
    gain_se: float


def clip_batches(config: ml_collections.ConfigDict, source, *, clips: int, batch_size: int, seed: int = 0):
    """Training examples (the pipeline's own `SampleClip`, with mouth masks) from `clips` random records with
    audio, stacked into batches of `batch_size` (>= 2: the `other` variant takes the next clip's audio)."""
    from emo_jax.data.pipeline import PipelineConfig, SampleClip

    if batch_size < 2:
        raise ValueError(f"batch_size must be at least 2 (the other clip's audio), got {batch_size}")
    d = config.data
    clip = dict(num_frames=d.num_frames, num_motion_frames=d.num_motion_frames, size=d.size, window=d.window)
    sampler = SampleClip(PipelineConfig(**clip, mouth_mask=True))
    rng = np.random.default_rng(seed)
    records = [i for i in rng.permutation(len(source)) if bool(source[int(i)].get("has_audio", True))]
    if len(records) < 2:
        raise ValueError(f"the dataset has {len(records)} records with audio; the probe needs at least 2")
    examples = [sampler.random_map(source[int(records[i % len(records)])], rng) for i in range(clips)]
    keys = [k for k in examples[0] if k not in ("video_id", "frame")]
    for start in range(0, clips - 1, batch_size):
        chunk = examples[start : start + batch_size]
        if len(chunk) >= 2:
            yield {k: np.stack([e[k] for e in chunk]) for k in keys}


def audio_use(
    config: ml_collections.ConfigDict,
    model: EMO,
    vae: AutoencoderKL,
    batches,
    timesteps: tuple[int, ...],
    *,
    seed: int = 0,
) -> list[AudioUse]:
    """The loss of every clip of `batches` at each timestep, with own / other / no audio, over the whole frame
    and inside the mouth regions (see the module). The plain loss, whatever `loss.mouth_weight` the model
    trained with."""
    objective = dataclasses.replace(Objective.from_config(config), mouth_weight=0.0)
    abar = jnp.asarray(objective.abar)
    graphdef, state = nnx.split(model)

    @jax.jit
    def losses(state, inputs, x0, noise, mouth, t):
        t = jnp.full(x0.shape[:1], t)
        inputs = {**inputs, "noisy": schedules.add_noise(x0, noise, t, abar), "timesteps": t}
        target = schedules.target(objective.prediction_type, x0, noise, t, abar)
        model = nnx.merge(graphdef, state)
        other = {**inputs, "audio_features": jnp.roll(inputs["audio_features"], 1, axis=0)}
        none = {**inputs, "audio_keep": jnp.zeros_like(inputs["audio_keep"])}
        predictions = [model(**v) for v in (inputs, other, none)]
        by_region = [[per_sample_mse(p, target, weights) for p in predictions] for weights in (None, mouth)]
        return jnp.asarray(by_region)  # [region, variant, B]

    per_clip = {t: [] for t in timesteps}
    key = jax.random.key(seed)
    for batch in batches:
        key, k_inputs = jax.random.split(key)
        inputs, truth = training_inputs(vae, batch, k_inputs, objective, Dropout(), MotionAugment())
        del inputs["noisy"], inputs["timesteps"]  # set per timestep in `losses`
        x0 = truth["x0"]
        mouth = region_share(jnp.asarray(batch["mouth_mask"]), x0.shape[2:4])
        for t in timesteps:
            per_clip[t].append(np.asarray(losses(state, inputs, x0, truth["noise"], mouth, t)))
    results = []
    for t in timesteps:
        loss = np.concatenate(per_clip[t], axis=-1)  # [region, variant, clips]
        for r, region in enumerate(REGIONS):
            own, other = loss[r, 0], loss[r, 1]
            diff = (other - own) / own.mean()
            se = float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else float("nan")
            means = dict(zip(VARIANTS, map(float, loss[r].mean(-1)), strict=True))
            results.append(AudioUse(t, region, means, float(diff.mean()), se))
    return results


def table(results: list[AudioUse]) -> str:
    rows = [
        "| timestep | region | loss own audio | other audio | no audio | gain (other - own) / own |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        loss = r.loss
        rows.append(
            f"| {r.timestep} | {r.region} | {loss['own']:.5f} | {loss['other']:.5f} | {loss['none']:.5f} | "
            f"{r.gain:+.2%} +/- {r.gain_se:.2%} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    from emo_jax.sample.bundle import load_bundle
    from emo_jax.train.trainer import dataset_source

    parser = argparse.ArgumentParser(prog="python -m emo_jax.eval.audio_use", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="training workdir, step folder or exported bundle")
    parser.add_argument("--data-dir", help="TFDS data_dir of emo-jax build-dataset (default: the run's)")
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--timesteps", default="250,500,750,950", help="comma-separated noise levels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    bundle = load_bundle(args.checkpoint)
    config = bundle.config
    if config.model.get("audio") is None:
        raise SystemExit(f"{args.checkpoint}: this model has no audio path (config.model.audio is None)")
    if args.data_dir:
        config.data.data_dir = args.data_dir
    if not config.data.data_dir:
        raise SystemExit(f"{args.checkpoint}: no data_dir in its config (exported bundles drop it): give --data-dir")
    timesteps = tuple(int(t) for t in args.timesteps.split(","))
    batches = clip_batches(config, dataset_source(config), clips=args.clips, batch_size=args.batch_size, seed=args.seed)
    print(f"{args.checkpoint}: {args.clips} clips of {config.data.data_dir}")
    print(table(audio_use(config, bundle.model, bundle.vae, batches, timesteps, seed=args.seed)))


if __name__ == "__main__":
    main()
