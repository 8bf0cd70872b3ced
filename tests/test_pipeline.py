import dataclasses
import io

import grain
import numpy as np
import pytest
from PIL import Image

from emo_jax.data.pipeline import PipelineConfig, SampleClip, data_source, face_mask, make_loader, mouth_boxes

VIDEO = PipelineConfig(num_frames=12, num_motion_frames=4, size=64, batch_size=2, worker_count=0)


def _record(dataset_dir, name):
    """The video's clip record (its one clip of 75 frames) as the TFDS source gives it."""
    source = data_source(str(dataset_dir))
    return next(record for record in (source[i] for i in range(len(source))) if record["video_id"] == name.encode())


def _decoded(record, size):
    return np.stack(
        [np.asarray(Image.open(io.BytesIO(j)).resize((size, size), Image.BICUBIC)) for j in record["frames"]]
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sample_clip_takes_a_clip_its_motion_frames_and_a_distant_reference(dataset_dir, seed):
    record = _record(dataset_dir, "talk_a")
    example = SampleClip(VIDEO).random_map(record, np.random.default_rng(seed))
    frames = _decoded(record, 64)
    matches = [s for s in range(4, 64) if np.array_equal(frames[s : s + 12], example["frames"])]
    assert len(matches) == 1
    start = matches[0]
    np.testing.assert_array_equal(example["motion_frames"], frames[start - 4 : start])
    reference = [i for i in range(75) if np.array_equal(frames[i], example["reference"])]
    assert all(i < start - 4 - 11 or i > start + 11 + 11 for i in reference)  # >= 12 frames from the window
    np.testing.assert_array_equal(example["speed"], record["speed"][start : start + 12])
    audio = np.pad(record["audio"], (2 * 640, 2 * 640))[start * 640 : (start + 16) * 640]
    np.testing.assert_array_equal(example["audio"], audio)  # frames start-2 .. start+14, zeros past the ends
    mask = face_mask(record["boxes"][start : start + 12] * 64 / 128, 64)
    np.testing.assert_array_equal(example["face_mask"], mask)
    assert 0.1 < example["face_mask"].mean() < 0.9


def test_mouth_mask_is_the_lower_middle_of_the_clips_face_boxes(dataset_dir):
    record = _record(dataset_dir, "talk_a")
    config = dataclasses.replace(VIDEO, mouth_mask=True)
    example = SampleClip(config).random_map(record, np.random.default_rng(0))
    frames = _decoded(record, 64)
    start = next(s for s in range(4, 64) if np.array_equal(frames[s : s + 12], example["frames"]))
    boxes = record["boxes"][start : start + 12] * 64 / 128
    np.testing.assert_array_equal(example["mouth_mask"], face_mask(mouth_boxes(boxes), 64))
    mouth, face = example["mouth_mask"][..., 0].astype(bool), example["face_mask"][..., 0].astype(bool)
    assert 0 < mouth.sum() < 0.4 * face.sum() and not (mouth & ~face).any()  # a part of the face region
    rows = np.flatnonzero(mouth.any(1))
    assert rows.min() >= boxes[:, 1].min() + 0.5 * (boxes[:, 3] - boxes[:, 1]).min()  # its lower part
    np.testing.assert_allclose(mouth_boxes(np.array([[10.0, 20, 30, 60]])), [[15, 44, 25, 60]])


def test_face_mask_is_the_union_of_boxes():
    mask = face_mask(np.array([[1, 1, 3, 2], [2, 0, 4, 1]], np.float32), 5)[..., 0]
    expected = np.zeros((5, 5), np.uint8)
    expected[1:2, 1:3] = 1
    expected[0:1, 2:4] = 1
    np.testing.assert_array_equal(mask, expected)


def test_stage_one_yields_single_frames(dataset_dir):
    record = _record(dataset_dir, "talk_b")
    config = PipelineConfig(num_frames=1, num_motion_frames=0, size=32, batch_size=1)
    example = SampleClip(config).random_map(record, np.random.default_rng(0))
    assert example["frames"].shape == (1, 32, 32, 3) and "motion_frames" not in example
    assert example["audio"].shape == (5 * 640,) and example["speed"].shape == (1,)


def test_stage_one_mask_covers_a_clip_length_window_around_the_frame(dataset_dir):
    """Stage 1 trains the face locator that stages 2-3 and sampling feed a 12-frame union: it sees one too."""
    record = _record(dataset_dir, "talk_b")
    config = PipelineConfig(num_frames=1, num_motion_frames=0, size=64, batch_size=1, mask_frames=12)
    frames = _decoded(record, 64)
    for seed in range(3):
        example = SampleClip(config).random_map(record, np.random.default_rng(seed))
        start = next(i for i in range(75) if np.array_equal(frames[i], example["frames"][0]))
        lo = min(max(start - 5, 0), 75 - 12)
        np.testing.assert_array_equal(example["face_mask"], face_mask(record["boxes"][lo : lo + 12] * 0.5, 64))
        assert example["face_mask"].sum() > face_mask(record["boxes"][start : start + 1] * 0.5, 64).sum()


def test_a_record_too_short_for_the_clip_is_a_clear_error(dataset_dir):
    record = _record(dataset_dir, "talk_b")
    record["frames"] = record["frames"][:16]
    with pytest.raises(ValueError, match="'talk_b'.*16 frames, the pipeline needs 17"):
        SampleClip(VIDEO).random_map(record, np.random.default_rng(0))


def test_loader_batches_and_resumes_mid_epoch_with_workers(dataset_dir):
    source = data_source(str(dataset_dir))
    config = PipelineConfig(num_frames=12, num_motion_frames=4, size=64, batch_size=2, worker_count=2)
    iterator = iter(make_loader(source, config))
    first = next(iterator)
    shapes = {k: (v.shape, v.dtype.name) for k, v in first.items()}
    assert shapes == {
        "frames": ((2, 12, 64, 64, 3), "uint8"),
        "motion_frames": ((2, 4, 64, 64, 3), "uint8"),
        "reference": ((2, 64, 64, 3), "uint8"),
        "face_mask": ((2, 64, 64, 1), "uint8"),
        "speed": ((2, 12), "float32"),
        "audio": ((2, 16 * 640), "float32"),
        "video_id": ((2,), first["video_id"].dtype.name),
        "frame": ((2,), "int32"),
    }
    assert set(first["video_id"]) <= {"talk_a", "talk_b", "talk_c", "astronaut"}
    for _ in range(2):  # past the 4-record epoch: the state must carry the epoch too
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(2)]
    del iterator

    resumed = iter(make_loader(source, config))
    resumed.set_state(state)
    for batch, want in zip([next(resumed) for _ in range(2)], expected):
        for key in want:
            np.testing.assert_array_equal(batch[key], want[key])
    del resumed

    # Same seed, same workers: the same stream from the start (grain batches within each worker, so a different
    # worker_count gives other batches).
    again = iter(make_loader(source, config))
    np.testing.assert_array_equal(next(again)["frames"], first["frames"])


def test_shards_split_the_records(dataset_dir):
    source = data_source(str(dataset_dir))
    seen = []
    for index in range(2):
        shard = grain.sharding.ShardOptions(shard_index=index, shard_count=2, drop_remainder=True)
        config = PipelineConfig(num_frames=12, num_motion_frames=4, size=32, batch_size=1, worker_count=0)
        iterator = iter(make_loader(source, config, shard_options=shard, num_epochs=1))
        seen.append([batch["speed"][0, 0] for batch in iterator])
    assert len(seen[0]) == len(seen[1]) == 2
    assert not set(seen[0]) & set(seen[1])


def test_unbuilt_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no emo_clips/samples dataset built there"):
        data_source(str(tmp_path))


def test_iterator_state_goes_into_an_orbax_checkpoint(dataset_dir, tmp_path):
    """The trainer keeps the data position beside the weights: grain's Orbax handler saves and restores it."""
    import orbax.checkpoint as ocp

    source = data_source(str(dataset_dir))
    config = PipelineConfig(num_frames=12, num_motion_frames=4, size=32, batch_size=2, worker_count=0)
    iterator = iter(make_loader(source, config))
    next(iterator)
    handlers = {"data": grain.checkpoint.CheckpointHandler()}
    with ocp.CheckpointManager(tmp_path / "checkpoints", item_handlers=handlers) as manager:
        manager.save(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
    expected = next(iterator)

    resumed = iter(make_loader(source, config))
    with ocp.CheckpointManager(tmp_path / "checkpoints", item_handlers=handlers) as manager:
        manager.restore(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(resumed)))
    batch = next(resumed)
    for key in expected:
        np.testing.assert_array_equal(batch[key], expected[key])
