"""Failures that must never lose finished work: OOM, Ctrl-C, a second process on the same run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import keras
import keras_tuner as kt
import pytest
from conftest import REPO, error_lines

from search.errors import UsageError
from search.store import RunStore
from search.trial import TrainSettings, TrialRunner
from search.trial_edge import TrialRequest
from spaces import Space, get_space
from spaces.context import SpaceContext

pytestmark = pytest.mark.failure


def oversized_space() -> Space:
    """A model whose dense kernel (3072 x 2**26 floats, ~800 GB) cannot be allocated."""

    def build(hp, ctx):
        inputs = keras.Input(ctx.input_shape)
        x = keras.layers.Dense(2**26)(keras.layers.Flatten()(inputs))
        model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
        model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
        return model

    return Space(name="oversized", build=build)


def test_failure_out_of_memory_is_retried_at_half_batch_then_recorded(tiny_data, tmp_path, capsys):
    store = RunStore(tmp_path / "run")
    store.create()
    settings = TrainSettings(epochs=1, batch_size=16)
    runner = TrialRunner(
        oversized_space(), SpaceContext(32, 2), tiny_data, store=store, settings=settings
    )
    result, model = runner.run(TrialRequest(0, kt.HyperParameters()))
    assert result.status == "failed" and result.error.startswith("oom: ResourceExhaustedError")
    assert model is None
    assert "out of memory at batch 16; retrying once at batch 8" in capsys.readouterr().out
    row = store.trials().iloc[0]
    assert (row["status"], row["batch_size"]) == ("failed", 8)
    # Memory is released and the search goes on: the next trial trains normally.
    scratch = TrialRunner(
        get_space("scratch"), SpaceContext(32, 2), tiny_data, store=store, settings=settings
    )
    assert scratch.run(TrialRequest(1, kt.HyperParameters()))[0].status == "complete"


def test_failure_second_process_on_the_same_run_is_refused(tmp_path):
    store = RunStore(tmp_path / "run")
    with store.exclusive_run():
        holder = (tmp_path / "run" / ".run.lock").read_text().strip()
        assert holder == str(os.getpid())
        with pytest.raises(UsageError, match=f"in use by process {os.getpid()}"):  # noqa: SIM117
            with RunStore(tmp_path / "run").exclusive_run():
                pass
    with RunStore(tmp_path / "run").exclusive_run():  # released: the next run may take it
        pass


def test_failure_a_dead_process_leaves_no_stale_lock(tmp_path):
    """A SIGKILLed holder's lock dies with it, even though the file still names it."""
    code = (
        "import time, sys; sys.path.insert(0, sys.argv[2]); from search.store import RunStore;"
        "ctx = RunStore(sys.argv[1]).exclusive_run(); ctx.__enter__(); print('held', flush=True);"
        "time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "run"), str(REPO)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(UsageError, match=f"in use by process {holder.pid}"):  # noqa: SIM117
        with RunStore(tmp_path / "run").exclusive_run():
            pass
    holder.kill()
    holder.wait()
    with RunStore(tmp_path / "run").exclusive_run():
        pass


def test_failure_ctrl_c_marks_the_trial_interrupted_and_says_how_to_resume(tiny_folder, tmp_path):
    args = [
        "--space",
        "scratch",
        "--data",
        str(tiny_folder),
        "--max-trials",
        "3",
        "--epochs",
        "30",
        "--patience",
        "30",
        "--image-size",
        "32",
        "--batch-size",
        "4",
        "--runs-dir",
        str(tmp_path),
        "--name",
        "ctrlc",
    ]
    process = subprocess.Popen(
        [sys.executable, str(REPO / "run_search.py"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C comes from a terminal, where SIGINT is not ignored; a suite started in the
        # background (`bash .ci/run &`) has it ignored, and its children would inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    epochs = tmp_path / "ctrlc" / "epochs.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
        epochs.exists() and len(epochs.read_text().splitlines()) > 2
    ):
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    result = subprocess.CompletedProcess(args, 130, out, err)
    assert any(
        f"--resume --name ctrlc --runs-dir {tmp_path}" in line for line in error_lines(result)
    )
    store = RunStore(tmp_path / "ctrlc")
    assert "interrupted" in set(store.trials()["status"])
    assert store.read_run_info()["status"] == "interrupted"
    assert (tmp_path / "ctrlc" / "report.html").exists()
    assert not store.epochs().empty


@pytest.mark.parametrize("backend", ["keras-tuner", "optuna"])
def test_failure_a_process_that_grows_restarts_itself_and_resumes(tiny_folder, tmp_path, backend):
    """TensorFlow keeps memory from every model; past --max-memory-growth the process starts
    again between trials and resumes, losing nothing and repeating nothing."""
    from conftest import run_cli

    result = run_cli(
        *("--space", "scratch", "--data", str(tiny_folder), "--image-size", "32"),
        *("--backend", backend, "--pruner", "none", "--max-trials", "3", "--epochs", "1"),
        *("--max-memory-growth", "1", "--runs-dir", str(tmp_path), "--name", "grows"),
    )
    assert result.returncode == 0, error_lines(result)
    assert result.stdout.count("restarting to give the memory back") == 1
    trials = RunStore(tmp_path / "grows").trials()
    assert list(trials["trial_id"]) == [0, 1, 2]
    assert list(trials["status"]) == ["complete"] * 3
    assert trials["rss_mb"].notna().all()
    assert (tmp_path / "grows" / "best_model.keras").exists()
