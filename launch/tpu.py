"""Train EMO's stages on a Cloud TPU VM pod slice: create it (a queued resource, spot if asked), copy this
checkout to every host, install, run `emo-jax train` on every host at once with jax.distributed, delete it.

    python launch/tpu.py --name emo --zone us-east5-a --accelerator-type v5p-16 --spot \\
        --workdir gs://BUCKET/runs --data-dir /mnt/data/tfds --report gs://BUCKET/prep/report.json \\
        --vae gs://BUCKET/sd15/vae --sd15-unet gs://BUCKET/sd15/unet --motion-adapter gs://BUCKET/mm_sd_v15_v2.ckpt \\
        --dry-run

One process per host; host h gets JAX_PROCESS_ID=h, JAX_NUM_PROCESSES=hosts and JAX_COORDINATOR_ADDRESS=<host 0's
internal IP>:8476 (`emo_jax.train.trainer.maybe_initialize_distributed` passes them on). Host 0's output
streams here; the others' go to --logs/<name>-stage<n>-host<h>.log. Every run resumes from its workdir's last
checkpoint, so after a preemption or a dropped connection run the same command with --phases install,train.
"""

from __future__ import annotations

import argparse
import re
import shlex
import tempfile
from pathlib import Path

import stages

REPO = Path(__file__).resolve().parent.parent
PHASES = ("create", "copy", "install", "train", "delete")
COORDINATOR_PORT = 8476  # jax's default on TPU
REMOTE_CODE, REMOTE_VENV = "$HOME/emo-jax", "$HOME/emo-venv"  # expanded by the host's shell


def hosts_of(accelerator_type: str) -> int:
    """Hosts (TPU VMs) of a slice: v2/v3/v4/v5p names count TensorCores, 8 per host; v5litepod/v6e names count
    chips, one host up to 8, else 4 per host."""
    match = re.fullmatch(r"(v2|v3|v4|v5p|v5litepod|v6e)-(\d+)", accelerator_type)
    if not match:
        raise SystemExit(f"--accelerator-type {accelerator_type!r}: unknown; give --hosts")
    family, count = match.group(1), int(match.group(2))
    if family in ("v5litepod", "v6e"):
        return 1 if count <= 8 else count // 4
    return max(1, count // 8)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tpu = parser.add_argument_group("TPU slice")
    tpu.add_argument("--name", required=True, help="TPU VM and queued-resource name")
    tpu.add_argument("--zone", required=True)
    tpu.add_argument("--project", help="GCP project (default: gcloud's)")
    tpu.add_argument("--accelerator-type", required=True, help="e.g. v5p-16, v4-32, v5litepod-16")
    tpu.add_argument("--runtime-version", default="v2-alpha-tpuv5", help="TPU VM software version")
    tpu.add_argument("--hosts", type=int, help="hosts of the slice (default: from the accelerator type)")
    tpu.add_argument("--spot", action="store_true", help="spot capacity (queued resource; may be preempted)")
    tpu.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    tpu.add_argument("--logs", default="logs", help="local folder for the other hosts' output")
    stages.add_arguments(parser)
    args = parser.parse_args(argv)
    phases = [p for p in args.phases.split(",") if p]
    if unknown := sorted(set(phases) - set(PHASES)):
        parser.error(f"--phases: unknown {unknown}; choose from {PHASES}")
    chosen = stages.stages(args)
    hosts = args.hosts or hosts_of(args.accelerator_type)
    run = stages.Runner(args.dry_run)
    gcloud = lambda *words: (
        ["gcloud", "compute", "tpus", *words, "--zone", args.zone]
        + (["--project", args.project] if args.project else [])
    )
    ssh = lambda worker, command: gcloud("tpu-vm", "ssh", args.name, f"--worker={worker}", "--command", command)

    run.note(f"{args.accelerator_type}: {hosts} hosts, one process each; stages {chosen}")
    if "create" in phases:
        spot = ["--spot"] if args.spot else []
        run.run(
            gcloud("queued-resources", "create", args.name, "--node-id", args.name)
            + ["--accelerator-type", args.accelerator_type, "--runtime-version", args.runtime_version, *spot]
        )
        state = gcloud("queued-resources", "describe", args.name, "--format=value(state.state)")
        run.note("wait until the queued resource is ACTIVE (polled every 30 s)")
        run.run(
            f'until s=$({shlex.join(state)}); [ "$s" = ACTIVE ]; do '
            'case "$s" in FAILED|SUSPENDED) echo "queued resource $s" >&2; exit 1;; esac; sleep 30; done'
        )
    if "copy" in phases:
        archive = str(Path(tempfile.gettempdir()) / f"{args.name}-emo-jax.tar.gz")
        run.note("this checkout's HEAD (commit first what the run should use)")
        run.run(["git", "-C", str(REPO), "archive", "--format=tar.gz", "-o", archive, "HEAD"])
        run.run(gcloud("tpu-vm", "scp", archive, f"{args.name}:emo-jax.tar.gz", "--worker=all"))
        unpack = f'rm -rf "{REMOTE_CODE}" && mkdir -p "{REMOTE_CODE}" && tar -xzf emo-jax.tar.gz -C "{REMOTE_CODE}"'
        run.run(ssh("all", unpack))
    if "install" in phases:
        # uv brings a Python >= 3.11 where the TPU image's is older (Ubuntu 22.04 images have 3.10).
        uv = "$HOME/.local/bin/uv"
        install = (
            f'python3 -m pip install -q --user uv && {uv} venv -q --python 3.11 "{REMOTE_VENV}" && '
            f'{uv} pip install -q --python "{REMOTE_VENV}/bin/python" -e "{REMOTE_CODE}[tpu]"'
        )
        run.run(ssh("all", install))
    if "train" in phases:
        describe = gcloud("tpu-vm", "describe", args.name, "--format=value(networkEndpoints[0].ipAddress)")
        coordinator = run.run(describe, into="HOST0_IP")
        if not args.dry_run:
            Path(args.logs).mkdir(parents=True, exist_ok=True)
        for stage in chosen:
            run.note(f"stage {stage}")
            train = f'"{REMOTE_VENV}/bin/emo-jax" ' + shlex.join(stages.train_argv(args, stage)[1:])
            commands, logs = [], []
            for host in range(hosts):
                env = (
                    f"JAX_COORDINATOR_ADDRESS={coordinator}:{COORDINATOR_PORT} "
                    f"JAX_NUM_PROCESSES={hosts} JAX_PROCESS_ID={host}"
                )
                commands.append(ssh(host, f'cd "{REMOTE_CODE}" && {env} {train}'))
                logs.append(None if host == 0 else f"{args.logs}/{args.name}-stage{stage}-host{host}.log")
            run.parallel(commands, logs)
    if "delete" in phases:
        run.run(gcloud("queued-resources", "delete", args.name, "--force", "--quiet"))


if __name__ == "__main__":
    main()
