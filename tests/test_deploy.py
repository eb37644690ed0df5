"""--measure-deploy: every complete trial's float32 TFLite size and latency, measured on the
kept weights' inference model, through the real command line on real photos."""

from __future__ import annotations

import pytest
from conftest import error_lines, run_cli

from search.store import RunStore


@pytest.fixture(scope="module")
def measured(tiny_folder, tmp_path_factory):
    runs = tmp_path_factory.mktemp("deploy")
    argv = ["--space", "augment", "--data", str(tiny_folder), "--max-trials", "2"]
    argv += ["--epochs", "1", "--image-size", "32", "--runs-dir", str(runs), "--name", "d"]
    result = run_cli(*argv, "--measure-deploy")
    assert result.returncode == 0, error_lines(result)[-5:]
    return RunStore(runs / "d")


def test_every_complete_trial_has_its_size_and_latency(measured):
    trials = measured.trials()
    assert list(trials["status"]) == ["complete", "complete"]
    assert (trials["tflite_kb"] > 0).all() and (trials["latency_ms"] > 0).all()
    assert (trials["latency_iqr_ms"] >= 0).all() and (trials["deploy_s"] > 0).all()
    assert trials["n_params"].nunique() == 1 or trials["tflite_kb"].nunique() == 2, (
        "a model of another size converts to a file of another size"
    )


def test_the_size_is_the_exported_files(measured, tmp_path):
    """The best trial's tflite_kb is the size of what `export --format tflite` writes: the
    same inference model (augmentation removed), converted the same way."""
    output = tmp_path / "model.tflite"
    result = run_cli("export", str(measured.run_dir), "--format", "tflite", "--output", str(output))
    assert result.returncode == 0, error_lines(result)[-5:]
    best = measured.best_trial()
    assert best["tflite_kb"] == pytest.approx(output.stat().st_size / 1024, abs=0.1)
