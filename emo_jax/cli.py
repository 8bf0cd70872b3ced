"""The `emo-jax` command line: one subcommand per job."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from emo_jax.convert.state_dict import ConversionError


def _demo(args: argparse.Namespace) -> None:
    from emo_jax.assets import DEMO_MODEL, EXAMPLE_AUDIO, EXAMPLE_IMAGE

    args.image, args.audio, args.checkpoint = EXAMPLE_IMAGE, EXAMPLE_AUDIO, DEMO_MODEL
    args.hallo = None
    _sample(args)
    print("  the bundled demo model (tiny EMO, synthetic faces) made the example face speak the example audio")


def _sample(args: argparse.Namespace) -> None:
    from emo_jax.assets import DEMO_MODEL
    from emo_jax.config import load_config
    from emo_jax.sample import SamplingSettings, load_bundle, sample_hallo_video, sample_video
    from emo_jax.sample.inputs import check_output

    if args.no_provenance:
        print(
            f"emo-jax {args.command}: warning: --no-provenance: {args.out} will carry no mark that it is "
            "AI-generated (no content credentials, metadata or watermark). For research only; do not share it.",
            file=sys.stderr,
        )
    check_output(args.out)  # before loading anything
    if args.hallo and args.speed is not None:
        raise ValueError("sample --hallo: Hallo's model has no head-speed condition (leave out --speed)")
    if args.hallo:  # every part sampling will read, named at once
        from emo_jax.convert.hallo import FOLDER_PARTS, check_folder
        from emo_jax.sample.hallo_prepare import PREPROCESSING_PARTS

        check_folder(args.hallo, PREPROCESSING_PARTS if args.checkpoint else {**FOLDER_PARTS, **PREPROCESSING_PARTS})
    if args.hallo and not args.checkpoint:
        from emo_jax.convert.hallo import read_folder

        bundle = read_folder(args.hallo, load_config(args.config or "configs/hallo.py"))
    else:
        bundle = load_bundle(args.checkpoint or DEMO_MODEL)
    guidance_audio, guidance_ref = args.guidance_audio, args.guidance_ref
    if args.hallo:  # one scale: either flag sets both
        guidance_audio = guidance_ref = guidance_audio if guidance_audio is not None else guidance_ref
    settings = SamplingSettings.from_config(
        bundle.config,
        sampler=args.sampler,
        steps=args.steps,
        eta=args.eta,
        guidance_audio=guidance_audio,
        guidance_reference=guidance_ref,
        strength=args.strength,
        noise_shared=args.noise_shared,
        seed=args.seed,
    )
    provenance = dict(provenance=not args.no_provenance, sign_cert=args.sign_cert, sign_key=args.sign_key)
    if args.hallo:
        result = sample_hallo_video(
            bundle,
            args.hallo,
            args.image,
            args.audio,
            args.out,
            settings,
            motion_scale=tuple(args.motion_scale),
            face_expand_ratio=args.mask_expand or 1.2,
            **provenance,
        )
    else:
        result = sample_video(
            bundle,
            args.image,
            args.audio,
            args.out,
            settings,
            speed=args.speed,
            mask_expand=args.mask_expand,
            **provenance,
        )
    print(
        f"emo-jax {args.command}: {result.video} ({result.frames} frames at {result.fps:g} fps, "
        f"{result.seconds:.2f} s of audio, {result.clips} clips, {result.wall_s:.1f} s); frames: {result.strip}; "
        f"model: {bundle.source}"
    )


def _sampling_flags(parser: argparse.ArgumentParser) -> None:
    """Flags that override the model config's `sample` defaults (shown by `emo-jax sample --help`)."""
    parser.add_argument("--steps", type=int, help="denoising steps per clip (default: the model's, e.g. 40)")
    parser.add_argument("--sampler", choices=["ddim", "dpm++"], help="default: the model's")
    parser.add_argument("--eta", type=float, help="DDIM noise (0: deterministic)")
    parser.add_argument("--guidance-audio", type=float, help="audio guidance scale A")
    parser.add_argument("--guidance-ref", type=float, help="reference guidance scale R (1: keep the reference)")
    parser.add_argument(
        "--strength", type=float, help="1: start from noise; below 1: from the noised reference (image-to-image)"
    )
    parser.add_argument(
        "--noise-shared",
        type=float,
        help="share of the start noise common to a video's frames, 0-1 (steadier faces; default: the model's)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speed", help="head speed: slow, normal, fast, or degrees per frame")
    parser.add_argument("--mask-expand", type=float, help="face box growth for the face locator mask (Hallo: 1.2)")
    parser.add_argument(
        "--sign-cert",
        default=os.environ.get("EMO_JAX_SIGN_CERT"),
        help="PEM certificate chain (leaf first) for the video's C2PA manifest (default: $EMO_JAX_SIGN_CERT, "
        "else a local self-signed one)",
    )
    parser.add_argument(
        "--sign-key", default=os.environ.get("EMO_JAX_SIGN_KEY"), help="its PEM private key ($EMO_JAX_SIGN_KEY)"
    )
    parser.add_argument(
        "--no-provenance",
        action="store_true",
        help="research only: no content credentials, metadata or watermark saying the video is AI-generated",
    )


def _provenance(args: argparse.Namespace) -> None:
    from emo_jax.provenance.check import inspect, report

    found = inspect(args.file, trust_anchors=args.trust_anchors)
    print(report(found))
    if not found.synthetic:
        raise SystemExit(1)


def _export(args: argparse.Namespace) -> None:
    from emo_jax.sample import export_bundle

    out = export_bundle(args.checkpoint, args.out)
    size = sum(p.stat().st_size for p in out.iterdir()) / 2**20
    print(f"emo-jax export: {args.checkpoint} -> {out} ({size:.1f} MiB)")


def _train(args: argparse.Namespace) -> None:
    from emo_jax.config import apply_overrides, load_config
    from emo_jax.train.trainer import train

    config = apply_overrides(load_config(args.config), args.overrides)
    metrics = train(config, args.workdir, allow_config_change=args.allow_config_change)
    if metrics:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if not k.startswith("loss_t"))
        print(f"emo-jax train: {args.workdir}: {shown}")


def _train_vae(args: argparse.Namespace) -> None:
    import numpy as np
    from tqdm import tqdm

    from emo_jax.build import build_vae
    from emo_jax.checkpoint import save_model
    from emo_jax.config import load_config
    from emo_jax.train.vae import VAETraining, preprocessed_frames, reconstruction_psnr, train_vae

    config = load_config(args.config)
    config.vae.checkpoint, config.vae.random = "", True  # start from the config's layout at random init
    frames = preprocessed_frames(args.preprocessed, config.data.size)
    held_out, frames = frames[:: args.held_out_every], np.delete(frames, np.s_[:: args.held_out_every], axis=0)
    settings = VAETraining(steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate)
    progress = tqdm(total=settings.steps, unit="step", desc="training VAE")

    def log(step: int, metrics: dict[str, float]) -> None:
        progress.update()
        if step % 10 == 0:
            progress.set_postfix(l1=f"{metrics['l1']:.4f}", kl=f"{metrics['kl']:.1f}")

    vae = train_vae(build_vae(config, config.seed), frames, settings, log)
    progress.close()
    save_model(args.out, vae)
    print(
        f"emo-jax train-vae: {args.out}: {len(frames)} frames, scaling_factor {vae.config.scaling_factor:.4f}, "
        f"held-out reconstruction PSNR {reconstruction_psnr(vae, held_out[:256]):.1f} dB ({len(held_out)} frames)"
    )


def _convert(args: argparse.Namespace) -> None:
    from emo_jax.checkpoint import save_model
    from emo_jax.convert.diffusers import from_diffusers_folder

    if (args.src is None) == (args.hallo is None):
        raise ValueError("convert takes a diffusers folder (SRC) or --hallo DIR, one of the two")
    if args.hallo:
        if args.variant or args.verify:
            raise ValueError("convert --hallo reads net.pth as it is: --variant and --verify are for diffusers folders")
        return _convert_hallo(args)
    if args.config:
        raise ValueError("convert --config is for --hallo (the config a converted Hallo bundle samples with)")
    src, out = Path(args.src), Path(args.out)
    if (src / "model_index.json").is_file():  # a whole pipeline: convert the parts we have
        parts = [(src / name, out / name) for name in ("unet", "vae") if (src / name / "config.json").is_file()]
        if not parts:
            raise ConversionError(f"{src}: pipeline folder without unet/ or vae/ subfolders")
    else:
        parts = [(src, out)]
    for part_src, part_out in parts:
        start = time.perf_counter()
        model = from_diffusers_folder(part_src, variant=args.variant)
        save_model(part_out, model)
        print(f"{part_src} -> {part_out} ({type(model).__name__}, {time.perf_counter() - start:.1f} s)")
        if args.verify:
            from emo_jax.convert.verify import load_peer, verify

            class_name = json.loads((part_src / "config.json").read_text())["_class_name"]
            errors = verify(model, load_peer(part_src, class_name, args.variant))
            for name, err in errors.items():
                print(f"  verify {name}: relative error {err:.2e} (JAX vs PyTorch, fp32, random input)")


def _convert_hallo(args: argparse.Namespace) -> None:
    from emo_jax.config import load_config
    from emo_jax.convert.hallo import convert_folder

    start = time.perf_counter()
    config = convert_folder(args.hallo, args.out, load_config(args.config or "configs/hallo.py"))
    print(
        f"{args.hallo} -> {args.out} (Hallo's model, compute {config.compute.dtype}, "
        f"{time.perf_counter() - start:.1f} s): emo-jax sample --checkpoint {args.out} ..."
    )


def _info(args: argparse.Namespace) -> None:
    from flax import nnx

    from emo_jax.config import load_config
    from emo_jax.models import param_counts, shapes_only
    from emo_jax.models.emo import EMO, EMOConfig
    from emo_jax.train.trainable import trainable_paths

    config = load_config(args.config)
    model = shapes_only(lambda: EMO(EMOConfig.from_dict(config.model), rngs=nnx.Rngs(0)))  # shapes only
    counts = param_counts(model)
    trained = param_counts(model, set(trainable_paths(model, config.trainable)))
    print(f"EMO {config.size}, stage {config.stage} ({args.config}); parameters:")
    for part, count in counts.items():
        print(f"  {part:<18} {count:>15,}   trainable {trained.get(part, 0):>15,}")
    print(f"  {'total':<18} {sum(counts.values()):>15,}   trainable {sum(trained.values()):>15,}")


def _synth(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from emo_jax.data.synthetic import HELD_OUT_AUDIO, HELD_OUT_IDENTITIES, make_video, write_video

    identities = HELD_OUT_IDENTITIES if args.held_out else range(args.first_seed, args.first_seed + args.videos)
    audio_seeds = HELD_OUT_AUDIO if args.held_out else identities
    pairs = list(zip(identities, audio_seeds))[: args.videos]
    for i, (identity, audio_seed) in enumerate(tqdm(pairs, unit="video", desc="synthesising")):
        singing = args.singing_every > 0 and i % args.singing_every == args.singing_every - 1
        video = make_video(identity, audio_seed, seconds=args.seconds, fps=args.fps, size=args.size, singing=singing)
        write_video(video, args.out, f"id{identity:05d}_audio{audio_seed:05d}")
    print(f"{len(pairs)} videos ({args.seconds:g} s, {args.size}px, {args.fps:g} fps) with sidecar JSON in {args.out}")


def _audio_features(args: argparse.Namespace) -> None:
    import numpy as np
    from tqdm import tqdm

    from emo_jax.audio import SAMPLE_RATE, LogMelFeatures, Wav2Vec2Features, frame_features, load_audio
    from emo_jax.audio.features import HOP

    waveform = load_audio(args.audio)
    if args.encoder == "logmel":
        encoder = LogMelFeatures(n_mels=args.n_mels)
    else:
        if not args.wav2vec2:
            raise ValueError("--encoder wav2vec2 needs --wav2vec2 DIR (a local transformers Wav2Vec2 folder)")
        from emo_jax.convert.wav2vec2 import from_hf_wav2vec2_folder

        layers = args.layers if args.layers in ("all", "last") else [int(i) for i in args.layers.split(",")]
        encoder = Wav2Vec2Features(
            from_hf_wav2vec2_folder(args.wav2vec2), layers=layers, chunk_seconds=args.chunk_seconds
        )
    seconds = waveform.size / SAMPLE_RATE
    with tqdm(total=round(seconds, 2), unit="s", desc=f"encoding {Path(args.audio).name}") as bar:
        features = frame_features(
            waveform,
            args.fps,
            args.num_frames,
            encoder=encoder,
            m=args.window,
            progress=lambda frames: bar.update(round(frames * HOP / SAMPLE_RATE, 2)),
        )
    np.save(args.out, features)
    print(
        f"{args.audio} ({seconds:.2f} s) -> {args.out}: {list(features.shape)} "
        f"[frames, 2m+1, layers, dim] at {args.fps} fps"
    )


def _preprocess(args: argparse.Namespace) -> None:
    from emo_jax.data.preprocess import PreprocessConfig, preprocess_folder

    config = PreprocessConfig(
        size=args.size,
        fps=args.fps,
        clip_frames=args.clip_frames,
        use_sidecar=not args.no_sidecar,
        keep_silent=args.keep_silent,
    )
    if args.beam:
        from emo_jax.data.preprocess import preprocess_beam

        report = preprocess_beam(args.videos, args.out, config, args.pipeline_args)
    else:
        report = preprocess_folder(args.videos, args.out, config, workers=args.workers)
    skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(report["skipped"].items())) or "none"
    print(
        f"{report['videos']} videos -> {report['done']} kept ({report['clips']} clips, {report['frames']} frames "
        f"at {args.size}px, {args.fps:g} fps) in {args.out}/videos; skipped: {skipped}; report: {args.out}/report.json"
    )


def _build_dataset(args: argparse.Namespace) -> None:
    from emo_jax.data.tfds_builder import build_dataset

    runner = None
    if args.beam:
        import apache_beam as beam

        runner = beam.runners.DirectRunner()
    config = args.config
    if config == "wav2vec2":
        from emo_jax.data.tfds_builder import EmoClipsConfig

        if not args.wav2vec2:
            raise ValueError("--config wav2vec2 needs --wav2vec2 DIR (a local transformers Wav2Vec2 folder)")
        config = EmoClipsConfig(name="wav2vec2", audio="wav2vec2", wav2vec2_path=args.wav2vec2)
    builder = build_dataset(args.preprocessed, args.data_dir, config=config, beam=runner)
    split = builder.info.splits["train"]
    print(f"emo_clips/{args.config}: {split.num_examples} clips in {split.num_shards} shards at {builder.data_dir}")


def _eval(args: argparse.Namespace) -> None:
    from emo_jax.eval import report

    metrics = report.parse_metrics(args.metrics or (",".join(report.METRICS) if args.synthetic else "fid,sync,fsim"))
    out = Path(args.out)
    if args.synthetic:
        from emo_jax.assets import DEMO_MODEL

        folder = out.with_name(out.stem + "_videos")
        print(f"emo-jax eval: --synthetic: random metric networks (the numbers exercise the code); videos in {folder}")
        result = report.synthetic_report(
            args.checkpoint or DEMO_MODEL, folder, metrics, pairs=args.pairs, seconds=args.seconds
        )
    else:
        if not (args.generated and args.real):
            raise SystemExit("emo-jax eval: give --generated and --real folders (or --synthetic)")
        if args.random_weights:
            print(
                "emo-jax eval: warning: --random-weights: random metric networks, the numbers mean nothing",
                file=sys.stderr,
            )
            networks = report.random_networks(metrics)
        else:
            weights = dict(inception=args.inception, i3d=args.i3d, syncnet=args.syncnet)
            networks = report.load_networks(metrics, arcface=args.arcface, face3d=args.face3d, **weights)
        result = report.evaluate(Path(args.generated), Path(args.real), metrics, networks, reference=args.reference)
    report.write(result, out)
    print(report.markdown(result))
    print(f"emo-jax eval: {out} and {out.with_suffix('.md')}")


def _bench(args: argparse.Namespace) -> None:
    from emo_jax import bench

    bench.main(args.bench_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emo-jax", description="EMO audio-to-video diffusion in JAX/Flax.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo", help="a talking video from the bundled demo model, example face and example audio (CPU, minutes)"
    )
    demo.add_argument("--out", default="demo.mp4", help="output .mp4 (default: demo.mp4)")
    _sampling_flags(demo)
    demo.set_defaults(func=_demo)

    sample = sub.add_parser(
        "sample",
        help="a talking video: one face image + one audio file -> MP4 (+ PNG strip of frames)",
        description="Without --checkpoint, the bundled demo model (tiny, trained on the synthetic corpus).",
    )
    sample.add_argument("--image", required=True, help="reference image with one face (png, jpg, ...)")
    sample.add_argument("--audio", required=True, help="speech or singing (wav, flac, mp3, m4a, ...)")
    sample.add_argument("--out", required=True, help="output .mp4 (its folder must exist)")
    sample.add_argument(
        "--checkpoint", help="training workdir, checkpoint step folder, exported bundle, or converted Hallo bundle"
    )
    sample.add_argument(
        "--hallo",
        metavar="DIR",
        help="Hallo's pretrained_models folder: sample as Hallo does, with its face models and wav2vec2 (the model: "
        "--checkpoint from `emo-jax convert --hallo`, else DIR's net.pth converted in memory, which needs torch)",
    )
    sample.add_argument(
        "--motion-scale",
        type=float,
        nargs=3,
        default=(1.0, 1.0, 1.0),
        metavar=("POSE", "FACE", "LIP"),
        help="with --hallo: the weights of the audio on the full, face and lip regions (default 1 1 1)",
    )
    sample.add_argument(
        "--config", help="with --hallo and no --checkpoint: the config to convert with (default configs/hallo.py)"
    )
    _sampling_flags(sample)
    sample.set_defaults(func=_sample)

    provenance = sub.add_parser(
        "provenance",
        help="is this video marked as AI-generated? (C2PA manifest, metadata tags, invisible watermark)",
        description="Exit code 0 when at least one of the three marks says the file is AI-generated, else 1.",
    )
    provenance.add_argument("file", help="a video (.mp4, ...), or a PNG strip or frame grid emo-jax wrote")
    provenance.add_argument("--trust-anchors", help="PEM file of CA certificates whose signers count as trusted")
    provenance.set_defaults(func=_provenance)

    evaluation = sub.add_parser(
        "eval",
        help="the paper's metrics (FID, Sync-C/D, F-SIM, E-FID) of generated videos against real ones",
        description="Pairs videos by file name; weights files are given by path (README, Evaluation).",
    )
    evaluation.add_argument("--generated", help="folder of generated videos")
    evaluation.add_argument("--real", help="folder of the real videos, same names")
    evaluation.add_argument(
        "--metrics", help="comma-separated: fid, fvd, sync, fsim, efid (default fid,sync,fsim; all with --synthetic)"
    )
    evaluation.add_argument("--reference", type=Path, help="folder of reference images by name (F-SIM)")
    evaluation.add_argument("--inception", help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth (FID)")
    evaluation.add_argument("--i3d", help="VideoGPT's i3d_pretrained_400.pt (FVD)")
    evaluation.add_argument("--syncnet", help="syncnet_python's syncnet_v2.model (Sync-C / Sync-D)")
    evaluation.add_argument("--arcface", help="an arcface_torch backbone.pth (F-SIM)")
    evaluation.add_argument("--face3d", help="Deep3DFaceRecon_pytorch's epoch_20.pth (E-FID)")
    evaluation.add_argument("--out", default="report.json", help="JSON report; the table goes beside it as .md")
    evaluation.add_argument("--random-weights", action="store_true", help="testing only: random metric networks")
    evaluation.add_argument(
        "--synthetic",
        action="store_true",
        help="instead: sample held-out synthetic pairs with --checkpoint and evaluate them (random networks)",
    )
    evaluation.add_argument("--checkpoint", help="--synthetic: the model (default: the bundled demo model)")
    evaluation.add_argument("--pairs", type=int, default=2, help="--synthetic: held-out (identity, audio) pairs")
    evaluation.add_argument("--seconds", type=float, default=2.0, help="--synthetic: length of each video")
    evaluation.set_defaults(func=_eval)

    export = sub.add_parser("export", help="training run -> small self-contained bundle for sampling")
    export.add_argument("checkpoint", help="training workdir or checkpoint step folder")
    export.add_argument("--out", required=True, help="output folder: config.json, emo.safetensors, vae.safetensors")
    export.set_defaults(func=_export)

    train = sub.add_parser(
        "train",
        help="train an EMO stage (resumes from the workdir's last checkpoint)",
        description="Train with a config file; override entries with --config.a.b=value.",
    )
    train.add_argument("--config", required=True, help="config file[:arg], e.g. configs/stage2.py or tiny")
    train.add_argument("--workdir", required=True, help="checkpoints, logs, TensorBoard events, frame grids")
    train.add_argument(
        "--allow-config-change", action="store_true", help="resume a workdir whose run had another config"
    )
    train.set_defaults(func=_train, overrides=[])

    vae = sub.add_parser(
        "train-vae", help="fit a small VAE to preprocessed frames (the tiny size's; SD sizes convert SD's VAE)"
    )
    vae.add_argument("--preprocessed", required=True, help="the --out folder of `emo-jax preprocess`")
    vae.add_argument("--out", required=True, help="output model folder (config.json + params/): config.vae.checkpoint")
    vae.add_argument("--config", default="tiny", help="config whose vae.layout and data.size to use (default: tiny)")
    vae.add_argument("--steps", type=int, default=2000)
    vae.add_argument("--batch-size", type=int, default=16)
    vae.add_argument("--learning-rate", type=float, default=1e-3)
    vae.add_argument("--held-out-every", type=int, default=10, help="every Nth frame is kept out to measure PSNR")
    vae.set_defaults(func=_train_vae)

    convert = sub.add_parser(
        "convert", help="diffusers model or pipeline folder, or Hallo's pretrained_models -> Orbax checkpoint"
    )
    convert.add_argument("src", nargs="?", help="diffusers model folder (config.json + weights) or pipeline folder")
    convert.add_argument(
        "--hallo", metavar="DIR", help="instead: Hallo's pretrained_models folder -> a bundle for emo-jax sample"
    )
    convert.add_argument(
        "--config", help="with --hallo: the config the bundle samples with (default configs/hallo.py, fp16 compute)"
    )
    convert.add_argument("--out", required=True, help="output folder (config.json + params/; with --hallo emo/, vae/)")
    convert.add_argument("--variant", help="weights variant, e.g. fp16 (diffusion_pytorch_model.fp16.safetensors)")
    convert.add_argument(
        "--verify", action="store_true", help="compare with the PyTorch model (needs torch, diffusers)"
    )
    convert.set_defaults(func=_convert)

    info = sub.add_parser("info", help="parameter counts of an EMO config, per part (no weights allocated)")
    info.add_argument("--config", default="configs/stage2.py", help="config file (default: configs/stage2.py)")
    info.set_defaults(func=_info)

    synth = sub.add_parser("synth", help="synthetic talking-face videos (MP4 + audio) with ground-truth JSON")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--videos", type=int, default=8)
    synth.add_argument("--seconds", type=float, default=6.0)
    synth.add_argument("--fps", type=float, default=25.0)
    synth.add_argument("--size", type=int, default=256, help="frame size in pixels (square)")
    synth.add_argument("--first-seed", type=int, default=0, help="identity and audio seed of the first video")
    synth.add_argument("--singing-every", type=int, default=4, help="every Nth video sings (0: none)")
    synth.add_argument("--held-out", action="store_true", help="the held-out evaluation identities and audio")
    synth.set_defaults(func=_synth)

    audio = sub.add_parser("audio-features", help="audio file -> features per video frame (.npy)")
    audio.add_argument("--audio", required=True, help="wav, flac, ogg, mp3, m4a, ...")
    audio.add_argument("--fps", type=float, default=25.0, help="video frame rate")
    audio.add_argument("--out", required=True, help="output .npy: [frames, 2m+1, layers, dim]")
    audio.add_argument("--num-frames", type=int, help="frames to produce (default: all the audio covers)")
    audio.add_argument("--window", type=int, default=2, help="m: frames of context on each side")
    audio.add_argument("--encoder", choices=["wav2vec2", "logmel"], default="wav2vec2")
    audio.add_argument("--wav2vec2", help="transformers Wav2Vec2 folder (config.json + weights)")
    audio.add_argument("--layers", default="all", help="'all', 'last' or comma-separated hidden-state indices")
    audio.add_argument("--chunk-seconds", type=float, default=30.0, help="wav2vec2 runs on chunks this long")
    audio.add_argument("--n-mels", type=int, default=80, help="log-mel bands (--encoder logmel)")
    audio.set_defaults(func=_audio_features)

    pre = sub.add_parser("preprocess", help="videos -> face-centred clips with audio, boxes, pose and head speed")
    pre.add_argument(
        "--videos", required=True, help="folder of videos (any depth; mp4, mov, mkv, avi, webm), or gs://..."
    )
    pre.add_argument(
        "--out", required=True, help="output folder (or gs://...): videos/*.npz, status/*.json, report.json"
    )
    pre.add_argument("--size", type=int, default=512, help="output frame size in pixels (square)")
    pre.add_argument("--fps", type=float, default=25.0, help="output frame rate")
    pre.add_argument("--clip-frames", type=int, default=125, help="frames per stored clip")
    pre.add_argument("--workers", type=int, default=1, help="processes working on videos in parallel")
    pre.add_argument("--no-sidecar", action="store_true", help="detect faces even where a ground-truth JSON exists")
    pre.add_argument(
        "--keep-silent", action="store_true", help="keep videos without audio, marked (stage 1 only; e.g. VFHQ)"
    )
    pre.add_argument(
        "--beam",
        action="store_true",
        help="run as an Apache Beam pipeline (pip extra `beam`); Beam's flags follow, e.g. --runner DataflowRunner "
        "--project P --region R --temp_location gs://B/tmp (default DirectRunner)",
    )
    pre.set_defaults(func=_preprocess, pipeline_args=[])

    build = sub.add_parser("build-dataset", help="preprocessed clips -> TFDS dataset (array_record) for training")
    build.add_argument("--preprocessed", required=True, help="the --out folder of `emo-jax preprocess`")
    build.add_argument("--data-dir", required=True, help="TFDS data_dir to build emo_clips/<config> in")
    build.add_argument(
        "--config", choices=["samples", "logmel", "wav2vec2"], default="samples", help="audio as samples/features"
    )
    build.add_argument("--wav2vec2", help="transformers Wav2Vec2 folder (--config wav2vec2)")
    build.add_argument("--beam", action="store_true", help="generate with Apache Beam (DirectRunner; pip extra `beam`)")
    build.set_defaults(func=_build_dataset)

    bench = sub.add_parser("bench", help="benchmarks (same as python -m emo_jax.bench)", add_help=False)
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench.set_defaults(func=_bench)

    return parser


def main(argv: list[str] | None = None) -> None:
    args, rest = build_parser().parse_known_args(argv)
    if rest and args.command == "train":
        args.overrides = rest  # --config.a.b=value
    elif rest and args.command == "preprocess" and args.beam:
        args.pipeline_args = rest  # Beam's own flags: --runner, --project, ...
    elif rest:
        build_parser().parse_args(argv)  # the usual error for unknown arguments
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except (ConversionError, FileNotFoundError, ValueError, RuntimeError, ImportError) as e:
        print(f"emo-jax {args.command}: error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print(f"emo-jax {args.command}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
