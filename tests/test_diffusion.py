"""The training objective's pieces: schedules, noising, v targets, min-SNR weights (diffusers as the peer)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from peers import require
from tiny import micro_config

from emo_jax.build import build_vae
from emo_jax.diffusion import loss, schedules
from emo_jax.train.batch import Dropout, MotionAugment, Objective, example_batch, training_inputs


@pytest.mark.parity
@pytest.mark.parametrize("schedule, zero_snr", [("scaled_linear", False), ("linear", False), ("scaled_linear", True)])
def test_schedule_noising_and_velocity_match_diffusers(schedule, zero_snr):
    torch = require("torch")
    from diffusers import DDPMScheduler

    peer = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule=schedule, rescale_betas_zero_snr=zero_snr)
    abar = schedules.alphas_cumprod(beta_schedule=schedule, rescale_betas_zero_snr=zero_snr)
    np.testing.assert_allclose(abar, peer.alphas_cumprod.numpy(), rtol=1e-5, atol=1e-7)
    if zero_snr:
        assert abar[-1] == 0 and abs(abar[0] - schedules.alphas_cumprod()[0]) < 1e-7

    rng = np.random.default_rng(0)
    x0, noise = rng.standard_normal((2, 3, 2, 8, 8, 4), dtype=np.float32)
    t = np.array([10, 999, 500])
    args = torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(t)
    ours = jnp.asarray(x0), jnp.asarray(noise), jnp.asarray(t), abar
    np.testing.assert_allclose(schedules.add_noise(*ours), peer.add_noise(*args).numpy(), atol=1e-6)
    np.testing.assert_allclose(schedules.velocity(*ours), peer.get_velocity(*args).numpy(), atol=1e-6)


def test_x0_is_recovered_from_each_prediction_type():
    abar = schedules.alphas_cumprod(rescale_betas_zero_snr=True)
    rng = np.random.default_rng(1)
    x0, noise = (jnp.asarray(a) for a in rng.standard_normal((2, 2, 4, 4, 4), dtype=np.float32))
    t = jnp.array([3, 998])  # 998: abar ~ 1e-5, still invertible from eps
    x_t = schedules.add_noise(x0, noise, t, abar)
    for kind in schedules.PREDICTION_TYPES:
        exact = schedules.target(kind, x0, noise, t, abar)
        np.testing.assert_allclose(schedules.predict_x0(kind, exact, x_t, t, abar), x0, atol=2e-3)
    # At zero terminal SNR only v still says what x0 is.
    t_last = jnp.array([999, 999])
    x_last = schedules.add_noise(x0, noise, t_last, abar)
    v = schedules.target("v_prediction", x0, noise, t_last, abar)
    np.testing.assert_allclose(schedules.predict_x0("v_prediction", v, x_last, t_last, abar), x0, atol=1e-5)


def test_min_snr_weights_follow_the_paper_formula():
    snr = jnp.array([0.0, 0.5, 5.0, 50.0])
    np.testing.assert_allclose(loss.min_snr_weight(snr, 5.0, "epsilon"), [0.0, 1.0, 1.0, 0.1], rtol=1e-6)
    np.testing.assert_allclose(
        loss.min_snr_weight(snr, 5.0, "v_prediction"), [0.0, 0.5 / 1.5, 5 / 6, 5 / 51], rtol=1e-6
    )
    np.testing.assert_array_equal(loss.min_snr_weight(snr, None, "epsilon"), np.ones(4))


def test_offset_noise_shifts_each_sample_and_channel_as_one():
    key = jax.random.key(0)
    plain = loss.offset_noise(key, (4, 3, 8, 8, 4), 0.0)
    shifted = loss.offset_noise(key, (4, 3, 8, 8, 4), 0.5)
    delta = np.asarray(shifted - plain)
    assert np.abs(delta).max() > 0.05
    np.testing.assert_allclose(delta, np.broadcast_to(delta[:, :1, :1, :1], delta.shape), atol=1e-6)
    assert not np.allclose(delta[0, 0, 0, 0], delta[1, 0, 0, 0])  # samples and channels differ


def test_frame_noise_shares_the_asked_part_of_each_frames_variance():
    """Each frame N(0, 1); frames of one clip correlate by `shared`, clips of a batch not at all; 0 is a plain
    normal draw (the noise of every model before the option)."""
    key, shape = jax.random.key(0), (2, 4, 32, 32, 4)
    np.testing.assert_array_equal(loss.frame_noise(key, shape, 0.0), jax.random.normal(key, shape))
    noise = np.asarray(loss.frame_noise(key, shape, 0.8)).reshape(2, 4, -1)
    np.testing.assert_allclose(noise.std(-1), 1.0, atol=0.05)
    corr = np.corrcoef(noise.reshape(8, -1))
    same_clip = [corr[b * 4 + i, b * 4 + j] for b in range(2) for i in range(4) for j in range(i + 1, 4)]
    np.testing.assert_allclose(same_clip, 0.8, atol=0.03)
    assert np.abs(corr[:4, 4:]).max() < 0.05
    frames = np.asarray(loss.frame_noise(key, shape, 1.0))
    np.testing.assert_array_equal(frames[:, 1:], np.broadcast_to(frames[:, :1], frames[:, 1:].shape))
    with pytest.raises(ValueError, match=r"noise_shared must be in \[0, 1\], got -0.1"):
        loss.frame_noise(key, shape, -0.1)


def test_frame_noise_of_two_clips_with_one_common_key_shares_the_common_part():
    """Sampling's clips of one video: their own keys and the video's common key; frames of different clips then
    correlate by `shared` too, and without the common key not at all."""
    shape, common = (1, 4, 32, 32, 4), jax.random.key(9)
    first, second = (loss.frame_noise(jax.random.key(k), shape, 0.8, common) for k in (1, 2))
    across = np.corrcoef(np.asarray(first).reshape(4, -1), np.asarray(second).reshape(4, -1))[:4, 4:]
    np.testing.assert_allclose(across, 0.8, atol=0.04)
    alone = np.asarray(loss.frame_noise(jax.random.key(2), shape, 0.8)).reshape(4, -1)
    assert np.abs(np.corrcoef(np.asarray(first).reshape(4, -1), alone)[:4, 4:]).max() < 0.05


def test_training_noise_is_the_frame_noise_plus_the_offset():
    """The training draw at a share: frames of a clip correlate by it; share 0 is the draw before the option (so
    runs made before it resume with the same noise)."""
    key, shape = jax.random.key(1), (2, 4, 16, 16, 4)
    k_noise = jax.random.split(key)[0]
    np.testing.assert_array_equal(loss.offset_noise(key, shape, 0.0), jax.random.normal(k_noise, shape))
    np.testing.assert_array_equal(loss.offset_noise(key, shape, 0.0, 0.5), loss.frame_noise(k_noise, shape, 0.5))
    shared = np.asarray(loss.offset_noise(key, shape, 0.05, 0.9)).reshape(8, -1)
    assert np.corrcoef(shared)[0, 1:4].min() > 0.85


def test_objective_takes_the_noise_share_from_the_config_and_refuses_one_out_of_range():
    config = micro_config(0)
    assert Objective.from_config(config).noise_shared == 0.0
    config.loss.noise_shared = 0.8
    assert Objective.from_config(config).noise_shared == 0.8
    config.loss.noise_shared = 2.0
    with pytest.raises(ValueError, match=r"loss.noise_shared must be in \[0, 1\], got 2.0"):
        Objective.from_config(config)


def test_training_inputs_noise_a_clip_with_the_configs_noise_share():
    """What the trainer's step draws: at loss.noise_shared 0.9 the noise of a clip's frames correlates by ~0.9."""
    config = micro_config(0)
    config.loss.update(noise_shared=0.9, offset_noise=0.0)
    batch = {k: jnp.asarray(v) for k, v in example_batch(config).items()}
    _, truth = training_inputs(
        build_vae(config, 0), batch, jax.random.key(0), Objective.from_config(config), Dropout(), MotionAugment()
    )
    noise = np.asarray(truth["noise"])  # [B, F, h, w, C]
    per_frame = noise.reshape(noise.shape[0] * noise.shape[1], -1)
    same_clip = np.corrcoef(per_frame)[0, 1 : noise.shape[1]]
    np.testing.assert_allclose(same_clip, 0.9, atol=0.05)


def test_denoising_loss_is_the_weighted_mse_of_the_right_target():
    abar = schedules.alphas_cumprod()
    rng = np.random.default_rng(2)
    x0, noise, pred = (jnp.asarray(a) for a in rng.standard_normal((3, 2, 2, 4, 4, 4), dtype=np.float32))
    t = jnp.array([100, 800])
    total, mse = loss.denoising_loss(pred, x0, noise, t, abar, prediction_type="v_prediction", snr_gamma=5.0)
    v = schedules.velocity(x0, noise, t, abar)
    expected_mse = np.mean((np.asarray(pred) - np.asarray(v)) ** 2, axis=(1, 2, 3, 4))
    np.testing.assert_allclose(mse, expected_mse, rtol=1e-5)
    weights = loss.min_snr_weight(schedules.snr(abar, t), 5.0, "v_prediction")
    np.testing.assert_allclose(total, np.mean(weights * expected_mse), rtol=1e-5)


def test_region_weights_weigh_the_mouth_and_normalise():
    mask = np.zeros((2, 8, 8, 1), np.uint8)
    mask[0, 4:8, 2:6] = 1  # sample 0: a 4x4 pixel region = latent pixels (2..3, 1..2) at /2, fully inside
    weights = loss.region_weights(jnp.asarray(mask), (4, 4), 9.0)
    assert weights.shape == (2, 1, 4, 4, 1)
    np.testing.assert_array_equal(np.asarray(weights)[0, 0, 2:4, 1:3, 0], 10.0)
    assert float(weights[0].sum()) == 16 + 4 * 9 and float(weights[1].min()) == float(weights[1].max()) == 1.0
    rng = np.random.default_rng(3)
    pred, target = (jnp.asarray(a) for a in rng.standard_normal((2, 2, 3, 4, 4, 4), dtype=np.float32))
    err = (np.asarray(pred) - np.asarray(target)) ** 2
    w = np.broadcast_to(np.asarray(weights), err.shape)
    np.testing.assert_allclose(
        loss.per_sample_mse(pred, target, weights), (w * err).sum((1, 2, 3, 4)) / w.sum((1, 2, 3, 4)), rtol=1e-6
    )
    np.testing.assert_allclose(loss.per_sample_mse(pred, target, weights)[1], loss.per_sample_mse(pred, target)[1])


@pytest.mark.parametrize(
    "prediction_type, to_x0", [("epsilon", lambda snr: snr), ("v_prediction", lambda snr: snr + 1)]
)
def test_snr_floor_keeps_the_clean_sample_weight_at_high_noise(prediction_type, to_x0):
    # The loss on the model's target is the clean sample's error times to_x0(snr); min-SNR makes that product
    # min(snr, gamma), which the floor keeps from vanishing where snr is small.
    snr = jnp.array([0.005, 0.05, 1.0, 20.0])
    for floor, expected in ((0.0, [0.005, 0.05, 1.0, 5.0]), (0.1, [0.1, 0.1, 1.0, 5.0])):
        weight = loss.min_snr_weight(snr, 5.0, prediction_type, floor)
        np.testing.assert_allclose(weight * to_x0(snr), expected, rtol=1e-6)
