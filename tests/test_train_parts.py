"""The trainer's small parts: condition dropout, motion-frame augmentation, config overrides, the optimizer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import stage_config

from emo_jax.config import apply_overrides
from emo_jax.train.batch import Dropout, MotionAugment, augment_motion, keep_masks
from emo_jax.train.optimizer import learning_rate


def test_dropout_shares_are_exclusive_and_as_configured():
    masks = keep_masks(jax.random.key(0), 40_000, Dropout(reference=0.05, audio=0.1, both=0.05, first_clip=0.2))
    ref, audio, motion = (np.asarray(masks[k]) for k in ("reference_keep", "audio_keep", "has_motion"))
    assert abs((ref == 0).mean() - 0.10) < 0.01  # alone or both
    assert abs((audio == 0).mean() - 0.15) < 0.01
    assert abs(((ref == 0) & (audio == 0)).mean() - 0.05) < 0.01
    assert abs((motion == 0).mean() - 0.2) < 0.01
    none = keep_masks(jax.random.key(1), 1000, Dropout())
    assert all(np.asarray(v).all() for v in none.values())
    with pytest.raises(ValueError, match="exceed 1"):
        Dropout(reference=0.6, audio=0.6)


def test_motion_augmentation_drops_patches_and_adds_noise():
    pixels = jnp.full((4, 2, 32, 32, 3), 0.5)
    dropped = np.asarray(augment_motion(jax.random.key(0), pixels, MotionAugment(patch_drop=0.3, patch_size=8)))
    patches = dropped.reshape(4, 2, 4, 8, 4, 8, 3)
    grey = (patches == 0).all(axis=(3, 5, 6))
    assert ((patches == 0.5).all(axis=(3, 5, 6)) | grey).all()  # whole patches, nothing else touched
    assert 0.2 < grey.mean() < 0.4
    noisy = np.asarray(augment_motion(jax.random.key(0), pixels, MotionAugment(noise_std=0.1)))
    assert abs((noisy - 0.5).std() - 0.1) < 0.01
    np.testing.assert_array_equal(augment_motion(jax.random.key(0), pixels, MotionAugment()), pixels)


def test_config_overrides_keep_each_entrys_type():
    config = stage_config(2)
    apply_overrides(
        config,
        [
            "--config.train.steps=7",
            "--config.optimizer.learning_rate=1e-4",
            "--config.mesh.shape=(1,8,1)",
            "--config.data.data_dir=/data/tfds",
            "--config.compute.remat=true",
            "--config.loss.snr_gamma=None",
        ],
    )
    assert config.train.steps == 7 and config.optimizer.learning_rate == 1e-4 and config.mesh.shape == (1, 8, 1)
    assert config.data.data_dir == "/data/tfds" and config.compute.remat is True and config.loss.snr_gamma is None
    with pytest.raises(ValueError, match="no entry 'stepz'"):
        apply_overrides(config, ["--config.train.stepz=3"])
    with pytest.raises(ValueError, match="cannot read 'many' as int"):
        apply_overrides(config, ["--config.train.steps=many"])


def test_learning_rate_warms_up_then_holds():
    config = stage_config(2)
    lr = learning_rate(config)
    assert float(lr(0)) == 0.0
    assert float(lr(250)) == pytest.approx(0.5e-5)
    assert float(lr(500)) == float(lr(50_000)) == pytest.approx(1e-5)
