"""What every launcher shares: the three training stages as `emo-jax train` command lines, and a runner that
either runs commands or, with --dry-run, prints them.

Stdlib only, so the launchers run on a laptop that has only gcloud or a SLURM login node's python3.

Stage n trains in <workdir>/stage<n> and starts from <workdir>/stage<n-1> (configs/stage<n>.py say what each
stage trains and loads). Paths are joined as text, so gs:// workdirs and data stay gs://.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence

STAGE_CONFIGS = {1: "configs/stage1.py", 2: "configs/stage2.py", 3: "configs/stage3.py"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every launcher takes: what to train, where, and --dry-run."""
    run = parser.add_argument_group("training")
    run.add_argument("--workdir", required=True, help="root of the runs: <workdir>/stage1, stage2, stage3 (gs:// ok)")
    run.add_argument("--data-dir", required=True, help="TFDS data_dir written by `emo-jax build-dataset`")
    run.add_argument("--report", required=True, help="the preprocessing report.json (speed buckets)")
    run.add_argument("--vae", required=True, help="converted SD VAE folder (`emo-jax convert`)")
    run.add_argument("--sd15-unet", help="diffusers SD1.5 UNet folder: stage 1 starts from it")
    run.add_argument("--motion-adapter", help="AnimateDiff motion module file: stage 2's temporal layers")
    run.add_argument("--wav2vec2", help="HF wav2vec2 folder (config.audio.wav2vec2_path), if the data needs it")
    run.add_argument("--stages", default="1,2,3", help="comma-separated stages to run, in order (default 1,2,3)")
    run.add_argument("--size", default="sd15", help="config size argument (configs/stageN.py:SIZE), e.g. tiny")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config entry for every stage, e.g. --set data.batch_size=64 (repeatable)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print every command instead of running it")


def join(root: str, *parts: str) -> str:
    """Path join that keeps gs://bucket/... intact (posix separators, no normalisation)."""
    return "/".join([root.rstrip("/"), *parts])


PATH_ARGUMENTS = ("workdir", "data_dir", "report", "vae", "sd15_unet", "motion_adapter", "wav2vec2")


def absolute_paths(args: argparse.Namespace) -> None:
    """Local path arguments made absolute (URLs such as gs://... left as they are)."""
    for name in PATH_ARGUMENTS:
        value = getattr(args, name)
        if value and "://" not in value:
            setattr(args, name, os.path.abspath(value))


def stages(args: argparse.Namespace) -> list[int]:
    """The stages to run, in order; every problem with the training flags in one error."""
    chosen = [int(s) for s in args.stages.split(",") if s.strip().isdigit()]
    problems = []
    if not chosen or any(s not in STAGE_CONFIGS for s in chosen) or len(chosen) != len(args.stages.split(",")):
        problems.append(f"--stages: choose from 1, 2, 3, got {args.stages!r}")
    if 1 in chosen and not args.sd15_unet:
        problems.append("stage 1 starts from SD1.5: give --sd15-unet")
    if 2 in chosen and not args.motion_adapter:
        problems.append("stage 2 loads AnimateDiff's temporal layers: give --motion-adapter")
    problems += [f"--set {entry!r}: expected KEY=VALUE" for entry in args.set if "=" not in entry]
    if problems:
        raise SystemExit("\n".join(problems))
    return chosen


def train_argv(args: argparse.Namespace, stage: int, emo_jax: str = "emo-jax") -> list[str]:
    """The `emo-jax train` command line of one stage."""
    config = STAGE_CONFIGS[stage] + (f":{args.size}" if args.size != "sd15" else "")
    entries = {
        "data.data_dir": args.data_dir,
        "data.report": args.report,
        "vae.checkpoint": args.vae,
        "audio.wav2vec2_path": args.wav2vec2,
        "init.sd15_unet": args.sd15_unet if stage == 1 else None,
        "init.motion_adapter": args.motion_adapter if stage == 2 else None,
        "init.checkpoint": join(args.workdir, f"stage{stage - 1}") if stage > 1 else None,
    }
    argv = [emo_jax, "train", "--config", config, "--workdir", join(args.workdir, f"stage{stage}")]
    argv += [f"--config.{key}={value}" for key, value in entries.items() if value]
    return argv + [f"--config.{entry}" for entry in args.set]


def shell_join(argv: Sequence[str]) -> str:
    """argv as a shell line; words holding a dry run's `$NAME` stand-ins are double-quoted so they expand."""
    quote = lambda word: (
        f'"{word}"' if re.fullmatch(r"[\w@%+=:,./-]*\$[A-Z0-9_]+[\w@%+=:,./-]*", word) else shlex.quote(word)
    )
    return " ".join(quote(word) for word in argv)


class Runner:
    """Runs shell commands in order, stopping at the first failure; with dry_run, prints them instead."""

    def __init__(self, dry_run: bool):
        self.dry_run = dry_run

    def note(self, text: str) -> None:
        print(f"# {text}", flush=True)

    def chdir(self, path: str) -> None:
        if self.dry_run:
            print(f"cd {shlex.quote(path)}", flush=True)
        else:
            os.chdir(path)

    def run(self, command: str | Sequence[str], *, into: str = "") -> str:
        """One command (a shell string, or an argv shown shell-quoted). With `into` (a variable name) -> its
        stdout, which a dry run shows as `NAME=$(command)` and returns as `$NAME`."""
        shown = command if isinstance(command, str) else shell_join(command)
        if self.dry_run:
            print(f"{into}=$({shown})" if into else shown, flush=True)
            return f"${into}" if into else ""
        print(f"+ {shown}", file=sys.stderr, flush=True)
        result = subprocess.run(command, shell=isinstance(command, str), text=True, capture_output=bool(into))
        if result.returncode:
            raise SystemExit(f"command failed with exit code {result.returncode}: {shown}\n{result.stderr or ''}")
        return result.stdout.strip() if into else ""

    def parallel(self, commands: Sequence[Sequence[str]], logs: Sequence[str | None]) -> None:
        """Commands at once (one per host); each one's output to its log file, or to this terminal where the log
        is None. Fails, after all have ended, if any failed."""
        if self.dry_run:
            for command, log in zip(commands, logs):
                print(shell_join(command) + (f" > {shlex.quote(log)} 2>&1" if log else "") + " &", flush=True)
            print("wait", flush=True)
            return
        processes = []
        for command, log in zip(commands, logs):
            print(f"+ {shlex.join(command)}" + (f"  (output: {log})" if log else ""), file=sys.stderr, flush=True)
            out = open(log, "w") if log else None
            processes.append(
                (command, subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT if out else None))
            )
        failed = [shlex.join(c) for c, p in processes if p.wait()]
        if failed:
            raise SystemExit("failed:\n  " + "\n  ".join(failed))
