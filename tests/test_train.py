"""Training runs as a user starts them: checkpoints that survive SIGKILL and SIGTERM, bad numbers, logs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tiny import micro_config

TESTS = Path(__file__).parent


def _config_file(tmp_path: Path, data_dir: Path, steps: int) -> Path:
    """A config file for the CLI: the micro model on the test corpus."""
    path = tmp_path / "micro.py"
    path.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "from tiny import micro_config\n\n\n"
        "def get_config(arg=None):\n"
        f"    c = micro_config(0, data_dir={str(data_dir)!r})\n"
        f"    c.train.update(steps={steps}, checkpoint_every=2, keep_checkpoints=2)\n"
        "    return c\n"
    )
    return path


def _start(config: Path, workdir: Path, cache: Path) -> subprocess.Popen:
    env = dict(
        os.environ,
        JAX_COMPILATION_CACHE_DIR=str(cache),  # later processes load the compiled step instead of compiling it
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
    )
    command = [sys.executable, "-m", "emo_jax.cli", "train", "--config", str(config), "--workdir", str(workdir)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen) -> str:
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, out[-3000:]
    return out


def _logged(workdir: Path) -> list[dict]:
    path = workdir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _finished_checkpoints(workdir: Path) -> list[int]:
    """Complete checkpoint steps (Orbax renames a step's folder from a temporary name when it is whole)."""
    folder = workdir / "checkpoints"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def _wait_for_step(workdir: Path, step: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 600
    while not any(entry["step"] >= step for entry in _logged(workdir)):
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.slow
def test_killed_and_preempted_runs_resume_to_the_losses_of_an_uninterrupted_run(logmel_dataset_dir, tmp_path):
    steps = 9
    config = _config_file(tmp_path, logmel_dataset_dir, steps)
    cache = tmp_path / "xla_cache"
    _finish(_start(config, tmp_path / "straight", cache))
    straight = {e["step"]: e for e in _logged(tmp_path / "straight")}
    assert sorted(straight) == list(range(1, steps + 1))

    # SIGKILL at a random moment once a checkpoint is complete (mid-step or mid-save), then the same command.
    killed = tmp_path / "killed"
    process = _start(config, killed, cache)
    _wait_for_step(killed, 3, process)
    while not _finished_checkpoints(killed):
        assert process.poll() is None
        time.sleep(0.05)
    time.sleep(np.random.default_rng().uniform(0, 1.0))
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed_from = max(_finished_checkpoints(killed))
    _finish(_start(config, killed, cache))

    # SIGTERM (preemption) saves the step it stopped at, exits cleanly, and the next run goes on from there.
    preempted = tmp_path / "preempted"
    process = _start(config, preempted, cache)
    _wait_for_step(preempted, 3, process)
    process.send_signal(signal.SIGTERM)
    out = _finish(process)
    stopped = max(e["step"] for e in _logged(preempted))
    assert (preempted / "checkpoints" / str(stopped)).is_dir(), out[-2000:]
    assert stopped < steps
    _finish(_start(config, preempted, cache))

    for workdir in (killed, preempted):
        logged = _logged(workdir)
        assert {e["step"] for e in logged} == set(straight)
        for entry in logged:  # every logged loss, before and after the interruption, bit for bit
            assert entry["loss"] == straight[entry["step"]]["loss"], (workdir.name, entry["step"])
            assert entry["grad_norm"] == straight[entry["step"]]["grad_norm"]
    assert resumed_from >= 2
    kept = _finished_checkpoints(killed)
    assert kept[-1] == steps and len(kept) == 2  # keep-last-2


def test_another_configs_workdir_is_refused(logmel_dataset_dir, tmp_path):
    from emo_jax.train.checkpointing import check_workdir_config

    config = micro_config(0, data_dir=str(logmel_dataset_dir))
    check_workdir_config(tmp_path, config.to_dict())
    config.train.steps = 5  # how long a run goes may change
    check_workdir_config(tmp_path, config.to_dict())
    config.optimizer.learning_rate = 1.0
    config.model.prediction_type = "v_prediction"
    with pytest.raises(ValueError, match="another config.*model.prediction_type, optimizer.learning_rate"):
        check_workdir_config(tmp_path, config.to_dict())
    check_workdir_config(tmp_path, config.to_dict(), allow_changes=True)


def test_a_run_saved_before_a_config_key_was_added_resumes_at_its_neutral_value(tmp_path):
    from emo_jax.train.checkpointing import ADDED_KEYS, check_workdir_config

    config = micro_config(0)
    old = config.to_dict()
    for dotted in ADDED_KEYS:
        section, key = dotted.split(".")
        del old[section][key]
    (tmp_path / "config.json").write_text(json.dumps(old))
    check_workdir_config(tmp_path, config.to_dict())  # the run's loss is what it was
    config.loss.mouth_weight = 3.0
    with pytest.raises(ValueError, match="another config.*loss.mouth_weight"):
        check_workdir_config(tmp_path, config.to_dict())


def test_a_mouth_weighted_loss_trains_and_weighs_the_mouth(logmel_dataset_dir, tmp_path):
    # loss.mouth_weight: the pipeline adds the clips' mouth masks, the loss weighs them; a run trains on them.
    from emo_jax.train import trainer

    config = micro_config(0, data_dir=str(logmel_dataset_dir))
    config.loss.mouth_weight = 4.0
    config.train.update(steps=2, checkpoint_every=2)
    metrics = trainer.train(config, tmp_path / "run", progress=False)
    assert np.isfinite(metrics["loss"]) and _finished_checkpoints(tmp_path / "run") == [2]
    config.loss.mouth_weight = 0.0
    with pytest.raises(ValueError, match="another config.*loss.mouth_weight"):
        trainer.train(config, tmp_path / "run", progress=False)


@pytest.mark.slow
def test_a_run_resumed_with_another_worker_count_continues_its_data_order(logmel_dataset_dir, tmp_path, caplog):
    # grain saves its position per worker: the resumed run keeps the checkpoint's worker count (warning), so
    # step 3 after the resume sees the batch an uninterrupted run sees.
    from emo_jax.train import trainer

    config = micro_config(0, data_dir=str(logmel_dataset_dir))
    config.data.worker_count = 1
    config.train.update(steps=3, checkpoint_every=2)
    trainer.train(config, tmp_path / "straight", progress=False)
    config.train.steps = 2
    trainer.train(config, tmp_path / "resumed", progress=False)
    config.train.steps, config.data.worker_count = 3, 0
    trainer.train(config, tmp_path / "resumed", progress=False)
    assert "data.worker_count 0: resuming with the checkpoint's 1" in caplog.text
    straight, resumed = (_logged(tmp_path / run) for run in ("straight", "resumed"))
    assert [e["step"] for e in resumed] == [1, 2, 3]
    assert [e["loss"] for e in resumed] == [e["loss"] for e in straight]


@pytest.mark.slow
def test_a_nan_stops_the_run_after_saving_the_last_good_state(logmel_dataset_dir, tmp_path, monkeypatch):
    """Step 1 logs, draws its frame grid and checkpoints; step 2's batch carries a NaN: the run names the step and
    the batch's videos, saves, and stops; the saved weights are step 1's."""
    from emo_jax.train import sharding, trainer
    from emo_jax.train.checkpointing import read_stage_params

    config = micro_config(0, data_dir=str(logmel_dataset_dir))
    config.train.update(steps=3, checkpoint_every=1, image_every=1)
    place = sharding.global_batch
    calls = []

    def poisoned(host, mesh):
        calls.append(1)
        if len(calls) == 2:
            host = dict(host, speed=np.full_like(host["speed"], np.nan))
        return place(host, mesh)

    monkeypatch.setattr(sharding, "global_batch", poisoned)
    with pytest.raises(trainer.NonFiniteLoss, match=r"step 2: loss nan .* is not finite \(batch: \w+ frame \d+"):
        trainer.train(config, tmp_path, progress=False)

    (logged,) = _logged(tmp_path)
    assert logged["step"] == 1 and np.isfinite(logged["loss"])
    expected = {"loss", "grad_norm", "learning_rate", "step_seconds", "examples_per_second", "memory_bytes"}
    assert expected <= set(logged) and any(k.startswith("loss_t") for k in logged)
    assert logged["flops_per_second"] > 0
    assert list((tmp_path / "images").glob("step_0000001.png")) and list(tmp_path.glob("events.out.tfevents.*"))
    assert json.loads((tmp_path / "config.json").read_text())["model"]["prediction_type"] == "epsilon"
    good, after_nan = (read_stage_params(tmp_path / "checkpoints" / str(s)) for s in (1, 2))
    assert good.keys() == after_nan.keys()
    for key in good:
        np.testing.assert_array_equal(after_nan[key], good[key])
        assert np.isfinite(good[key]).all()
