"""Your own model as a space (`--space FILE.py:FUNCTION`): a Keras Tuner guide-style
`build_model(hp)`, a `build(hp, ctx)` and a HyperModel, through both back ends from the real
command line on real photos; the model contract refused in one line; a changed file on resume."""

from __future__ import annotations

import json
import textwrap

import pytest
from conftest import error_lines, run_cli

from search.store import RunStore

# A Keras Tuner getting-started model: Sequential, compiled by the user, for one-hot labels.
GUIDE_MODEL = """
import keras
from keras import layers


def build_model(hp):
    model = keras.Sequential()
    model.add(keras.Input(shape=(32, 32, 3)))
    model.add(layers.Rescaling(1.0 / 255))
    model.add(layers.Conv2D(hp.Int("filters", 4, 12, step=4), 3, activation="relu"))
    model.add(layers.GlobalAveragePooling2D())
    model.add(layers.Dense(hp.Choice("units", [8, 16]), activation="relu"))
    model.add(layers.Dense(2, activation="softmax"))
    model.compile(
        optimizer=keras.optimizers.Adam(hp.Float("lr", 1e-4, 1e-2, sampling="log")),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
"""

# The project's own signature, uncompiled: the run compiles it for its one sigmoid unit.
CONTEXT_MODEL = """
import keras
from keras import layers


def build(hp, ctx):
    inputs = keras.Input(ctx.input_shape)
    x = layers.Rescaling(1.0 / 255)(inputs)
    x = layers.Conv2D(hp.Choice("filters", [4, 8]), 3, activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(1, activation="sigmoid")(x))
"""

HYPERMODEL = """
import keras
import keras_tuner
from keras import layers


class Small(keras_tuner.HyperModel):
    def build(self, hp):
        inputs = keras.Input((32, 32, 3))
        x = layers.Rescaling(1.0 / 255)(inputs)
        x = layers.Flatten()(x)
        x = layers.Dense(hp.Int("units", 4, 8, step=4), activation="relu")(x)
        model = keras.Model(inputs, layers.Dense(2, activation="softmax")(x))
        model.compile("adam", "sparse_categorical_crossentropy")
        return model
"""


def search_argv(space: str, folder, runs, *extra: str) -> list[str]:
    argv = ["--space", space, "--data", str(folder), "--image-size", "32", "--epochs", "2"]
    return [*argv, "--max-trials", "2", "--batch-size", "16", "--runs-dir", str(runs), *extra]


def write(tmp_path, name: str, source: str):
    path = tmp_path / name
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


@pytest.mark.parametrize("backend", ["keras-tuner", "optuna"])
def test_a_keras_tuner_guide_model_runs_through_both_back_ends(backend, tiny_folder, tmp_path):
    space = f"{write(tmp_path, 'guide.py', GUIDE_MODEL)}:build_model"
    argv = search_argv(space, tiny_folder, tmp_path, "--backend", backend, "--name", "guide")
    result = run_cli(*argv)
    assert result.returncode == 0, error_lines(result)[-5:]
    store = RunStore(tmp_path / "guide")
    trials = store.trials()
    assert list(trials["status"]) == ["complete", "complete"], trials.get("error")
    assert {"hp_filters", "hp_units", "hp_lr"} <= set(trials.columns)
    # One-hot labels: the accuracy the run read is the model's on the stored predictions.
    best = store.best_trial()
    assert 0.0 <= best["val_accuracy"] <= 1.0 and best["test_accuracy"] >= 0.0
    source = store.read_run_info()["space_source"]
    assert source["path"].endswith("guide.py") and len(source["sha256"]) == 64
    assert (store.run_dir / "report.html").exists()


@pytest.mark.parametrize(
    ("name", "source", "function"),
    [("context.py", CONTEXT_MODEL, ""), ("hyper.py", HYPERMODEL, ":Small")],
    ids=["build-hp-ctx-uncompiled", "hypermodel"],
)
def test_build_hp_ctx_and_a_hypermodel_run(name, source, function, tiny_folder, tmp_path):
    space = f"{write(tmp_path, name, source)}{function}"
    result = run_cli(*search_argv(space, tiny_folder, tmp_path, "--name", "own"))
    assert result.returncode == 0, error_lines(result)[-5:]
    trials = RunStore(tmp_path / "own").trials()
    assert list(trials["status"]) == ["complete", "complete"], trials.get("error")


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("change", "needles"),
    [
        (("shape=(32, 32, 3)", "shape=(64, 64, 3)"), ["(None, 64, 64, 3)", "(None, 32, 32, 3)"]),
        (("Dense(2, activation", "Dense(5, activation"), ["(None, 5)", "2 classes"]),
        (('activation="softmax"', "activation=None"), ["logits", 'activation="softmax"']),
        (("def build_model", "def other"), ["defines no build_model"]),
    ],
    ids=["input", "output", "logits", "missing"],
)
def test_a_model_that_breaks_the_contract_is_refused_in_one_line(
    change, needles, tiny_folder, tmp_path
):
    space = f"{write(tmp_path, 'bad.py', GUIDE_MODEL.replace(*change))}:build_model"
    result = run_cli(*search_argv(space, tiny_folder, tmp_path, "--name", "bad"))
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = error_lines(result)
    assert line.startswith("run_search.py: error: --space"), line
    for needle in needles:
        assert needle in line, (needle, line)
    assert not (tmp_path / "bad" / "trials.csv").exists(), "no trial ran"


@pytest.mark.bad_input
def test_resume_refuses_a_changed_space_file_unless_allowed(tiny_folder, tmp_path):
    path = write(tmp_path, "guide.py", GUIDE_MODEL)
    argv = search_argv(f"{path}:build_model", tiny_folder, tmp_path, "--name", "changing")
    argv[argv.index("--max-trials") + 1] = "1"
    assert run_cli(*argv).returncode == 0
    path.write_text(GUIDE_MODEL.replace("[8, 16]", "[8, 32]"), encoding="utf-8")
    resume = ["--resume", "--name", "changing", "--runs-dir", str(tmp_path)]
    refused = run_cli(*resume, "--data", str(tiny_folder), "--max-trials", "2")
    assert refused.returncode == 2
    [line] = error_lines(refused)
    assert "changed since the run started" in line and "--allow-changed-space" in line
    allowed = run_cli(
        *resume, "--data", str(tiny_folder), "--max-trials", "2", "--allow-changed-space"
    )
    assert allowed.returncode == 0, error_lines(allowed)[-5:]
    info = json.loads((tmp_path / "changing" / "run.json").read_text())
    assert len(RunStore(tmp_path / "changing").trials()) == 2
    assert info["space_source"]["sha256"] != "", "the new file's digest is recorded"


def test_the_installed_command_runs_a_user_model(tiny_folder, tmp_path):
    """The issue's line as a user types it: the console script pip installs, on a file."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from conftest import cli_env

    # Where pip put it: beside this Python (a pyenv shim appears only after a rehash).
    beside = Path(sys.executable).parent / "keras-image-search"
    command = str(beside) if beside.exists() else shutil.which("keras-image-search")
    assert command, "pip install -e . installs the keras-image-search command"
    space = f"{write(tmp_path, 'my_space.py', GUIDE_MODEL)}:build_model"
    result = subprocess.run(
        [command, *search_argv(space, tiny_folder, tmp_path, "--name", "installed")],
        capture_output=True,
        text=True,
        timeout=600,
        env=cli_env(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1].startswith("best trial ")
    assert len(RunStore(tmp_path / "installed").trials()) == 2
