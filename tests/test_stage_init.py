"""Stage N+1 starts from stage N: what loads, what starts fresh, and what is refused by name."""

import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from tiny import micro_config

from emo_jax.build import build_emo
from emo_jax.convert.state_dict import ConversionError
from emo_jax.train import sharding
from emo_jax.train.checkpointing import Checkpoints, read_stage_params
from emo_jax.train.init import initialise, load_stage
from emo_jax.train.trainer import Trainer


@pytest.fixture(scope="module")
def stage1_run(tmp_path_factory):
    """A stage-1 workdir with one checkpoint (the micro model at init, weights made distinctive)."""
    workdir = tmp_path_factory.mktemp("stage1")
    config = micro_config(1)
    trainer = Trainer(config, sharding.make_mesh((1, 1, 1)))
    state, frozen, _ = trainer.initial_state()
    state["trainable"] = {k: v + 0.5 for k, v in state["trainable"].items()}

    checkpoints = Checkpoints(workdir, every=1, keep=1)  # the weights only: no data position, no config
    checkpoints.manager.save(
        3, args=ocp.args.Composite(state=ocp.args.StandardSave({"state": state, "frozen": frozen}))
    )
    checkpoints.wait()
    checkpoints.close()
    return workdir, {k: np.asarray(v) for k, v in state["trainable"].items()}


def _dotted(model):
    return {".".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def test_stage_two_loads_stage_one_and_starts_only_its_new_layers_fresh(stage1_run):
    workdir, stage1 = stage1_run
    saved = read_stage_params(workdir)
    assert saved.keys() == stage1.keys()  # stage 1 trains every EMO part
    config = micro_config(2)
    config.init.checkpoint = str(workdir)
    config.init.fresh = list(config.init.fresh) + [r"\.motion_modules\."]  # no AnimateDiff adapter here
    model = build_emo(config, 7)
    before = _dotted(model)
    done = initialise(model, config)
    after = _dotted(model)
    assert any("from the previous stage" in line for line in done)
    for key, value in stage1.items():
        np.testing.assert_array_equal(after[key], value)
    fresh = [k for k in after if k not in stage1]
    assert fresh and all(("motion_modules" in k or "audio" in k) for k in fresh)
    for key in fresh:
        np.testing.assert_array_equal(after[key], before[key])


def test_a_stage_that_does_not_fit_is_refused_with_its_keys(stage1_run):
    workdir, _ = stage1_run
    config = micro_config(2)
    config.init.checkpoint = str(workdir)  # motion modules: neither saved, nor fresh, nor from an adapter
    with pytest.raises(ConversionError, match=r"(?s)does not fit.*model parameters it does not hold.*motion_modules"):
        initialise(build_emo(config, 0), config)

    model = build_emo(micro_config(1), 0)
    saved = read_stage_params(workdir)
    key = next(k for k in saved if k.endswith("conv_in.kernel"))
    wrong = dict(saved, **{key: saved[key][..., :1], "backbone.no_such_layer.kernel": saved[key]})
    with pytest.raises(ConversionError) as error:
        load_stage(model, wrong, keep=[], source="run")
    message = str(error.value)
    assert "1 saved weights this model has no parameter for" in message and "no_such_layer" in message
    assert f"{key}: (3, 3, 4, 1) saved, model wants (3, 3, 4, 32)" in message


def test_an_exported_bundle_is_a_starting_point_too(stage1_run, tmp_path):
    from safetensors.numpy import save_file

    _, stage1 = stage1_run
    save_file(stage1, tmp_path / "emo.safetensors")  # what `emo-jax export` writes beside config.json
    saved = read_stage_params(tmp_path)
    assert saved.keys() == stage1.keys()
    for key, value in stage1.items():
        np.testing.assert_array_equal(saved[key], value)
    with pytest.raises(FileNotFoundError, match="nor an exported bundle"):
        read_stage_params(tmp_path / "nothing")
