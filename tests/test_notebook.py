"""docs/quickstart.ipynb, run by a real Jupyter kernel: a user's own model searched from a
notebook through `search.run`, on real photos at 32 px."""

from __future__ import annotations

from pathlib import Path

import nbformat
from conftest import KERAS_HOME
from nbclient import NotebookClient

from search.store import RunStore

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "quickstart.ipynb"


def test_the_quickstart_notebook_searches_a_user_model(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("QUICKSTART_DATA", str(tiny_folder))
    monkeypatch.setenv("QUICKSTART_RUNS", str(tmp_path))
    monkeypatch.setenv("KERAS_HOME", str(KERAS_HOME))  # the kernel inherits this environment
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3").execute(cwd=str(tmp_path))
    outputs = [
        output.get("text", "") + str(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    ]
    [report] = [
        line for text in outputs for line in text.splitlines() if line.startswith("report:")
    ]
    path = Path(report.removeprefix("report:").strip())
    assert path.exists() and path.name == "report.html"
    store = RunStore(path.parent)
    trials = store.trials()
    assert len(trials) == 3 and set(trials["status"]) == {"complete"}
    assert {"hp_filters", "hp_dropout", "hp_learning_rate"} <= set(trials.columns)
    assert store.read_run_info()["space"] == "python:build_model", "defined in the notebook"
