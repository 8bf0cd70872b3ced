"""The launchers (launch/): their dry runs, and their real runs against stand-ins for gcloud, SLURM and emo-jax
that record what each process was given."""

import json
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from emo_jax.train import trainer

LAUNCH = Path(__file__).resolve().parent.parent / "launch"
PLACE = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "JAX_LOCAL_DEVICE_IDS")
RUN = ["--data-dir", "/data/tfds", "--report", "gs://b/prep/report.json", "--vae", "gs://b/vae", "--sd15-unet"]
RUN += ["gs://b/unet", "--motion-adapter", "gs://b/mm.ckpt", "--set", "data.batch_size=64"]

# emo-jax's stand-in: one JSON file per process with its place, arguments and folder.
FAKE_EMO_JAX = f"""#!{sys.executable}
import json, os, sys
record = {{k: os.environ.get(k) for k in {PLACE!r}}}
record.update(argv=sys.argv[1:], cwd=os.getcwd())
with open(os.path.join(os.environ["RECORDS"], f"emo-jax-{{os.getpid()}}.json"), "w") as f:
    json.dump(record, f)
"""
# gcloud's: logs its arguments; a slice that is ACTIVE at once, host 0 at 10.1.2.3; ssh runs the command here
# in a home folder of its own.
FAKE_GCLOUD = f"""#!{sys.executable}
import json, os, subprocess, sys
args = sys.argv[1:]
with open(os.path.join(os.environ["RECORDS"], "gcloud.jsonl"), "a") as f:
    f.write(json.dumps(args) + "\\n")
if "describe" in args:
    print("ACTIVE" if "--format=value(state.state)" in args else "10.1.2.3")
elif "ssh" in args:
    command = args[args.index("--command") + 1]
    sys.exit(subprocess.run(["bash", "-c", command], env={{**os.environ, "HOME": os.environ["FAKE_HOME"]}}).returncode)
"""
# SLURM's: srun starts SLURM_NTASKS tasks, 8 per node; scontrol names the job's nodes node01, node02, ...
FAKE_SRUN = """#!/bin/bash
shift  # --kill-on-bad-exit=1
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$((i % 8)) SLURM_NODEID=$((i / 8)) "$@" & pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || exit 1; done
"""
FAKE_SCONTROL = """#!/bin/bash
for ((n = 1; n <= SLURM_JOB_NUM_NODES; n++)); do printf 'node%02d\\n' "$n"; done
"""
FAKE_SBATCH = f"""#!{sys.executable}
import json, os, sys
path = os.path.join(os.environ["RECORDS"], "sbatch.jsonl")
jobs = open(path).read().count("\\n") if os.path.exists(path) else 0
with open(path, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
print(f"{{1000 + jobs}};cluster")
"""


def _executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def fakes(tmp_path):
    """(environment with the stand-ins first on PATH, records folder)."""
    bin_dir, records = tmp_path / "bin", tmp_path / "records"
    records.mkdir()
    for name, text in [("gcloud", FAKE_GCLOUD), ("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)]:
        _executable(bin_dir / name, text)
    _executable(bin_dir / "sbatch", FAKE_SBATCH)
    home = tmp_path / "home"
    (home / "emo-jax").mkdir(parents=True)
    _executable(home / "emo-venv" / "bin" / "emo-jax", FAKE_EMO_JAX)
    _executable(tmp_path / "venv" / "bin" / "emo-jax", FAKE_EMO_JAX)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RECORDS": str(records), "FAKE_HOME": str(home)}
    return env, records


def _launch(script: str, args: list[str], env: dict, cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(LAUNCH / script), *args], env=env, cwd=cwd, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _processes(records: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(records.glob("emo-jax-*.json"))]


def _config(argv: list[str]) -> dict[str, str]:
    """--config.a.b=value flags -> {'a.b': value}, plus 'config' and 'workdir'."""
    entries = dict(entry[len("--config.") :].split("=", 1) for entry in argv if entry.startswith("--config."))
    return {**entries, "config": argv[argv.index("--config") + 1], "workdir": argv[argv.index("--workdir") + 1]}


def _check_stage(config: dict, stage: int, workdir: str) -> None:
    assert config["config"] == f"configs/stage{stage}.py"
    assert config["workdir"] == f"{workdir}/stage{stage}"
    assert config["data.data_dir"] == "/data/tfds" and config["data.batch_size"] == "64"
    assert config.get("init.checkpoint") == (f"{workdir}/stage{stage - 1}" if stage > 1 else None)
    assert config.get("init.sd15_unet") == ("gs://b/unet" if stage == 1 else None)
    assert config.get("init.motion_adapter") == ("gs://b/mm.ckpt" if stage == 2 else None)


def test_the_tpu_dry_run_of_a_two_host_slice_names_every_hosts_place(fakes, tmp_path):
    env, records = fakes
    args = ["--name", "emo", "--zone", "us-east5-a", "--accelerator-type", "v5p-16", "--spot"]
    out = _launch("tpu.py", [*args, "--workdir", "gs://b/runs", *RUN, "--dry-run"], env, tmp_path)
    assert not (records / "gcloud.jsonl").exists()  # printed, not run
    lines = [line for line in out.splitlines() if not line.startswith("#")]
    assert lines[0].startswith("gcloud compute tpus queued-resources create emo --node-id emo")
    assert "--accelerator-type v5p-16" in lines[0] and lines[0].endswith("--spot")
    assert any("tpu-vm scp" in line and "--worker=all" in line for line in lines)
    assert any("uv venv" in line and "emo-jax[tpu]" in line for line in lines)
    assert lines[-1] == "gcloud compute tpus queued-resources delete emo --force --quiet --zone us-east5-a"
    runs = [
        words for words in (shlex.split(line.split(" > ")[0].removesuffix(" &")) for line in lines) if "ssh" in words
    ]
    runs = [words for words in runs if "train" in words[words.index("--command") + 1]]
    assert len(runs) == 6  # 3 stages x 2 hosts
    for i, words in enumerate(runs):
        stage, host = i // 2 + 1, i % 2
        assert f"--worker={host}" in words
        command = shlex.split(words[words.index("--command") + 1])
        place = dict(word.split("=", 1) for word in command if word.startswith("JAX_"))
        assert place == {
            "JAX_COORDINATOR_ADDRESS": "$HOST0_IP:8476",
            "JAX_NUM_PROCESSES": "2",
            "JAX_PROCESS_ID": str(host),
        }
        _check_stage(_config(command), stage, "gs://b/runs")


def test_a_tpu_launch_runs_each_stage_on_every_host_with_its_process_id(fakes, tmp_path):
    env, records = fakes
    args = ["--name", "emo", "--zone", "z", "--accelerator-type", "v4-32", "--phases", "create,train,delete"]
    _launch("tpu.py", [*args, "--workdir", "gs://b/runs", *RUN, "--stages", "1,2", "--logs", "logs"], env, tmp_path)
    calls = [json.loads(line) for line in (records / "gcloud.jsonl").read_text().splitlines()]
    assert calls[0][:5] == ["compute", "tpus", "queued-resources", "create", "emo"]
    assert calls[-1][:5] == ["compute", "tpus", "queued-resources", "delete", "emo"]
    processes = _processes(records)
    assert len(processes) == 8  # v4-32: 4 hosts, 2 stages
    by_stage = {}
    for p in processes:
        by_stage.setdefault(_config(p["argv"])["config"], []).append(p)
    for stage in (1, 2):
        hosts = by_stage[f"configs/stage{stage}.py"]
        assert sorted(int(p["JAX_PROCESS_ID"]) for p in hosts) == [0, 1, 2, 3]
        assert {(p["JAX_COORDINATOR_ADDRESS"], p["JAX_NUM_PROCESSES"]) for p in hosts} == {("10.1.2.3:8476", "4")}
        assert {p["cwd"] for p in hosts} == {env["FAKE_HOME"] + "/emo-jax"}
        _check_stage(_config(hosts[0]["argv"]), stage, "gs://b/runs")
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == [
        f"emo-stage{s}-host{h}.log" for s in (1, 2) for h in (1, 2, 3)
    ]


def test_the_slurm_dry_run_gives_each_of_16_processes_its_gpu_and_place(fakes, tmp_path):
    """2 nodes x 8 GPUs: the printed batch scripts, run under the stand-in srun, start 16 processes."""
    env, records = fakes
    args = ["--nodes", "2", "--gpus-per-node", "8", "--partition", "gpu", "--venv", str(tmp_path / "venv")]
    out = _launch("slurm.py", [*args, "--workdir", "/shared/runs", *RUN, "--dry-run"], env, tmp_path)
    assert not (records / "sbatch.jsonl").exists()
    scripts = re.findall(r"<<'EOF'\n(.*?)EOF\n", out, re.S)
    assert len(scripts) == 3
    assert re.findall(r"^JOB\d=.*$", out, re.M) == [
        f"JOB1=$(sbatch --parsable {tmp_path}/logs/emo-stage1.sbatch)",
        f'JOB2=$(sbatch --parsable "--dependency=afterok:$JOB1" {tmp_path}/logs/emo-stage2.sbatch)',
        f'JOB3=$(sbatch --parsable "--dependency=afterok:$JOB2" {tmp_path}/logs/emo-stage3.sbatch)',
    ]
    for stage, script in enumerate(scripts, 1):
        assert "#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=8\n#SBATCH --gpus-per-node=8\n" in script
        for old in records.glob("emo-jax-*.json"):
            old.unlink()
        job = {"SLURM_JOB_ID": "4321", "SLURM_JOB_NODELIST": "node[01-02]", "SLURM_JOB_NUM_NODES": "2"}
        result = subprocess.run(["bash", "-c", script], env={**env, **job, "SLURM_NTASKS": "16"}, capture_output=True)
        assert result.returncode == 0, result.stderr
        processes = _processes(records)
        assert sorted(int(p["JAX_PROCESS_ID"]) for p in processes) == list(range(16))
        for p in processes:
            assert p["JAX_LOCAL_DEVICE_IDS"] == str(int(p["JAX_PROCESS_ID"]) % 8)
            assert (p["JAX_COORDINATOR_ADDRESS"], p["JAX_NUM_PROCESSES"]) == (f"node01:{4321 % 4096 + 61440}", "16")
            assert p["cwd"] == str(LAUNCH.parent)
        _check_stage(_config(processes[0]["argv"]), stage, "/shared/runs")


def test_slurm_stages_wait_for_the_job_before_them(fakes, tmp_path):
    env, records = fakes
    _launch("slurm.py", ["--nodes", "1", "--phases", "submit", "--workdir", "runs", *RUN], env, tmp_path)
    submitted = [json.loads(line) for line in (records / "sbatch.jsonl").read_text().splitlines()]
    assert submitted == [
        ["--parsable", f"{tmp_path}/logs/emo-stage1.sbatch"],
        ["--parsable", "--dependency=afterok:1000", f"{tmp_path}/logs/emo-stage2.sbatch"],
        ["--parsable", "--dependency=afterok:1001", f"{tmp_path}/logs/emo-stage3.sbatch"],
    ]
    script = (tmp_path / "logs" / "emo-stage2.sbatch").read_text()
    assert f"--workdir {tmp_path}/runs/stage2 " in script  # local paths made absolute: the job starts elsewhere


def test_the_one_gpu_launcher_runs_the_stages_in_order(fakes, tmp_path):
    env, records = fakes
    venv = ["--venv", str(tmp_path / "venv"), "--phases", "train"]
    out = _launch("gpu.py", [*venv, "--workdir", "runs", *RUN, "--dry-run"], env, tmp_path)
    assert not list(records.glob("emo-jax-*.json"))
    assert out.splitlines()[0] == f"cd {LAUNCH.parent}"
    _launch("gpu.py", [*venv, "--workdir", "runs", *RUN], env, tmp_path)
    processes = _processes(records)
    assert sorted(_config(p["argv"])["config"] for p in processes) == [f"configs/stage{s}.py" for s in (1, 2, 3)]
    for p in processes:
        assert p["JAX_PROCESS_ID"] is None and p["cwd"] == str(LAUNCH.parent)
        stage = int(_config(p["argv"])["config"][len("configs/stage")])
        _check_stage(_config(p["argv"]), stage, f"{tmp_path}/runs")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--stages", "2"], "give --motion-adapter"),
        (["--stages", "4"], "--stages: choose from 1, 2, 3"),
        (["--set", "data.batch_size"], "expected KEY=VALUE"),
    ],
)
def test_launchers_refuse_an_incomplete_run(args, message, tmp_path):
    base = ["--workdir", "runs", "--data-dir", "d", "--report", "r", "--vae", "v", "--dry-run"]
    result = subprocess.run(
        [sys.executable, str(LAUNCH / "gpu.py"), *base, *args], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode != 0 and message in result.stderr


def test_tpu_hosts_follow_the_accelerator_type():
    sys.path.insert(0, str(LAUNCH))
    try:
        from tpu import hosts_of
    finally:
        sys.path.remove(str(LAUNCH))
    assert [hosts_of(t) for t in ("v5p-16", "v4-32", "v4-8", "v5litepod-16", "v5litepod-8", "v6e-64")] == [
        2,
        4,
        1,
        4,
        1,
        16,
    ]
    with pytest.raises(SystemExit, match="give --hosts"):
        hosts_of("v9-8")


def test_the_trainer_gives_jax_the_process_ids_the_launchers_name(monkeypatch):
    calls = []
    monkeypatch.setattr(trainer.jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(trainer.jax.distributed, "initialize", lambda **kw: calls.append(kw))
    for name in (
        "SLURM_NTASKS",
        "TPU_WORKER_HOSTNAMES",
        "JAX_COORDINATOR_ADDRESS",
        "JAX_NUM_PROCESSES",
        "JAX_PROCESS_ID",
    ):
        monkeypatch.delenv(name, raising=False)
    trainer.maybe_initialize_distributed()
    assert calls == []  # one process: nothing to join
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.1.2.3:8476")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "3")
    trainer.maybe_initialize_distributed()
    assert calls == [{"num_processes": 4, "process_id": 3}]
    monkeypatch.setenv("JAX_PROCESS_ID", "three")
    with pytest.raises(ValueError, match="JAX_PROCESS_ID='three'"):
        trainer.maybe_initialize_distributed()
    monkeypatch.delenv("JAX_NUM_PROCESSES")
    monkeypatch.delenv("JAX_PROCESS_ID")
    monkeypatch.setenv("SLURM_NTASKS", "16")  # SLURM alone: jax detects the rest
    trainer.maybe_initialize_distributed()
    assert calls[-1] == {}
