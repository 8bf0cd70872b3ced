"""Workdirs and inputs in a bucket (gs://), against an in-memory stand-in for GCS (tests/fake_gcs.py).

Orbax writes the checkpoints' arrays to gs:// through tensorstore's own GCS driver, which no stand-in reaches:
that part is not tested here (see launch/README.md). The `bucket` fixture: tests/conftest.py."""

import io
import json

import numpy as np
import pytest
from etils import epath
from PIL import Image
from tiny import stage_config

from emo_jax.assets import DEMO_MODEL
from emo_jax.paths import local_copy, location
from emo_jax.provenance.credentials import read_credentials
from emo_jax.provenance.metadata import NOTICE
from emo_jax.train.checkpointing import check_workdir_config, read_stage_params
from emo_jax.train.metrics import MetricWriter
from emo_jax.train.trainer import resolve_config


def test_logs_reach_a_bucket_workdir_and_a_resumed_run_continues_them(bucket, tmp_path):
    writer = MetricWriter("gs://bucket/run", upload_every=3600)
    writer.scalars(1, {"loss": 0.5})
    assert not (bucket / "run" / "metrics.jsonl").exists()  # uploads wait for upload_every, or close
    image = writer.image(1, np.zeros((8, 16, 3), np.uint8))
    writer.close()
    assert str(image) == "gs://bucket/run/images/step_0000001.png" and image.is_file()
    assert Image.open(io.BytesIO(image.read_bytes())).text["Comment"] == NOTICE  # marked as generated
    (tmp_path / "grid.png").write_bytes(image.read_bytes())
    signed = read_credentials(tmp_path / "grid.png")
    assert signed.status == "valid" and signed.says_generated and signed.training_step == 1
    assert any(p.name.startswith("events.out.tfevents") for p in (bucket / "run").iterdir())

    resumed = MetricWriter("gs://bucket/run", upload_every=0)
    resumed.scalars(2, {"loss": 0.25})  # upload_every 0: at once
    lines = [json.loads(line) for line in (bucket / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25}]
    resumed.close()


def test_a_bucket_workdir_keeps_its_config_and_refuses_another(bucket):
    config = stage_config(1).to_dict()
    check_workdir_config("gs://bucket/run", config)
    assert json.loads((bucket / "run" / "config.json").read_text())["stage"] == 1
    check_workdir_config("gs://bucket/run", config)
    with pytest.raises(ValueError, match=r"gs://bucket/run/config.json: .* another config \(differs at seed\)"):
        check_workdir_config("gs://bucket/run", {**config, "seed": 1})


def test_inputs_in_a_bucket_are_read_or_copied_once(bucket):
    report = {"speed_buckets": {"centres": [float(i) for i in range(9)], "radii": [0.5] * 9}}
    (bucket / "prep").mkdir(parents=True)
    (bucket / "prep" / "report.json").write_text(json.dumps(report))
    config = stage_config(3)
    config.data.report = "gs://bucket/prep/report.json"
    assert list(resolve_config(config).model.speed.centres) == report["speed_buckets"]["centres"]

    demo = location(DEMO_MODEL)
    for file in demo.iterdir():  # the shipped bundle, as a folder in the bucket
        file.copy(bucket / "demo" / file.name)
    saved = read_stage_params("gs://bucket/demo")
    local = read_stage_params(demo)
    assert saved.keys() == local.keys() and all(np.array_equal(saved[k], local[k]) for k in local)

    (bucket / "demo" / "nested").mkdir()
    (bucket / "demo" / "nested" / "file.txt").write_text("inside")
    copy = local_copy("gs://bucket/demo")
    assert copy == local_copy("gs://bucket/demo") and not copy.startswith("gs:")
    assert sorted(p.name for p in epath.Path(copy).iterdir()) == sorted([*(p.name for p in demo.iterdir()), "nested"])
    assert (epath.Path(copy) / "nested" / "file.txt").read_text() == "inside"
    with pytest.raises(FileNotFoundError, match="gs://bucket/nothing: not found"):
        local_copy("gs://bucket/nothing")
