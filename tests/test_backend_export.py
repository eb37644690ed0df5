"""Export per Keras backend, through the command line on the PyTorch-backend run (`torch_run`):
`export --format onnx` with TensorFlow unimportable, then `predict` on the .onnx file, gives the
run's own predictions; ONNX on TensorFlow (tf2onnx) and JAX (a PyTorch child process) too; the
run's .keras predicts the same on TensorFlow and JAX; TFLite and SavedModel through the
TensorFlow child process where TensorFlow is installed, refused in one line where it is not;
`--measure-deploy` without TensorFlow measures the ONNX file in onnxruntime and says so."""

from __future__ import annotations

import json
import re
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import cli_env, error_lines, no_tensorflow_env, run_cli

from search.data import decode_image
from search.errors import UsageError
from search.export import export_best
from search.onnx_model import onnx_session, run
from search.predict import predict_files, predict_target

pytestmark = pytest.mark.backends

SENTENCE = re.compile(r"(.+): This image is (\d+\.\d\d)% cats and (\d+\.\d\d)% dogs\.")


def torch_env() -> dict[str, str]:
    return no_tensorflow_env(KERAS_BACKEND="torch")


def stored_test_predictions(run_dir: Path) -> tuple[list[str], np.ndarray]:
    """The run's test files and its best model's stored P(dogs) for each, as the search
    predicted them on PyTorch."""
    files = json.loads((run_dir / "predictions" / "test-images.json").read_text())["files"]
    best = json.loads((run_dir / "best_hparams.json").read_text())["trial_id"]
    return files, np.load(run_dir / "predictions" / f"test-trial-{best}.npy")


def predicted_dogs(result) -> tuple[list[str], np.ndarray]:
    """The files and the P(dogs) in percent that `predict` printed, one sentence a line."""
    assert result.returncode == 0, error_lines(result)
    assert error_lines(result) == [], "nothing but the sentences on the terminal"
    matches = [SENTENCE.fullmatch(line) for line in result.stdout.splitlines()]
    assert all(matches), result.stdout
    return [m[1] for m in matches], np.array([float(m[3]) for m in matches])


def decoded(files: list[str]) -> np.ndarray:
    """The files as training decoded them, as float32 pixels."""
    return np.stack([decode_image(Path(f), 32) for f in files]).astype(np.float32)


def onnx_dogs(path: Path, files: list[str]) -> np.ndarray:
    """P(dogs) of the ONNX file in onnxruntime."""
    return run(onnx_session(model_path=path), decoded(files))[:, 0]


@pytest.fixture(scope="module")
def torch_onnx(torch_run: Path) -> Path:
    """`export --format onnx` of the PyTorch run, with TensorFlow unimportable."""
    result = run_cli("export", str(torch_run), "--format", "onnx", env=torch_env())
    assert result.returncode == 0, error_lines(result)
    assert error_lines(result) == [], "the exporter's tracing warnings stay off the terminal"
    output = torch_run / "export" / "model.onnx"
    assert result.stdout.strip() == str(output)
    return output


def test_onnx_export_without_tensorflow_predicts_like_the_trained_model(torch_run, torch_onnx):
    files, stored = stored_test_predictions(torch_run)
    np.testing.assert_allclose(onnx_dogs(torch_onnx, files), stored, atol=1e-5)
    labels = json.loads((torch_onnx.parent / "labels.json").read_text())
    assert labels == {"class_names": ["cats", "dogs"], "image_size": 32}
    assert "val" in (torch_onnx.parent / "MODEL_CARD.md").read_text()


def test_predict_on_the_onnx_file_gives_the_runs_own_predictions(torch_run, torch_onnx):
    files, stored = stored_test_predictions(torch_run)
    printed, dogs = predicted_dogs(run_cli("predict", str(torch_onnx), *files, env=torch_env()))
    assert printed == files
    np.testing.assert_allclose(dogs, stored * 100, rtol=0, atol=0.01)


def test_the_torch_runs_keras_file_predicts_the_same_on_tensorflow(torch_run):
    """This process's backend is TensorFlow: the run's best_model.keras, trained on PyTorch,
    loads here and predicts its test images as the search did."""
    assert keras.backend.backend() == "tensorflow"
    files, stored = stored_test_predictions(torch_run)
    model = keras.saving.load_model(torch_run / "best_model.keras", safe_mode=True)
    np.testing.assert_allclose(model.predict(decoded(files), verbose=0)[:, 0], stored, atol=1e-5)


def test_the_torch_runs_keras_file_predicts_the_same_on_jax(torch_run):
    """`predict RUNDIR` on JAX, in a process without TensorFlow, loads best_model.keras."""
    files, stored = stored_test_predictions(torch_run)
    env = no_tensorflow_env(KERAS_BACKEND="jax")
    printed, dogs = predicted_dogs(run_cli("predict", str(torch_run), *files, env=env))
    assert printed == files
    np.testing.assert_allclose(dogs, stored * 100, rtol=0, atol=0.01)


def test_onnx_export_on_tensorflow_goes_through_tf2onnx(torch_run, tmp_path):
    """In this TensorFlow-backend process: the export's own check passes and the file predicts
    the test images as the search did."""
    output = export_best(torch_run, "onnx", tmp_path / "model.onnx")
    files, stored = stored_test_predictions(torch_run)
    np.testing.assert_allclose(onnx_dogs(output, files), stored, atol=1e-5)


def test_onnx_export_on_jax_goes_through_a_pytorch_child_process(torch_run, tmp_path):
    """Keras's JAX exporter (jax2onnx) writes pooling nodes onnxruntime refuses; PyTorch's
    child process converts the .keras file instead, with no TensorFlow in either process."""
    output = tmp_path / "model.onnx"
    result = run_cli(
        *("export", str(torch_run), "--format", "onnx", "--keras-backend", "jax"),
        *("--output", str(output)),
        env=no_tensorflow_env(),
    )
    assert result.returncode == 0, error_lines(result)
    assert error_lines(result) == []
    files, stored = stored_test_predictions(torch_run)
    np.testing.assert_allclose(onnx_dogs(output, files), stored, atol=1e-5)


@pytest.mark.bad_input
def test_tflite_without_tensorflow_is_one_line(torch_run, tmp_path):
    """SavedModel is refused the same way (search.runtime.portable.convert_in_child)."""
    output = tmp_path / "export" / "model.tflite"
    result = run_cli(
        "export", str(torch_run), "--format", "tflite", "--output", str(output), env=torch_env()
    )
    assert result.returncode == 2
    assert error_lines(result) == [
        "run_search.py: error: a TFLite export needs TensorFlow, which is not installed: "
        "pip install tensorflow (or use KERAS_BACKEND=tensorflow)"
    ]
    assert not output.parent.exists() or not any(output.parent.iterdir()), "no card alone"


@pytest.mark.bad_input
def test_an_onnx_output_must_end_in_onnx(torch_run, tmp_path):
    output = tmp_path / "model.bin"
    with pytest.raises(UsageError, match=r"model\.bin: an ONNX model file must end in \.onnx$"):
        export_best(torch_run, "onnx", output)
    assert not output.exists()


@pytest.mark.bad_input
def test_a_file_that_is_no_onnx_model_is_one_line(torch_run, tmp_path):
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not a model")
    files, _ = stored_test_predictions(torch_run)
    with pytest.raises(UsageError, match=r"model\.onnx: onnxruntime cannot load it \(\w+: .+\)$"):
        predict_target(broken, files[:1], ["cats", "dogs"])


def test_tflite_on_torch_converts_through_tensorflow_and_predicts_like_the_run(torch_run, tmp_path):
    """The run's PyTorch backend with TensorFlow installed: the .keras file is converted by a
    TensorFlow child process, and `predict` runs the TFLite file as it runs the run."""
    output = tmp_path / "model.tflite"
    result = run_cli(
        *("export", str(torch_run), "--format", "tflite", "--output", str(output)),
        env=cli_env() | {"KERAS_BACKEND": "torch"},
    )
    assert result.returncode == 0, error_lines(result)
    assert error_lines(result) == []
    files, stored = stored_test_predictions(torch_run)
    predicted = predict_files(output, files, ["cats", "dogs"])
    dogs = [p["probabilities"]["dogs"] for p in predicted]
    np.testing.assert_allclose(dogs, stored, atol=1e-5)


def test_measure_deploy_without_tensorflow_measures_the_onnx_file(tiny_folder, tmp_path):
    """A one-trial PyTorch search with TensorFlow unimportable: its trial is measured as ONNX
    in onnxruntime (float32 weights make the file about 4 bytes a parameter), trials.csv says
    so, and the report's trade-off note names the file and the runtime."""
    result = run_cli(
        *("--space", "scratch", "--data", str(tiny_folder), "--image-size", "32"),
        *("--epochs", "1", "--max-trials", "1", "--batch-size", "16", "--measure-deploy"),
        *("--runs-dir", str(tmp_path), "--name", "deploy"),
        env=torch_env(),
    )
    assert result.returncode == 0, error_lines(result)
    (trial,) = pd.read_csv(tmp_path / "deploy" / "trials.csv").to_dict("records")
    assert trial["status"] == "complete" and pd.isna(trial.get("deploy_error"))
    assert trial["deploy_format"] == "onnx"
    assert trial["tflite_kb"] * 1024 == pytest.approx(trial["n_params"] * 4, rel=0.1)
    assert 0 < trial["latency_ms"] < 1000 and trial["latency_iqr_ms"] >= 0
    announced = f"{trial['latency_ms']:.2f}ms {trial['tflite_kb']:.0f}KB"
    assert announced in result.stdout + result.stderr, "the trial's line shows its figures"
    report = (tmp_path / "deploy" / "report.html").read_text()
    assert "the float32 ONNX file's size and its median latency with onnxruntime" in report
    # Resumed where TensorFlow is installed, it would time TFLite files: refused, one line.
    before = (tmp_path / "deploy" / "run.json").read_bytes()
    resumed = run_cli(
        *("--resume", "--name", "deploy", "--runs-dir", str(tmp_path), "--max-trials", "2"),
        env=cli_env() | {"KERAS_BACKEND": "torch"},
    )
    assert resumed.returncode == 2 and "Traceback" not in resumed.stderr
    assert error_lines(resumed) == [
        f"run_search.py: error: {tmp_path / 'deploy'} measured its trials as onnx and would now "
        "measure tflite (TensorFlow is installed here): resume it where it started, or pick "
        "another --name"
    ]
    assert (tmp_path / "deploy" / "run.json").read_bytes() == before
