"""The audio-use probe: blind to audio when the audio path adds nothing, sees it as soon as it does."""

import jax
import numpy as np
import pytest
from flax import nnx
from tiny import micro_config

from emo_jax.build import build_emo, build_vae
from emo_jax.eval.audio_use import REGIONS, VARIANTS, audio_use, clip_batches, table
from emo_jax.train.trainer import dataset_source


@pytest.fixture(scope="module")
def probe_inputs(logmel_dataset_dir):
    config = micro_config(0, data_dir=str(logmel_dataset_dir))
    batches = list(clip_batches(config, dataset_source(config), clips=4, batch_size=2))
    return config, build_emo(config, 0), build_vae(config, 0), batches


def test_a_fresh_model_ignores_audio_exactly(probe_inputs):
    # The audio attention's output projection starts at zero: own, other and no audio give the same loss.
    config, model, vae, batches = probe_inputs
    results = audio_use(config, model, vae, batches, (900,))
    assert len(batches) == 2 and [r.region for r in results] == list(REGIONS)
    for result in results:
        assert set(result.loss) == set(VARIANTS)
        assert result.loss["own"] == result.loss["other"] == result.loss["none"] > 0
        assert result.gain == 0.0
    assert "| 900 | mouth |" in table(results)


def test_an_audio_path_that_adds_something_is_seen(probe_inputs):
    config, _, vae, batches = probe_inputs
    model = build_emo(config, 0)
    keys = iter(jax.random.split(jax.random.key(1), 16))
    outputs = [m.attn_audio.to_out[0].kernel for _, m in nnx.iter_graph(model) if getattr(m, "attn_audio", None)]
    assert outputs
    for kernel in outputs:  # what training would do to the zero-initialised projections
        kernel[...] = 0.5 * jax.random.normal(next(keys), kernel.shape)
    for result in audio_use(config, model, vae, batches, (500, 900)):
        assert result.loss["other"] != result.loss["own"] and result.loss["none"] != result.loss["own"]
        assert result.gain != 0.0 and np.isfinite(result.gain_se)
