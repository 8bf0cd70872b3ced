"""The Colab notebook runs top to bottom on CPU with the bundled demo model."""

import json
from pathlib import Path

import pytest
from peers import require

NOTEBOOK = Path(__file__).parent.parent / "colab" / "sample.ipynb"


@pytest.mark.slow
def test_the_notebook_runs_top_to_bottom_and_shows_the_video(tmp_path, monkeypatch):
    nbformat = require("nbformat")
    nbclient = require("nbclient")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.setenv("EMO_JAX_STEPS", "2")  # the parameters cell reads it: a short run
    client = nbclient.NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError naming the cell if any cell fails
    assert (tmp_path / "talking.mp4").is_file() and (tmp_path / "talking.png").is_file()
    shown = json.dumps([cell.get("outputs", []) for cell in notebook.cells])
    assert "<video" in shown and "image/png" in shown
    assert "MARKED as AI-generated" in shown and "invisible watermark: found" in shown
