"""The CPU model: every EMO part at a size a 2-core CPU trains, on the synthetic talking-face corpus.

One run trains all of it from scratch at once (reference, audio, temporal and speed layers, face locator),
64 px frames, a 2-stage VAE (32x32 latents), 4 frames + 2 motion frames, log-mel audio. The tests build it with
a random VAE; the bundled demo model (emo_jax/assets/demo_model) was made with this config and a VAE trained
first on the same frames (on one H200, adding --config.data.batch_size=16 --config.data.worker_count=6
--config.optimizer.warmup_steps=200 --config.ema.decay=0.999 to the train command: 2,181 steps):

    emo-jax synth --out synth --videos 64 --seconds 8 --size 64
    emo-jax preprocess --videos synth --out prep --size 64 --workers 2
    emo-jax build-dataset --preprocessed prep --data-dir tfds --config logmel
    emo-jax train-vae --preprocessed prep --out vae --steps 1500 --batch-size 8 --learning-rate 1e-3
    emo-jax train --config configs/tiny.py --config.data.data_dir=tfds --config.data.report=prep/report.json \
        --config.vae.checkpoint=vae --config.vae.random=False --workdir run
    emo-jax export run --out demo_model
"""

import emo_base


def get_config(arg=None):
    del arg
    c = emo_base.base("tiny")
    c.stage = 0  # all stages at once
    # v-prediction on a zero-terminal-SNR schedule, the clean frames' error weighed at least 1 at every noise level
    # and the mouth 11x: the recipe under which the audio path learned the sound (README, The demo model).
    c.model = emo_base.model(
        "tiny", temporal=True, audio=True, speed=True, num_motion_frames=2, prediction_type="v_prediction"
    )
    c.schedule.rescale_betas_zero_snr = True
    c.loss.update(snr_floor=1.0, mouth_weight=10.0)
    c.trainable = [r"^reference_net\.", r"^backbone\.", r"^face_locator\.", r"^audio_projection\.", r"^speed_encoder\."]
    emo_base.cpu_data(c)
    c.data.fps = 25.0  # the synthetic corpus' rate
    c.optimizer.update(learning_rate=3e-4, warmup_steps=50)
    c.ema.decay = 0.995
    c.train.update(steps=1000, log_every=10, checkpoint_every=100, image_every=250, keep_checkpoints=2)
    # Audio guidance 7.5: sync 0.23 (GPU, 2 pairs x 2 s), 0.16 at 3.5, 0.11 at 12. Start noise 80% common to a
    # video's frames: sync 0.33 and jitter 0.97 against 0.22 and 1.33 at 0 (CPU, 4 pairs x 4 s; README).
    c.sample.update(sampler="dpm++", steps=20, guidance_audio=7.5, noise_shared=0.8)
    return c
