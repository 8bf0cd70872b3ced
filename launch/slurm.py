"""Train EMO's stages on GPU nodes under SLURM: one process per GPU, one batch job per stage, each stage's job
waiting for the one before it (`--dependency=afterok`).

    python launch/slurm.py --nodes 2 --gpus-per-node 8 --partition gpu --time 48:00:00 \\
        --workdir /shared/runs --data-dir /shared/tfds --report /shared/prep/report.json --vae /shared/sd15/vae \\
        --sd15-unet /shared/sd15/unet --motion-adapter /shared/mm_sd_v15_v2.ckpt --dry-run

Run it on the login node from a checkout on the shared filesystem. Each task's process learns its place from
SLURM's variables: JAX_PROCESS_ID=$SLURM_PROCID, JAX_NUM_PROCESSES=$SLURM_NTASKS, JAX_LOCAL_DEVICE_IDS=
$SLURM_LOCALID (the GPU it drives; no per-task GPU binding), JAX_COORDINATOR_ADDRESS=<first node>:<port from
the job id> (`emo_jax.train.trainer.maybe_initialize_distributed` passes them to `jax.distributed.initialize`).
Jobs are requeued after preemption and get SIGTERM two minutes before their time limit: the trainer saves and
stops, and the requeued or resubmitted job resumes from the workdir's last checkpoint.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import stages

REPO = Path(__file__).resolve().parent.parent
PHASES = ("install", "submit")


def batch_script(args: argparse.Namespace, stage: int) -> str:
    """The sbatch script of one stage."""
    options = {
        "job-name": f"{args.name}-stage{stage}",
        "nodes": args.nodes,
        "ntasks-per-node": args.gpus_per_node,
        "gpus-per-node": args.gpus_per_node,
        "cpus-per-task": args.cpus_per_task,
        "partition": args.partition,
        "account": args.account,
        "time": args.time,
        "output": f"{args.logs}/%x-%j.out",
    }
    lines = ["#!/bin/bash"] + [f"#SBATCH --{key}={value}" for key, value in options.items() if value]
    lines += ["#SBATCH --requeue", "#SBATCH --signal=TERM@120", "set -euo pipefail", f"cd {shlex.quote(str(REPO))}"]
    lines += [
        'nodes=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))  # no pipe into head: SIGPIPE under pipefail',
        'export JAX_COORDINATOR_ADDRESS="${nodes[0]}:$((SLURM_JOB_ID % 4096 + 61440))"',
    ]
    task = (
        "export JAX_NUM_PROCESSES=$SLURM_NTASKS JAX_PROCESS_ID=$SLURM_PROCID JAX_LOCAL_DEVICE_IDS=$SLURM_LOCALID; "
        "exec " + shlex.join(stages.train_argv(args, stage, f"{args.venv}/bin/emo-jax"))
    )
    lines.append(f"srun --kill-on-bad-exit=1 bash -c {shlex.quote(task)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    job = parser.add_argument_group("SLURM job")
    job.add_argument("--name", default="emo", help="job name prefix")
    job.add_argument("--nodes", type=int, required=True)
    job.add_argument("--gpus-per-node", type=int, default=8)
    job.add_argument("--cpus-per-task", type=int, help="CPU cores per GPU process (data loading workers)")
    job.add_argument("--partition")
    job.add_argument("--account")
    job.add_argument("--time", help="time limit per stage job, e.g. 48:00:00")
    job.add_argument("--venv", default=str(REPO / ".venv"), help="python environment on the shared filesystem")
    job.add_argument("--logs", default="logs", help="folder for the batch scripts and the jobs' output")
    job.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    stages.add_arguments(parser)
    args = parser.parse_args(argv)
    args.logs, args.venv = str(Path(args.logs).absolute()), str(Path(args.venv).absolute())
    stages.absolute_paths(args)  # the jobs start in the checkout, not here
    phases = [p for p in args.phases.split(",") if p]
    if unknown := sorted(set(phases) - set(PHASES)):
        parser.error(f"--phases: unknown {unknown}; choose from {PHASES}")
    chosen = stages.stages(args)
    run = stages.Runner(args.dry_run)

    run.note(f"{args.nodes} nodes x {args.gpus_per_node} GPUs: {args.nodes * args.gpus_per_node} processes")
    if "install" in phases:
        run.run(["python3", "-m", "venv", args.venv])
        run.run([f"{args.venv}/bin/pip", "install", "-q", "-e", f"{REPO}[cuda]"])
    if "submit" in phases:
        if not args.dry_run:
            Path(args.logs).mkdir(parents=True, exist_ok=True)
        previous = None
        for stage in chosen:
            path, script = f"{args.logs}/{args.name}-stage{stage}.sbatch", batch_script(args, stage)
            if args.dry_run:
                print(f"cat > {shlex.quote(path)} <<'EOF'\n{script}EOF")
            else:
                Path(path).write_text(script)
            after = [f"--dependency=afterok:{previous}"] if previous else []
            previous = run.run(["sbatch", "--parsable", *after, path], into=f"JOB{stage}").split(";")[0]
            if not args.dry_run:
                run.note(f"stage {stage}: job {previous}, output {args.logs}/{args.name}-stage{stage}-{previous}.out")


if __name__ == "__main__":
    main()
