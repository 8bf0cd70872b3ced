"""The `emo-jax` command line: one subcommand per job."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from emo_jax.convert.state_dict import ConversionError

# Jobs that later issues build: subcommand -> what it will do.
NOT_BUILT = {
    "info": "parameter counts of a model config (EMO model issue)",
    "train": "three-stage EMO training (training issue)",
    "sample": "audio-driven video sampling (sampling issue)",
    "preprocess": "videos -> face-centred clips (data issue)",
    "synth": "synthetic talking-face corpus (data issue)",
    "audio-features": "wav2vec2 features per video frame (audio issue)",
}


def _demo(args: argparse.Namespace) -> None:
    from emo_jax.config import load_config
    from emo_jax.demo import run_demo

    config = load_config(args.config)
    result = run_demo(config)
    print(f"emo-jax demo ({args.config}): random-init tiny models, one denoising forward")
    print(f"  params: UNet {result.param_counts['unet']:,}, VAE {result.param_counts['vae']:,}")
    descriptions = {
        "image": "skimage.data.astronaut(), resized",
        "latent": "VAE posterior sample x scaling_factor",
        "noise_pred": f"UNet noise prediction at t={config.demo_timestep}",
        "decoded": "VAE decode of the predicted clean latent",
    }
    for name, description in descriptions.items():
        print(f"  {name:<10} {str(list(result.shapes[name])):<16} {description}")
    print(f"  time: first call {result.first_call_s:.2f} s (XLA compile + run), then {result.step_s * 1e3:.1f} ms per step")


def _convert(args: argparse.Namespace) -> None:
    from emo_jax.checkpoint import save_model
    from emo_jax.convert.diffusers import from_diffusers_folder

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


def _bench(args: argparse.Namespace) -> None:
    from emo_jax import bench

    bench.main(args.bench_args)


def _not_built(args: argparse.Namespace) -> None:
    print(f"emo-jax {args.command}: not built yet: {NOT_BUILT[args.command]}.", file=sys.stderr)
    raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emo-jax", description="EMO audio-to-video diffusion in JAX/Flax.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="tiny models, one denoising forward on a real photo (bundled defaults)")
    demo.add_argument("--config", default="tiny", help="config file, or a bundled name (default: tiny)")
    demo.set_defaults(func=_demo)

    convert = sub.add_parser("convert", help="diffusers model or pipeline folder -> Orbax checkpoint")
    convert.add_argument("src", help="diffusers model folder (config.json + weights) or pipeline folder")
    convert.add_argument("--out", required=True, help="output folder (config.json + params/)")
    convert.add_argument("--variant", help="weights variant, e.g. fp16 (diffusion_pytorch_model.fp16.safetensors)")
    convert.add_argument("--verify", action="store_true", help="compare with the PyTorch model (needs torch, diffusers)")
    convert.set_defaults(func=_convert)

    bench = sub.add_parser("bench", help="benchmarks (same as python -m emo_jax.bench)", add_help=False)
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench.set_defaults(func=_bench)

    for name, what in NOT_BUILT.items():
        sub.add_parser(name, help=f"{what} [not built yet]").set_defaults(func=_not_built)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except (ConversionError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"emo-jax {args.command}: error: {e}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
