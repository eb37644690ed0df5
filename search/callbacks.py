"""The Keras callbacks of a trial's fit: what each epoch adds to its logs, records and shows.

Their order matters and is set in search/fitting.py: the clean evaluation and the validation
scores run first, so EarlyStopping, the recorder and the back end's pruner see their keys.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import keras
import numpy as np

from search.console import format_seconds, live_line
from search.inputs import evaluation_dataset
from search.schema import PREDICTION_SCORES
from search.stats import prediction_scores
from search.store import RunStore

CLEAN_KEYS = ("train_accuracy_clean", "train_loss_clean")


class CleanTrainEval(keras.callbacks.Callback):
    """Adds CLEAN_KEYS to each epoch's logs, for EpochRecorder after it: the epoch's weights in
    inference mode (no augmentation, no dropout) on the fixed training sample. Placed first, it
    measures those weights before any callback could restore others."""

    def __init__(self, measure: Callable[[], dict[str, float]]):
        super().__init__()
        self.measure = measure

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.measure())


class ValidationScores(keras.callbacks.Callback):
    """Adds val_auc and val_f1 (search.stats.prediction_scores) to each epoch's logs, for the
    pruner and EpochRecorder after it, from the epoch's predictions on the validation split:
    only when one of them is the --objective, as it costs one more validation pass."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            batches = evaluation_dataset(self.x, self.y, self.batch_size)
            logs.update(prediction_scores(self.y, self.model.predict(batches, verbose=0)))


class LiveProgress(keras.callbacks.Callback):
    """On a terminal, one line rewritten at each epoch's start and end: the trial, the epoch
    of the phase's last, the phase, the elapsed time and the estimated time left (from the
    epochs so far; early stopping usually ends the trial sooner)."""

    def __init__(self, label: str, phase: str, last_epoch: int):
        super().__init__()
        self.label, self.phase, self.last_epoch = label, phase, last_epoch
        self.start, self.first = time.perf_counter(), None

    def on_epoch_begin(self, epoch, logs=None):
        self.first = epoch if self.first is None else self.first
        self._show(epoch + 1, done=epoch - self.first)

    def on_epoch_end(self, epoch, logs=None):
        self._show(epoch + 1, done=epoch + 1 - self.first)

    def _show(self, epoch: int, done: int) -> None:
        elapsed = time.perf_counter() - self.start
        left = self.last_epoch - self.first - done
        eta = format_seconds(elapsed / done * left) if done else "-"
        live_line(
            f"{self.label} epoch {epoch}/{self.last_epoch} ({self.phase}) "
            f"{format_seconds(elapsed)} elapsed, ETA {eta}"
        )


class StopOnNaN(keras.callbacks.Callback):
    """Stops training after an epoch whose loss is not finite; the trial is then judged
    "nan_loss" from its recorded epochs. Keras's TerminateOnNaN checks every batch, and a
    batch hook turns off Keras's asynchronous callbacks and waits for the device every step."""

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True


class EpochRecorder(keras.callbacks.Callback):
    """Appends each finished epoch to the store, so a crash loses at most the current epoch."""

    def __init__(
        self,
        store: RunStore,
        trial_id: int,
        phase: str,
        *,
        rows: list[dict],
        on_epoch: Callable[[dict], None] | None = None,
    ):
        super().__init__()
        self.store, self.trial_id, self.phase = store, trial_id, phase
        self.rows, self.on_epoch = rows, on_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        row = {
            "trial_id": self.trial_id,
            "epoch": epoch + 1,
            "phase": self.phase,
            "seconds": round(time.perf_counter() - self._start, 3),
        }
        measured = ("loss", "accuracy", "val_loss", "val_accuracy", *PREDICTION_SCORES, *CLEAN_KEYS)
        row |= {k: float(logs[k]) for k in measured if k in logs}
        self.rows.append(row)
        self.store.append_epoch(row)
        if self.on_epoch is not None:
            self.on_epoch(row)
