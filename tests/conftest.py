import os
import tempfile

# Parity needs full fp32 matmuls (the default on CPU, not on GPU/TPU); set before JAX initialises.
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
# Sampling signs its videos with a local key made on first use in the user's config folder: tests make theirs
# in a temporary one (subprocesses inherit it).
os.environ["EMO_JAX_CONFIG_DIR"] = tempfile.mkdtemp(prefix="emo-jax-config-")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def preprocessed(tmp_path_factory):
    """The test corpus (tests/corpus.py) preprocessed at 128 px with 2 worker processes: (videos dir, out dir,
    report)."""
    from corpus import build_corpus

    from emo_jax.data.preprocess import PreprocessConfig, preprocess_folder

    root = tmp_path_factory.mktemp("corpus")
    videos = build_corpus(root)
    report = preprocess_folder(videos, root / "out", PreprocessConfig(size=128), workers=2, progress=False)
    return videos, root / "out", report


@pytest.fixture(scope="session")
def dataset_dir(preprocessed, tmp_path_factory):
    """The preprocessed corpus built as the `emo_clips/samples` TFDS dataset (array_record): its data_dir."""
    from emo_jax.data.tfds_builder import build_dataset

    data_dir = tmp_path_factory.mktemp("tfds")
    build_dataset(preprocessed[1], data_dir, config="samples")
    return data_dir


@pytest.fixture(scope="session")
def logmel_dataset_dir(preprocessed, tmp_path_factory):
    """The preprocessed corpus built as `emo_clips/logmel` (whole-video log-mel features): what training reads."""
    from emo_jax.data.tfds_builder import build_dataset

    data_dir = tmp_path_factory.mktemp("tfds_logmel")
    build_dataset(preprocessed[1], data_dir, config="logmel")
    return data_dir


@pytest.fixture
def bucket():
    """gs://bucket, in memory (tests/fake_gcs.py), emptied after the test."""
    import fake_gcs
    from etils import epath

    fake_gcs.register()
    yield epath.Path("gs://bucket")
    fake_gcs.clear()
