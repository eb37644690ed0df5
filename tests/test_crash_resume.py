"""Fault injection with real processes: SIGKILL a real CLI search at seeded moments, resume it,
and check that no finished work is ever lost or changed."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import keras
import pandas as pd
import pytest
from conftest import REPO

from search.store import RunStore

MAX_TRIALS = 4


def mtime(path: Path) -> float:
    return path.stat().st_mtime_ns if path.exists() else 0


def rows(path: Path) -> int:
    return len(pd.read_csv(path)) if path.exists() else 0


# Each kill point waits for a moment of the run, then for a seeded extra delay.
def during_data_scan(run: Path, rng: random.Random) -> Callable[[], bool]:
    start = time.monotonic()
    delay = rng.uniform(0.2, 1.0)  # the scan runs before TensorFlow is even imported
    return lambda: time.monotonic() - start > delay


def mid_epoch(run: Path, rng: random.Random) -> Callable[[], bool]:
    seen, delay = [], rng.uniform(0.1, 0.6)

    def ready():
        if not seen and rows(run / "epochs.csv") >= 1:
            seen.append(time.monotonic())
        return bool(seen) and time.monotonic() - seen[0] > delay

    return ready


def between_epochs(run: Path, rng: random.Random) -> Callable[[], bool]:
    before = rows(run / "epochs.csv") + rng.randint(1, 2)
    return lambda: rows(run / "epochs.csv") >= before


def while_writing_the_store(run: Path, rng: random.Random) -> Callable[[], bool]:
    before = mtime(run / "trials.csv")
    return lambda: mtime(run / "trials.csv") != before


def while_exporting(run: Path, rng: random.Random) -> Callable[[], bool]:
    before = mtime(run / "best_model.keras")
    return lambda: any(run.glob(".trial_*.keras")) or mtime(run / "best_model.keras") != before


KILL_POINTS = [
    during_data_scan,
    mid_epoch,
    between_epochs,
    while_writing_the_store,
    while_exporting,
]


def command(backend: str, folder: Path, runs: Path) -> list[str]:
    args = [
        "--space",
        "scratch",
        "--data",
        str(folder),
        "--max-trials",
        str(MAX_TRIALS),
        "--epochs",
        "3",
        "--patience",
        "3",
        "--image-size",
        "32",
        "--batch-size",
        "8",
        "--runs-dir",
        str(runs),
        "--name",
        "crash",
        "--backend",
        backend,
    ]
    if backend == "optuna":
        args += ["--heartbeat", "1", "--pruner", "none"]
    return [sys.executable, str(REPO / "run_search.py"), *args]


def check_invariants(run: Path, finished_before: pd.DataFrame, epochs_before: pd.DataFrame):
    """Whatever the moment of the kill, the store parses, ids are unique, the best model loads,
    and every trial that had completed is still there with the same values and epochs."""
    store = RunStore(run)
    trials, epochs = store.trials(), store.epochs()  # parse, or raise
    assert trials["trial_id"].is_unique
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    if store.best_model_path.exists():
        keras.saving.load_model(store.best_model_path, safe_mode=True)
    kept = trials.set_index("trial_id")
    columns = ["status", "val_accuracy", "val_loss", "gap_clean", "best_epoch"]
    for trial_id, row in finished_before.set_index("trial_id").iterrows():
        assert kept.loc[trial_id, columns].tolist() == row[columns].tolist(), trial_id
        then = epochs_before.query("trial_id == @trial_id").reset_index(drop=True)
        now = epochs.query("trial_id == @trial_id").reset_index(drop=True)
        pd.testing.assert_frame_equal(now, then)
        assert list(now["epoch"]) == list(range(1, len(now) + 1)), "full epoch history"
    return trials[trials["status"] == "complete"], epochs


@pytest.mark.parametrize("backend", ["keras-tuner", "optuna"])
def test_crash_sigkill_at_seeded_moments_then_resume(backend, tmp_path, tiny_folder):
    rng = random.Random(f"crash-{backend}")
    run = tmp_path / "crash"
    finished, epochs = pd.DataFrame(columns=["trial_id"]), pd.DataFrame(columns=["trial_id"])
    killed = []
    for kill_point in KILL_POINTS:
        process = subprocess.Popen(
            command(backend, tiny_folder, tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready = kill_point(run, rng)
        deadline = time.monotonic() + 180
        while process.poll() is None and not ready() and time.monotonic() < deadline:
            time.sleep(0.02)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            killed.append(kill_point.__name__)
        process.wait()
        if process.returncode not in (0, -signal.SIGKILL):
            pytest.fail(process.stderr.read()[-3000:])
        process.stderr.close()
        finished, epochs = check_invariants(run, finished, epochs)
    assert len(killed) >= 4, f"too few kills landed: {killed}"
    final = subprocess.run(
        command(backend, tiny_folder, tmp_path), capture_output=True, text=True, timeout=600
    )
    assert final.returncode == 0, final.stderr[-3000:]
    check_invariants(run, finished, epochs)
    trials = RunStore(run).trials()
    assert (trials["status"] == "complete").sum() == MAX_TRIALS
    others = trials[trials["status"] != "complete"]
    # Optuna gives a killed trial's retry a new number; the killed one stays, marked failed.
    assert others["error"].str.contains("no heartbeat").all(), others
    keras.saving.load_model(run / "best_model.keras", safe_mode=True)
    store = RunStore(run)
    assert store.read_best_hparams()["trial_id"] == store.best_trial()["trial_id"]
    assert not list(run.glob(".trial_*.keras")), "staged models are promoted or dropped"
    assert store.read_run_info()["status"] == "finished"
