"""Epoch checkpoints (--checkpoint-every): a trial cut off by a crash or Ctrl-C goes on from its
last saved epoch when the run resumes, on both back ends; real processes, real training."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import optuna
import pandas as pd
import pytest
from conftest import REPO, cli_env

from search.checkpoint import EpochCheckpoint, ResumableEarlyStopping, TrialCheckpoints
from search.store import RunStore

EPOCHS = 8
MEASURED = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"]


def command(backend: str, folder: Path, runs: Path, *extra: str) -> list[str]:
    args = [
        *("--space", "scratch", "--data", str(folder), "--image-size", "32"),
        *("--backend", backend, "--max-trials", "1", "--epochs", str(EPOCHS)),
        *("--patience", str(EPOCHS), "--batch-size", "8", "--seed", "3"),
        *("--runs-dir", str(runs), "--name", "ckpt", *extra),
    ]
    if backend == "optuna":
        # The median pruner hears every epoch (it prunes nothing before 3 trials); heartbeats
        # every second, so a killed trial is found lost 2 s later.
        args += ["--pruner", "median", "--heartbeat", "1"]
    return [sys.executable, str(REPO / "run_search.py"), *args]


def saved_epoch(run: Path) -> int:
    """The epoch of the newest checkpoint of any trial of the run, 0 if none."""
    epochs = [0]
    for state in (run / "checkpoints").glob("trial_*/state.json"):
        # A state read between a save's rename and the folder's move is read at the next look.
        with contextlib.suppress(OSError, ValueError):
            epochs.append(json.loads(state.read_text())["epoch"])
    return max(epochs)


def cut_off(args: list[str], run: Path, *, at_epoch: int, how: signal.Signals) -> int:
    """Start the search, stop it with `how` once a checkpoint holds `at_epoch` epochs, and
    return the epoch of the checkpoint left."""
    process = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal
    )
    deadline = time.monotonic() + 300
    while process.poll() is None and saved_epoch(run) < at_epoch and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, f"the trial ended before epoch {at_epoch}"
    process.send_signal(how)
    _, err = process.communicate(timeout=120)
    assert process.returncode in (-signal.SIGKILL, 130), err[-3000:]
    if how == signal.SIGINT:  # Ctrl-C ends with how to resume, without a traceback
        assert "Traceback" not in err and "failed with" not in err, err[-3000:]
        assert err.strip().splitlines()[-1].startswith("interrupted; finished trials are kept")
    left = saved_epoch(run)
    assert at_epoch <= left < EPOCHS
    return left


def resume(args: list[str]) -> None:
    time.sleep(2.5)  # Optuna finds a SIGKILLed trial lost once two heartbeats are missed
    done = subprocess.run(args, capture_output=True, text=True, env=cli_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def rows_of(run: Path, trial_id: int) -> pd.DataFrame:
    epochs = RunStore(run).epochs()
    return epochs[epochs["trial_id"] == trial_id][MEASURED].reset_index(drop=True)


def check_went_on(before: pd.DataFrame, after: pd.DataFrame, saved: int) -> None:
    """The continued trial kept the first `saved` epochs as they were trained (their seconds
    too: replayed, not trained again), then trained on to the end, one row per epoch."""
    pd.testing.assert_frame_equal(after.iloc[:saved], before.iloc[:saved])
    assert list(after["epoch"]) == list(range(1, EPOCHS + 1))
    if len(before) > saved:  # an epoch trained after the checkpoint was trained again
        assert after.loc[saved, "seconds"] != before.loc[saved, "seconds"]


def check_finished(run: Path, trial_id: int, saved_seconds: float) -> None:
    trials = RunStore(run).trials().set_index("trial_id")
    assert trials.loc[trial_id, "status"] == "complete"
    # Its duration counts the training before the cut too.
    assert trials.loc[trial_id, "duration_s"] > saved_seconds
    assert not list((run / "checkpoints").glob("trial_*")), "an ended trial keeps no checkpoint"


def test_checkpoint_optuna_a_killed_trial_goes_on_twice(tiny_folder, tmp_path):
    """SIGKILL twice: Optuna's retry (trial 1) goes on from trial 0's checkpoint, and the retry
    of that retry (trial 2) from trial 1's; the pruner hears the replayed epochs again."""
    args, run = (
        command("optuna", tiny_folder, tmp_path, "--checkpoint-every", "0"),
        tmp_path / "ckpt",
    )
    first = cut_off(args, run, at_epoch=2, how=signal.SIGKILL)
    trial_0 = rows_of(run, 0)
    second = cut_off(args, run, at_epoch=first + 2, how=signal.SIGKILL)
    trial_1 = rows_of(run, 1)
    pd.testing.assert_frame_equal(trial_1.iloc[:first], trial_0.iloc[:first])
    resume(args)
    trial_2 = rows_of(run, 2)
    check_went_on(trial_1, trial_2, second)
    check_finished(run, 2, trial_2["seconds"].iloc[:second].sum())
    study = optuna.load_study(study_name="ckpt", storage=f"sqlite:///{run / 'study.db'}")
    by_number = {t.number: t for t in study.trials}
    assert by_number[2].state == optuna.trial.TrialState.COMPLETE
    assert by_number[2].system_attrs["retry_history"] == [0, 1]
    reported = by_number[2].intermediate_values
    assert [reported[step] for step in range(EPOCHS)] == list(trial_2["val_accuracy"])
    trials = RunStore(run).trials().set_index("trial_id")
    assert trials.loc[0, "error"].endswith("retried as trial 1")
    assert trials.loc[1, "error"].endswith("retried as trial 2")


@pytest.mark.parametrize("backend", ["keras-tuner", "optuna"])
def test_checkpoint_ctrl_c_then_resume_goes_on(backend, tiny_folder, tmp_path):
    """Ctrl-C keeps the trial's checkpoint; Keras Tuner retries the same trial, Optuna queues
    a retry of the interrupted one, and either goes on from the checkpoint."""
    args, run = (
        command(backend, tiny_folder, tmp_path, "--checkpoint-every", "0"),
        tmp_path / "ckpt",
    )
    saved = cut_off(args, run, at_epoch=3, how=signal.SIGINT)
    before = rows_of(run, 0)
    assert RunStore(run).trials().set_index("trial_id").loc[0, "status"] == "interrupted"
    resume(args)
    continued = 0 if backend == "keras-tuner" else 1
    after = rows_of(run, continued)
    check_went_on(before, after, saved)
    check_finished(run, continued, after["seconds"].iloc[:saved].sum())


def test_checkpoint_off_saves_nothing_and_trains_again(tiny_folder, tmp_path):
    args = command("optuna", tiny_folder, tmp_path, "--checkpoint-every", "off")
    run = tmp_path / "ckpt"
    process = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cli_env()
    )
    deadline = time.monotonic() + 300
    while not (run / "epochs.csv").exists() or len(RunStore(run).epochs()) < 3:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (run / "checkpoints").exists()
    before = rows_of(run, 0)
    resume(args)
    after = rows_of(run, 1)
    assert not np.isclose(after["seconds"].iloc[0], before["seconds"].iloc[0], rtol=0, atol=1e-3)
    assert list(after["epoch"]) == list(range(1, EPOCHS + 1))


def _tiny_model() -> keras.Model:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    return model


def test_checkpoint_restores_weights_optimizer_and_refuses_other_values(tmp_path):
    x, y = np.random.default_rng(0).normal(size=(32, 4)), np.arange(32) % 2
    model = _tiny_model()
    stopping = ResumableEarlyStopping(monitor="val_loss", restore_best_weights=True)
    checkpoints = TrialCheckpoints(tmp_path, every_s=0)
    rows: list[dict] = [{"epoch": 1, "val_loss": 0.5}]
    saver = checkpoints.saver(
        7, values={"lr": 0.01}, batch_size=8, rows=rows, trained_s=lambda: 12.5, stopping=stopping
    )
    assert isinstance(saver, EpochCheckpoint)
    model.fit(
        x, y, batch_size=8, validation_data=(x, y), epochs=3, callbacks=[stopping, saver], verbose=0
    )
    # A retry (trial 9) takes it over; the one it retries no longer holds it.
    taken = checkpoints.take(7, 9, values={"lr": 0.01}, batch_size=8)
    assert taken is not None and taken.epoch == 3 and taken.seconds == 12.5
    assert not checkpoints.exists(7) and checkpoints.exists(9)
    fresh = _tiny_model()
    taken.restore(fresh)
    for saved, restored in zip(model.get_weights(), fresh.get_weights(), strict=True):
        np.testing.assert_array_equal(saved, restored)
    assert int(fresh.optimizer.iterations) == int(model.optimizer.iterations) == 12
    best = taken.kept_weights()
    assert best is not None
    for kept, restored in zip(stopping.best_weights, best, strict=True):
        np.testing.assert_array_equal(kept, restored)
    # Saved for other values, or another batch size: not taken, and deleted.
    assert checkpoints.take(9, 9, values={"lr": 0.02}, batch_size=8) is None
    assert not checkpoints.exists(9)
    assert (
        TrialCheckpoints(tmp_path, every_s=None).saver(
            1, values={}, batch_size=8, rows=[], trained_s=float, stopping=stopping
        )
        is None
    )


def test_checkpoint_early_stopping_goes_on_where_it_was(tmp_path):
    """Its counters come from the rows trained before: best val_loss 0.1 at epoch 2 of 4, two
    epochs waited of patience 3, so one more epoch without a lower loss stops training, and the
    checkpoint's best weights are the ones restored."""
    x, y = np.zeros((8, 4)), np.zeros(8)
    model = _tiny_model()
    model.optimizer.learning_rate = 0.0  # the loss never drops to 0.1
    kept = [np.full(w.shape, 0.5, w.dtype) for w in model.get_weights()]
    rows = [{"epoch": e, "val_loss": v} for e, v in [(1, 0.3), (2, 0.1), (3, 0.2), (4, 0.4)]]
    stopping = ResumableEarlyStopping(
        monitor="val_loss", patience=3, restore_best_weights=True, rows=rows, best_weights=kept
    )
    history = model.fit(
        x, y, validation_data=(x, y), initial_epoch=4, epochs=20, callbacks=[stopping], verbose=0
    )
    assert len(history.history["val_loss"]) == 1
    assert stopping.best_epoch == 1 and stopping.best == 0.1
    for weights, restored in zip(kept, model.get_weights(), strict=True):
        np.testing.assert_array_equal(weights, restored)
