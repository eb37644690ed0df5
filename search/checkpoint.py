"""Epoch checkpoints of a trial in progress, so that a resumed run continues a long trial from
its last saved epoch instead of training it again from the first.

At the end of an epoch, once `every_s` seconds have passed since the trial's last save (0: every
epoch), the trial's state goes to RUN/checkpoints/trial_<id>/:
- the model's weights with its optimizer's (`Model.save_weights`, as Keras's BackupAndRestore
  saves them), so the step count a learning-rate schedule reads comes back too;
- the weights EarlyStopping would restore (its best epoch's);
- the epoch rows so far, from which EarlyStopping's counters are set again and the back end's
  pruner is told each epoch again.
BackupAndRestore keeps neither of the last two, and writes its files one after the other; here
every file is written under a new name and state.json, naming them, is renamed into place last.

A trial that ends in any way deletes its checkpoint. One cut off (Ctrl-C, SIGKILL, a lost
machine) keeps it for the trial that retries it: Keras Tuner retries the same trial, Optuna a
copy of it whose `retry_history` system attribute ends with it. The copy moves the checkpoint to its
own number. What a continued trial does not repeat is chance: its batches after the checkpoint
come in another order than an uninterrupted trial's would have.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from search.atomic import atomic_write

STATE = "state.json"


def _comparable(values: dict) -> dict:
    """Hyperparameter values as JSON reads them back, so stored and live ones compare."""
    return json.loads(json.dumps(values, sort_keys=True, default=str))


def _remove_unnamed(folder: Path, state: dict) -> None:
    """Delete the files of `folder` that `state` does not name: earlier saves, and any a save
    cut off had written before its state.json (a best epoch's weights that training again after
    a resume would not rewrite under the same name)."""
    named = {STATE, state["weights"], state["best_weights"]}
    for path in folder.iterdir():
        if path.name not in named:
            path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Checkpoint:
    """A trial's saved state: `epoch` epochs trained, in `rows`, over `seconds` of training."""

    folder: Path
    epoch: int
    rows: list[dict]
    seconds: float
    weights: Path
    best_weights: Path | None

    def restore(self, model: keras.Model) -> None:
        """Put the saved weights, the optimizer's state with them, into a freshly built model."""
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)  # its variables must exist to load
        model.load_weights(self.weights)

    def kept_weights(self) -> list[np.ndarray] | None:
        """The weights EarlyStopping held as its best epoch's, or None before any was judged."""
        if self.best_weights is None:
            return None
        with np.load(self.best_weights) as saved:
            return [saved[f"arr_{i}"] for i in range(len(saved.files))]


class TrialCheckpoints:
    """The checkpoints of a run's trials in progress; `every_s` None turns them off."""

    def __init__(self, run_dir: Path, every_s: float | None):
        self.root, self.every_s = run_dir / "checkpoints", every_s

    def folder(self, trial_id: int) -> Path:
        return self.root / f"trial_{trial_id}"

    def exists(self, trial_id: int) -> bool:
        return (self.folder(trial_id) / STATE).exists()

    def take(
        self, source: int, trial_id: int, *, values: dict, batch_size: int
    ) -> Checkpoint | None:
        """The checkpoint trial `source` left, moved to `trial_id`'s, when it was saved for these
        hyperparameter values and batch size; otherwise None, and a stale one is deleted."""
        if self.every_s is None or not self.exists(source):
            return None
        state = json.loads((self.folder(source) / STATE).read_text(encoding="utf-8"))
        if state["values"] != _comparable(values) or state["batch_size"] != batch_size:
            self.discard(source)
            return None
        if source != trial_id:
            self.discard(trial_id)
            self.folder(source).rename(self.folder(trial_id))
        folder = self.folder(trial_id)
        _remove_unnamed(folder, state)
        best = state["best_weights"]
        return Checkpoint(
            folder,
            epoch=state["epoch"],
            rows=state["rows"],
            seconds=state["seconds"],
            weights=folder / state["weights"],
            best_weights=None if best is None else folder / best,
        )

    def discard(self, trial_id: int) -> None:
        shutil.rmtree(self.folder(trial_id), ignore_errors=True)

    def saver(
        self,
        trial_id: int,
        *,
        values: dict,
        batch_size: int,
        rows: list[dict],
        trained_s: Callable[[], float],
        stopping: keras.callbacks.EarlyStopping,
    ) -> EpochCheckpoint | None:
        """The callback that saves this trial's state, or None when checkpoints are off."""
        if self.every_s is None:
            return None
        identity = {"trial_id": trial_id, "values": _comparable(values), "batch_size": batch_size}
        return EpochCheckpoint(
            self.folder(trial_id),
            self.every_s,
            identity=identity,
            rows=rows,
            trained_s=trained_s,
            stopping=stopping,
        )


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the trial's state at the end of an epoch, at most every `every_s` seconds. Placed
    after EarlyStopping and the epoch recorder, so both have taken in the epoch."""

    def __init__(
        self,
        folder: Path,
        every_s: float,
        *,
        identity: dict,
        rows: list[dict],
        trained_s: Callable[[], float],
        stopping: keras.callbacks.EarlyStopping,
    ):
        super().__init__()
        self.folder, self.every_s, self.identity = folder, every_s, identity
        self.rows, self.trained_s, self.stopping = rows, trained_s, stopping
        self.last = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        if time.monotonic() - self.last >= self.every_s:
            self.save(epoch + 1)
            self.last = time.monotonic()

    def save(self, epoch: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        weights = f"epoch-{epoch}.weights.h5"
        atomic_write(self.folder / weights, self.model.save_weights)
        best = self._save_best()
        state = self.identity | {
            "epoch": epoch,
            "rows": self.rows,
            "seconds": round(self.trained_s(), 3),
            "weights": weights,
            "best_weights": best,
        }
        atomic_write(self.folder / STATE, lambda p: p.write_text(json.dumps(state), "utf-8"))
        _remove_unnamed(self.folder, state)

    def _save_best(self) -> str | None:
        """EarlyStopping's best weights, written once per best epoch."""
        best = self.stopping.best_weights
        if best is None:
            return None
        name = f"best-{self.stopping.best_epoch + 1}.npz"
        if not (self.folder / name).exists():
            atomic_write(self.folder / name, lambda p: np.savez(p, *best))
        return name


def lowest_after_warmup(
    rows: list[dict], warmup_epochs: int, monitor: str = "val_loss"
) -> dict | None:
    """The epoch row EarlyStopping restores: the lowest `monitor` after the warm-up, the earliest
    on ties; None when every epoch is warm-up."""
    judged = [r for r in rows if r["epoch"] > warmup_epochs]
    if not judged:
        return None
    return min(judged, key=lambda r: (r.get(monitor, math.inf), r["epoch"]))


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping that can go on from a checkpoint: its counters are set from the epoch rows
    trained before (the lowest validation loss after the warm-up, and the epochs since), and the
    weights it would restore from the checkpoint."""

    def __init__(self, *, rows: list[dict] = (), best_weights: list | None = None, **kwargs):
        super().__init__(**kwargs)
        self.resumed_rows, self.resumed_best_weights = list(rows), best_weights

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        best = lowest_after_warmup(self.resumed_rows, self.start_from_epoch, self.monitor)
        if best is None:
            return
        self.best, self.best_epoch = best[self.monitor], best["epoch"] - 1
        self.wait = self.resumed_rows[-1]["epoch"] - best["epoch"]
        self.best_weights = self.resumed_best_weights
