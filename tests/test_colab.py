"""The Colab notebook runs top to bottom on CPU with the bundled demo model."""

import json
import os
from pathlib import Path

import pytest
from peers import require

NOTEBOOK = Path(__file__).parent.parent / "colab" / "sample.ipynb"


def _run(tmp_path) -> str:
    """Runs the notebook in tmp_path (the parameters cell reads EMO_JAX_* from the environment) -> its outputs."""
    nbformat = require("nbformat")
    nbclient = require("nbclient")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError naming the cell if any cell fails
    assert (tmp_path / "talking.mp4").is_file() and (tmp_path / "talking.png").is_file()
    shown = json.dumps([cell.get("outputs", []) for cell in notebook.cells])
    assert "<video" in shown and "image/png" in shown
    assert "MARKED as AI-generated" in shown and "invisible watermark: found" in shown
    return shown


@pytest.mark.slow
def test_the_notebook_runs_top_to_bottom_and_shows_the_video(tmp_path, monkeypatch):
    monkeypatch.setenv("EMO_JAX_STEPS", "2")  # a short run
    _run(tmp_path)


@pytest.mark.slow
def test_the_notebooks_hallo_path_samples_with_a_converted_folder(tmp_path, monkeypatch):
    """HALLO = a pretrained_models folder with tiny random weights, CHECKPOINT = its converted bundle; mediapipe
    is tests/fakes/mediapipe on the kernel's path (no tiny model can stand in for its landmarker)."""
    for module in ("torch", "diffusers", "transformers", "onnx", "onnxruntime"):
        require(module)
    from hallo_folder import write_converted_folder

    folder, bundle = write_converted_folder(tmp_path)
    monkeypatch.setenv("EMO_JAX_HALLO", str(folder))
    monkeypatch.setenv("EMO_JAX_CHECKPOINT", str(bundle))
    fakes = str(Path(__file__).parent / "fakes")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [fakes, os.environ.get("PYTHONPATH")])))
    assert "hallo_converted" in _run(tmp_path)  # the model line names the bundle
