"""Sampling: the guided denoising loop, clip chaining, the MP4 it writes, and every bad input it refuses."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile
from PIL import Image
from tiny import micro_config

from emo_jax.audio import load_audio
from emo_jax.build import build_emo, build_vae
from emo_jax.data.synthetic import write_example_inputs
from emo_jax.data.video import Mp4Writer, VideoError, probe, read_frames, read_tags, write_mp4
from emo_jax.diffusion import guidance, samplers
from emo_jax.diffusion.loss import frame_noise
from emo_jax.provenance.credentials import read_credentials, weights_digest
from emo_jax.provenance.metadata import NOTICE
from emo_jax.sample import Bundle, SamplingSettings, VideoSampler, head_speed, sample_video
from emo_jax.sample.generate import video_noise_key
from emo_jax.sample.inputs import InputError, check_output, load_reference, load_track, read_image


@pytest.fixture(scope="module")
def micro_bundle():
    config = micro_config(0)
    return Bundle(config, build_emo(config, 0), build_vae(config, 1), "micro")


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The bundled example's face (with its sidecar box) and 1.3 s of held-out speech."""
    folder = tmp_path_factory.mktemp("example")
    paths = write_example_inputs(folder, seconds=1.3)
    return paths["image"], paths["audio"]


def test_guidance_is_the_formula_with_only_the_needed_branches():
    rng = np.random.default_rng(0)
    full, ref_only, none = rng.standard_normal((3, 5))
    for audio, reference in [(3.5, 3.5), (3.5, 1.0), (2.0, 4.0), (1.0, 1.0)]:
        outputs = {(1, 1): full, (1, 0): ref_only, (0, 0): none}
        branches = guidance.branches(audio, reference)
        guided = guidance.combine(jnp.stack([outputs[(r, a)] for r, a, _ in branches]), branches)[0]
        expected = none + reference * (ref_only - none) + audio * (full - ref_only)
        np.testing.assert_allclose(guided, expected, rtol=1e-5, atol=1e-5)
    assert [b[:2] for b in guidance.branches(3.5, 3.5)] == [(1, 1), (0, 0)]  # Hallo: drop every condition
    assert [b[:2] for b in guidance.branches(3.5, 1.0)] == [(1, 1), (1, 0)]  # EchoMimic: keep the reference
    assert guidance.branches(1.0, 1.0) == [(1, 1, 1.0)]


def test_head_speed_names_and_values(micro_bundle):
    centres = sorted(micro_bundle.config.model.speed.centres)
    assert head_speed("slow", micro_bundle.config) == centres[1]
    assert head_speed("normal", micro_bundle.config) == centres[len(centres) // 2]
    assert head_speed("0.7", micro_bundle.config) == 0.7
    with pytest.raises(ValueError, match="speed must be one of"):
        head_speed("quick", micro_bundle.config)


@pytest.mark.parametrize("noise_shared", [0.0, 0.7])
def test_jitted_loop_equals_a_step_by_step_guided_loop(micro_bundle, noise_shared):
    """The one-call fori_loop (branches batched) against separate backbone calls per branch and step, from the
    start noise `frame_noise` makes with the settings' noise_shared (its shared part from the video's key)."""
    config, model = micro_bundle.config, micro_bundle.model
    settings = SamplingSettings(
        steps=3, guidance_audio=2.5, guidance_reference=1.5, sampler="dpm++", noise_shared=noise_shared
    )
    sampler = VideoSampler(model, micro_bundle.vae, config, settings)
    rng = np.random.default_rng(0)
    f, size = config.data.num_frames, config.data.size
    reference = model.encode_reference(jnp.asarray(rng.standard_normal((1, size, size, 4)), jnp.float32))
    motion = model.encode_motion(jnp.asarray(rng.standard_normal((1, 2, size, size, 4)), jnp.float32), jnp.ones(1))
    mask = jnp.zeros((1, size, size, 1)).at[:, 4:12, 4:12].set(1.0)
    audio = jnp.asarray(rng.standard_normal((1, f, 5, 1, 80)), jnp.float32)
    speed = jnp.full((1, f), 0.5)
    key, common = jax.random.key(3), video_noise_key(jax.random.key(7))
    ours = sampler._denoise(sampler._state, reference, None, motion, mask, audio, speed, key, common)

    table = settings.table(config).arrays()
    x = frame_noise(jax.random.split(key)[0], (1, f, size, size, 4), noise_shared, jax.random.split(common)[0])
    x0_prev = jnp.zeros_like(x)
    for i in range(3):
        t = table["timesteps"][i][None]
        guided = 0.0
        for ref_keep, audio_keep, weight in guidance.branches(2.5, 1.5):
            keep = dict(reference_keep=jnp.full((1,), ref_keep), audio_keep=jnp.full((1,), audio_keep))
            out = model.denoise(
                x, t, reference, face_mask=mask, motion=motion, audio_features=audio, speed=speed, **keep
            )
            guided = guided + weight * out
        x, x0_prev = samplers.step(table, i, config.model.prediction_type, guided, x, x0_prev)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(x), atol=2e-4, rtol=1e-4)


def test_sampling_settings_take_the_trained_noise_share_unless_the_sample_section_sets_one():
    config = micro_config(1)  # the stage configs' sample sections leave the share unset; the tiny one sets 0.8
    assert "noise_shared" not in config.sample and micro_config(0).sample.noise_shared == 0.8
    config.loss.noise_shared = 0.6
    assert SamplingSettings.from_config(config).noise_shared == 0.6
    config.sample.noise_shared = 0.2
    assert SamplingSettings.from_config(config).noise_shared == 0.2
    assert SamplingSettings.from_config(config, noise_shared=0.0).noise_shared == 0.0
    with pytest.raises(ValueError, match=r"noise_shared must be in \[0, 1\], got 1.5"):
        SamplingSettings(noise_shared=1.5)


def test_through_vae_is_the_vae_round_trip_in_chunks(micro_bundle):
    """10 frames in chunks of 4 give the frames of one call on all 10 (to uint8 rounding)."""
    config = micro_bundle.config
    frames = np.random.default_rng(0).integers(0, 256, (10, config.data.size, config.data.size, 3), np.uint8)
    chunked = VideoSampler(micro_bundle.model, micro_bundle.vae, config, SamplingSettings(decode_chunk=4))
    whole = VideoSampler(micro_bundle.model, micro_bundle.vae, config, SamplingSettings(decode_chunk=10))
    ours = chunked.through_vae(frames)
    assert ours.shape == frames.shape and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - whole.through_vae(frames).astype(int)).max() <= 1


def test_video_has_the_audio_length_the_audio_and_a_strip(micro_bundle, example, tmp_path):
    image, audio = example
    out = tmp_path / "talk.mp4"
    result = sample_video(micro_bundle, image, audio, out, SamplingSettings(steps=2), progress=False)
    fps = micro_bundle.config.data.fps
    assert result.frames == round(1.3 * fps) == 32 and result.clips == 8
    assert abs(probe(out).duration - 1.3) <= 1 / fps + 0.03
    assert abs(load_audio(out).size / 16000 - 1.3) < 0.05  # the input audio, muxed in
    frames = list(read_frames(out, fps))
    assert len(frames) == result.frames and frames[0].shape == (16, 16, 3)
    strip = np.asarray(Image.open(result.strip))
    assert strip.shape == (16, 16 * 9, 3)  # the reference and 8 frames
    assert Image.open(result.strip).text["Comment"] == NOTICE
    assert not list(tmp_path.glob(".*partial*"))
    tags = read_tags(out)
    assert tags["comment"] == tags["description"] == NOTICE and "AI-generated" in NOTICE
    signed = read_credentials(out)
    assert signed.status == "valid" and signed.says_generated
    assert signed.model_weights == weights_digest(micro_bundle.model)
    assert read_credentials(result.strip).model_weights == signed.model_weights


def test_without_provenance_the_video_carries_no_mark(micro_bundle, example, tmp_path):
    out = tmp_path / "research.mp4"
    sample_video(micro_bundle, *example, out, SamplingSettings(steps=1), progress=False, provenance=False)
    assert "comment" not in read_tags(out) and read_credentials(out).status == "none"
    assert read_credentials(out.with_suffix(".png")).status == "none"
    assert "Comment" not in Image.open(out.with_suffix(".png")).text


def test_container_tags_read_back_as_written(tmp_path):
    tags = {"comment": "a=b; #c \\ d\nsecond line", "title": "plain"}  # every character ffmetadata escapes
    with Mp4Writer(tmp_path / "tagged.mp4", 25.0, tags=tags) as writer:
        writer.write(np.zeros((16, 16, 3), np.uint8))
    read = read_tags(tmp_path / "tagged.mp4")
    assert {k: read.get(k) for k in tags} == tags
    (tmp_path / "plain.txt").write_text("not a video")
    with pytest.raises(VideoError, match="plain.txt: ffmpeg cannot read it"):
        read_tags(tmp_path / "plain.txt")


def test_clips_chain_and_the_loop_compiles_once(micro_bundle, example):
    config = micro_bundle.config
    sampler = VideoSampler(micro_bundle.model, micro_bundle.vae, config, SamplingSettings(steps=2))
    reference = load_reference(example[0], config.data.size)
    mask = np.ones((16, 16, 1), np.float32)
    features = np.random.default_rng(0).standard_normal((12, 5, 1, 80)).astype(np.float32)
    seen = []
    frames = list(sampler.frames(reference.image, mask, features, 0.5, 10, on_clip=seen.append))
    assert len(frames) == 10 and seen == [0, 1, 2]
    assert sampler._denoise._cache_size() == 1 and sampler._motion._cache_size() == 1
    again = list(sampler.frames(reference.image, mask, features, 0.5, 10))
    np.testing.assert_array_equal(np.stack(frames), np.stack(again))  # deterministic from the seed


def test_ctrl_c_leaves_no_file_at_the_output(micro_bundle, example, tmp_path, monkeypatch):
    def interrupted(self, *args, **kwargs):
        yield np.zeros((16, 16, 3), np.uint8)
        raise KeyboardInterrupt

    monkeypatch.setattr(VideoSampler, "frames", interrupted)
    out = tmp_path / "talk.mp4"
    with pytest.raises(KeyboardInterrupt):
        sample_video(micro_bundle, *example, out, SamplingSettings(steps=1), progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "I;16", "P"])
def test_every_image_mode_reads_as_rgb(tmp_path, mode):
    rgb = np.asarray(Image.fromarray((np.arange(64 * 64 * 3) % 251).astype(np.uint8).reshape(64, 64, 3)))
    if mode == "I;16":
        image = Image.fromarray((rgb[..., 0].astype(np.uint16) * 257))
    else:
        image = Image.fromarray(rgb).convert(mode)
    path = tmp_path / "x.png"
    image.save(path)
    out = read_image(path)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    if mode == "I;16":
        np.testing.assert_array_equal(out[..., 1], rgb[..., 0])  # 16-bit scaled down, not clipped


def test_bad_images_are_named(tmp_path, monkeypatch):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 200), (120, 120, 120)).save(blank)
    with pytest.raises(InputError, match="blank.png: no face found"):
        load_reference(blank, 64)
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 50)).save(small)
    with pytest.raises(InputError, match="small.png: 40x50 is too small"):
        load_reference(small, 64)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(InputError, match="notes.png: not a readable image"):
        read_image(text)
    with pytest.raises(InputError, match="no such image"):
        read_image(tmp_path / "missing.png")
    import emo_jax.sample.inputs as inputs

    monkeypatch.setattr(inputs, "MAX_IMAGE_PIXELS", 30_000)
    with pytest.raises(InputError, match="blank.png: 200x200 is too large"):
        read_image(blank)
    monkeypatch.undo()
    bad_sidecar = tmp_path / "face.png"
    Image.new("RGB", (200, 200)).save(bad_sidecar)
    (tmp_path / "face.json").write_text(json.dumps({"box": [1, 2]}))
    with pytest.raises(InputError, match="face.json: a sidecar must hold"):
        load_reference(bad_sidecar, 64)


def test_a_real_photo_is_found_and_cropped_as_training_crops():
    from skimage import data

    from emo_jax.data.preprocess import PreprocessConfig, crop_square
    from emo_jax.sample.inputs import find_face

    photo = data.astronaut()
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "astronaut.png"
        Image.fromarray(photo).save(path)
        reference = load_reference(path, 128)
        box = find_face(photo, path)
    assert reference.image.shape == (128, 128, 3)
    assert reference.source_crop == crop_square(box[None], PreprocessConfig.margin, 512, 512)
    x0, y0, x1, y1 = reference.box  # the face sits in the middle half of the crop, as in training clips
    assert 20 < x0 < x1 < 108 and 20 < y0 < y1 < 108


def test_bad_audio_is_named(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty.wav: empty file"):
        load_track(empty)
    text = tmp_path / "speech.mp3"
    text.write_text("not audio at all")
    with pytest.raises(InputError, match="speech.mp3: not a readable audio file"):
        load_track(text)
    silent_video = write_mp4(tmp_path / "silent.mp4", np.zeros((5, 16, 16, 3), np.uint8), 25.0)
    with pytest.raises(InputError, match="silent.mp4: has no audio stream"):
        load_track(silent_video)
    with pytest.raises(InputError, match="no such audio file"):
        load_track(tmp_path / "missing.wav")
    blip = tmp_path / "blip.wav"
    soundfile.write(blip, np.zeros(100, np.float32), 16000)
    with pytest.raises(InputError, match="shorter than one frame"):
        load_track(blip)


def test_silent_audio_works_and_warns(tmp_path, caplog):
    quiet = tmp_path / "quiet.wav"
    soundfile.write(quiet, np.zeros(16000, np.float32), 16000)
    assert load_track(quiet).size == 16000
    assert "silent" in caplog.text


def test_bad_output_paths_are_named(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        check_output(tmp_path / "no" / "such" / "out.mp4")
    with pytest.raises(InputError, match="must be an .mp4"):
        check_output(tmp_path / "out.avi")
    assert check_output(tmp_path / "out.mp4") == tmp_path / "out.mp4"


def test_of_several_faces_the_largest_is_taken_with_a_warning(tmp_path, caplog):
    from emo_jax.data.synthetic import REST_STATE, Identity, render_frame
    from emo_jax.sample.inputs import find_face

    big = render_frame(Identity.sample(1), 320, REST_STATE)
    small = np.full((320, 320, 3), 255, np.uint8)
    small[80:240, 80:240] = render_frame(Identity.sample(2), 160, REST_STATE)
    path = tmp_path / "two.png"
    box = find_face(np.concatenate([small, big], axis=1), path)
    assert "2 faces found; using the largest" in caplog.text
    assert box[0] > 320 and box[2] - box[0] > 100  # the big face, on the right


@pytest.mark.slow
def test_a_training_run_samples_the_same_as_its_exported_bundle(logmel_dataset_dir, example, tmp_path):
    from emo_jax.sample import export_bundle, load_bundle
    from emo_jax.train.trainer import train

    config = micro_config(0, data_dir=str(logmel_dataset_dir))
    config.train.update(steps=2, checkpoint_every=2)
    train(config, tmp_path / "run", progress=False)
    bundle = export_bundle(tmp_path / "run", tmp_path / "bundle")
    exported = json.loads((bundle / "config.json").read_text())
    assert exported["data"]["data_dir"] == "" and "step 2 (EMA)" in exported["exported_from"]
    from_run, from_bundle = load_bundle(tmp_path / "run"), load_bundle(bundle)
    assert "(EMA)" in from_run.source
    settings = SamplingSettings(steps=2)
    videos = []
    for loaded, name in ((from_run, "run.mp4"), (from_bundle, "bundle.mp4")):
        sample_video(loaded, *example, tmp_path / name, settings, progress=False)
        videos.append(np.stack(list(read_frames(tmp_path / name, 25.0))))
    np.testing.assert_array_equal(videos[0], videos[1])


def test_image_to_image_starts_from_the_noised_reference(micro_bundle):
    """strength 0.05 of 20 DDIM steps: one step at t = 0, so the clip stays at the reference latent."""
    config = micro_bundle.config
    settings = SamplingSettings(sampler="ddim", steps=20, strength=0.05, guidance_audio=1.0, guidance_reference=1.0)
    sampler = VideoSampler(micro_bundle.model, micro_bundle.vae, config, settings)
    assert list(sampler.table.timesteps) == [0]
    rng = np.random.default_rng(0)
    ref_latent = jnp.asarray(rng.standard_normal((1, 16, 16, 4)), jnp.float32)
    reference = micro_bundle.model.encode_reference(ref_latent)
    mask = jnp.ones((1, 16, 16, 1))
    audio = jnp.zeros((1, config.data.num_frames, 5, 1, 80))
    speed = jnp.full((1, config.data.num_frames), 0.5)
    out = sampler._denoise(
        sampler._state, reference, ref_latent, None, mask, audio, speed, jax.random.key(0), jax.random.key(1)
    )
    assert float(jnp.abs(out - ref_latent[:, None]).mean()) < 0.1


def test_bf16_sampling_stores_kernels_in_bf16_and_makes_the_same_frames(monkeypatch):
    """Layers cast kernels to the compute dtype at use: stored in bf16 beforehand, the frames are the same and
    the compiled loop's weights take about half the memory."""
    from emo_jax.sample import generate

    config = micro_config(0)
    config.compute.dtype = "bfloat16"
    model, vae = build_emo(config, 0), build_vae(config, 1)
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (16, 16, 3), np.uint8)
    mask = np.ones((16, 16, 1), np.float32)
    audio = config.model.audio
    features = rng.standard_normal((config.data.num_frames, audio.seq_len, audio.blocks, audio.channels))
    speed = float(np.median(config.model.speed.centres))
    settings = SamplingSettings(steps=2)

    def run():
        sampler = VideoSampler(model, vae, config, settings)
        frames = np.stack(list(sampler.frames(reference, mask, features.astype(np.float32), speed, 4)))
        return frames, sampler.compile_loop(reference, mask, features, speed).memory_analysis()

    cast_frames, cast_memory = run()
    monkeypatch.setattr(generate, "kernels_in", lambda dtype, state: state)
    frames, memory = run()
    np.testing.assert_array_equal(cast_frames, frames)
    assert cast_memory.argument_size_in_bytes < 0.7 * memory.argument_size_in_bytes
