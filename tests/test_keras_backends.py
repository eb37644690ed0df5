"""The same search on the PyTorch and JAX backends of Keras, through the command line on real
tiny data: --keras-backend and KERAS_BACKEND, both search back ends, a user build_model(hp),
workers, the frozen-feature cache and the fine-tune stage, resume after SIGKILL, the report, and
a PyTorch search in a process where TensorFlow cannot be imported. Each run is a child process:
Keras fixes its backend when first imported, and this process's is TensorFlow."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import keras_tuner as kt
import numpy as np
import pandas as pd
import pytest
from conftest import REPO, cli_env, error_lines, no_tensorflow_env, run_cli
from test_crash_resume import between_epochs, check_invariants, mid_epoch

from search.errors import UsageError
from search.store import RunStore
from spaces import transfer
from spaces.context import DEFAULT_BACKBONE, SpaceContext

pytestmark = pytest.mark.backends

TINY = ("--image-size", "32", "--batch-size", "16")
USER_SPACE = """
import keras
from keras import layers


def build_model(hp):
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        layers.Rescaling(1 / 255),
        layers.Conv2D(hp.Choice("filters", [4, 8]), 3, activation="relu"),
        layers.GlobalAveragePooling2D(),
        layers.Dense(2, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
"""


def complete_trials(run: Path) -> pd.DataFrame:
    trials = RunStore(run).trials()
    return trials[trials["status"] == "complete"]


def the_one_error(result: subprocess.CompletedProcess) -> str:
    """The single line a refused command prints, with no traceback."""
    assert result.returncode == 2, result.stderr[-3000:]
    lines = error_lines(result)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[0]


def test_tensorflow_is_unimportable_where_the_tests_say_so():
    """The blocker the TensorFlow-free runs use works: else those runs prove nothing."""
    probe = "import importlib.util as u; print(u.find_spec('tensorflow')); import tensorflow"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=no_tensorflow_env()
    )
    assert result.stdout.strip() == "None"
    assert "ModuleNotFoundError: No module named 'tensorflow'" in result.stderr


def test_a_torch_search_runs_without_tensorflow(torch_run):
    """KERAS_BACKEND=torch, TensorFlow unimportable: two trials, the run and its report name the
    backend, and the best model reloads here, on TensorFlow."""
    trials = complete_trials(torch_run)
    assert len(trials) == 2
    info = json.loads((torch_run / "run.json").read_text())
    assert info["keras_backend"] == "torch"
    assert info["keras_backend_version"].startswith("2.")
    page = (torch_run / "report.html").read_text()
    assert f'id="keras-backend">torch {info["keras_backend_version"]}<' in page
    model = keras.saving.load_model(torch_run / "best_model.keras")
    assert model.predict(np.zeros((1, 32, 32, 3), "float32"), verbose=0).shape == (1, 1)  # sigmoid


def test_optuna_workers_and_a_user_build_model_on_torch(tiny_folder, tmp_path, postgres_url):
    """--keras-backend torch with the Optuna back end, two --workers sharing the study on
    PostgreSQL, a user build_model(hp) file, --objective val_auc and --class-weight balanced."""
    space = tmp_path / "my_space.py"
    space.write_text(USER_SPACE)
    result = run_cli(
        *("--keras-backend", "torch", "--backend", "optuna", "--space", f"{space}:build_model"),
        *("--data", str(tiny_folder), *TINY, "--epochs", "2", "--max-trials", "2"),
        *("--workers", "2", "--storage", postgres_url, "--objective", "val_auc"),
        *("--class-weight", "balanced", "--runs-dir", str(tmp_path), "--name", "torch-optuna"),
        env=no_tensorflow_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trials = complete_trials(tmp_path / "torch-optuna")
    assert len(trials) == 2
    assert trials["val_auc"].between(0, 1).all()
    assert set(trials["hp_filters"]) <= {4, 8}
    info = json.loads((tmp_path / "torch-optuna" / "run.json").read_text())
    assert info["keras_backend"] == "torch"


def test_a_jax_search(tiny_folder, tmp_path):
    """--keras-backend jax: the smoke run of the JAX backend."""
    result = run_cli(
        *("--keras-backend", "jax", "--space", "scratch", "--data", str(tiny_folder), *TINY),
        *("--epochs", "2", "--max-trials", "2", "--runs-dir", str(tmp_path), "--name", "jax"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(complete_trials(tmp_path / "jax")) == 2
    info = json.loads((tmp_path / "jax" / "run.json").read_text())
    assert (info["keras_backend"], info["keras_backend_version"]) == (
        "jax",
        info["versions"]["jax"],
    )


def test_cached_features_then_fine_tuning_on_torch(tiny_folder, tmp_path, weights_file):
    """A frozen-head stage on cached MobileNetV2 features, then fine-tuning from layer 100 with
    the base's batch norm frozen: the stored model's moving statistics are the weights file's
    and the layers above 100 trained."""
    pins = ["flip=none", "rotation=0", "zoom=0", "translation=0", "contrast=0"]
    pins += ["mode=fine_tune", "fine_tune_at=0.65", "fine_tune_learning_rate=0.0001"]
    result = run_cli(
        *("--keras-backend", "torch", "--space", "transfer", "--weights", str(weights_file)),
        *("--data", str(tiny_folder), *TINY, "--epochs", "2", "--max-trials", "1"),
        *(part for pin in pins for part in ("--fix", pin)),
        *("--runs-dir", str(tmp_path), "--name", "transfer"),
        env=no_tensorflow_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "transfer"
    trials = complete_trials(run)
    assert trials["features"].notna().all(), "the first stage did not train on cached features"
    assert set(RunStore(run).epochs()["phase"]) == {"train", "fine_tune"}

    hp = kt.HyperParameters()
    for pin in pins:
        name, value = pin.split("=")
        hp.Fixed(name, int(value) if value.isdigit() else value)
    fresh = transfer.build(
        hp, SpaceContext(32, 2, DEFAULT_BACKBONE.with_weights(str(weights_file)))
    )
    trained = keras.saving.load_model(run / "best_model.keras").get_layer(transfer.BACKBONE)
    before = fresh.get_layer(transfer.BACKBONE)
    changed = []
    for index, (new, old) in enumerate(zip(trained.layers, before.layers, strict=True)):
        if isinstance(new, keras.layers.BatchNormalization):
            np.testing.assert_array_equal(new.moving_mean.numpy(), old.moving_mean.numpy())
        elif isinstance(new, keras.layers.Conv2D | keras.layers.DepthwiseConv2D):
            same = np.array_equal(new.get_weights()[0], old.get_weights()[0])
            assert same or index >= 100, f"{new.name} below layer 100 trained"
            changed.append(not same)
    assert any(changed), "fine-tuning trained no convolution"


def test_a_torch_search_killed_twice_resumes_to_the_end(tiny_folder, tmp_path):
    """SIGKILL in the middle of an epoch and between epochs, then --resume: finished trials and
    their epochs stay as they were, and the run completes its budget."""
    command = [
        *(sys.executable, str(REPO / "run_search.py"), "--keras-backend", "torch"),
        *("--space", "scratch", "--data", str(tiny_folder), "--image-size", "32"),
        *("--batch-size", "8", "--epochs", "3", "--patience", "3", "--max-trials", "2"),
        *("--checkpoint-every", "0", "--runs-dir", str(tmp_path), "--name", "crash"),
    ]
    run, rng = tmp_path / "crash", random.Random("torch-crash")
    finished, epochs = pd.DataFrame(columns=["trial_id"]), pd.DataFrame(columns=["trial_id"])
    for kill_point in (mid_epoch, between_epochs):
        resume = ["--resume"] if (run / "run.json").exists() else []
        process = subprocess.Popen([*command, *resume], stdout=subprocess.DEVNULL, env=cli_env())
        ready, deadline = kill_point(run, rng), time.monotonic() + 180
        while process.poll() is None and not ready() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.poll() is None, "the search ended before its kill"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        finished, epochs = check_invariants(run, finished, epochs)
    final = subprocess.run([*command, "--resume"], capture_output=True, text=True, env=cli_env())
    assert final.returncode == 0, final.stderr[-3000:]
    check_invariants(run, finished, epochs)
    assert len(complete_trials(run)) == 2
    assert RunStore(run).read_run_info()["status"] == "finished"


@pytest.mark.bad_input
def test_resuming_on_another_backend_is_refused(torch_run):
    before = (torch_run / "run.json").read_bytes()
    result = run_cli(
        *("--resume", "--name", "torch", "--runs-dir", str(torch_run.parent)),
        *("--keras-backend", "jax"),
    )
    line = the_one_error(result)
    assert "trained on the torch backend of Keras, not jax" in line
    assert "--keras-backend torch" in line
    assert (torch_run / "run.json").read_bytes() == before


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("options", "env", "expected"),
    [
        (("--keras-backend", "mxnet"), {}, "unknown Keras backend 'mxnet': choose one of"),
        ((), {"KERAS_BACKEND": "theano"}, "unknown Keras backend 'theano'"),
        (
            ("--keras-backend", "tensorflow"),
            {"BLOCK": "1"},
            'needs tensorflow, which is not installed: pip install -e "."',
        ),
        (("--keras-backend", "jax", "--jit", "off"), {}, "--jit off: the jax backend"),
        (
            ("--keras-backend", "torch", "--tensorboard"),
            {"BLOCK": "1"},
            "--tensorboard writes its logs through TensorFlow, which is not installed",
        ),
    ],
)
def test_bad_keras_backends_are_one_line_before_any_run_directory(
    options, env, expected, tiny_folder, tmp_path
):
    blocked = env.pop("BLOCK", None)
    result = run_cli(
        *("--space", "scratch", "--data", str(tiny_folder), "--runs-dir", str(tmp_path / "r")),
        *options,
        env=(no_tensorflow_env if blocked else cli_env)() | env,
    )
    assert expected in the_one_error(result)
    assert not (tmp_path / "r").exists(), "a refused command left a run directory"


@pytest.mark.bad_input
def test_the_python_api_refuses_a_backend_keras_was_not_imported_with(tiny_folder, tmp_path):
    """In this process Keras runs on TensorFlow: search.run(keras_backend="torch") cannot switch."""
    import search

    assert keras.backend.backend() == "tensorflow"
    with pytest.raises(UsageError, match="already imported with the tensorflow backend"):
        search.run(
            space="scratch", data=str(tiny_folder), keras_backend="torch", runs_dir=str(tmp_path)
        )
    assert os.environ.get("KERAS_BACKEND") != "torch"
