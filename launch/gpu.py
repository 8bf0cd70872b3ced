"""Train EMO's stages on one GPU machine (one process drives all its GPUs), one stage after the other.

    python launch/gpu.py --workdir runs --data-dir tfds --report prep/report.json --vae converted/sd15/vae \\
        --sd15-unet sd15/unet --motion-adapter mm_sd_v15_v2.ckpt --dry-run

Run it on the GPU machine from a checkout. `install` makes a virtual environment with jax's CUDA build; `train`
runs each stage to its config's last step. Every stage resumes from its workdir's last checkpoint, so after a
crash or a reboot run the same command again (with --phases train). Long runs: `nohup python launch/gpu.py ...
> train.log 2>&1 &`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import stages

REPO = Path(__file__).resolve().parent.parent
PHASES = ("install", "train")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    machine = parser.add_argument_group("machine")
    machine.add_argument("--venv", default=str(REPO / ".venv"), help="python environment to install into and use")
    machine.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    stages.add_arguments(parser)
    args = parser.parse_args(argv)
    args.venv = str(Path(args.venv).absolute())
    phases = [p for p in args.phases.split(",") if p]
    if unknown := sorted(set(phases) - set(PHASES)):
        parser.error(f"--phases: unknown {unknown}; choose from {PHASES}")
    chosen = stages.stages(args)
    stages.absolute_paths(args)
    run = stages.Runner(args.dry_run)

    if "install" in phases:
        run.run(["python3", "-m", "venv", args.venv])
        run.run([f"{args.venv}/bin/pip", "install", "-q", "-e", f"{REPO}[cuda]"])
    if "train" in phases:
        run.chdir(str(REPO))  # the stage configs are named from the checkout
        for stage in chosen:
            run.note(f"stage {stage}")
            run.run(stages.train_argv(args, stage, f"{args.venv}/bin/emo-jax"))


if __name__ == "__main__":
    main()
