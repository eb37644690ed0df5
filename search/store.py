"""The run store: the only code that writes a run directory, and the schema the report reads.

runs/<name>/
  run.json          command line, space, back end, data, classes, counts, skipped files, versions
  trials.csv        one row per trial (TRIAL_COLUMNS, with one hp_<name> column per hyperparameter)
  epochs.csv        one row per trained epoch (EPOCH_COLUMNS), appended after every epoch
  best_model.keras  the best trial's model at its best epoch
  best_hparams.json that trial's hyperparameters
  models/           trial-<id>.keras: the models of the Pareto front's trials (--objectives),
                    kept as the front changes, so `export --trial N` can ship any of them
  predictions/      per-image predicted probabilities (float32): <split>-trial-<id>.npy holds a
                    trial's, at its kept epoch, in the order of <split>-images.json, the split's
                    image files and true labels (validation for every complete trial, test for
                    the best model only)

Every write but an epoch's goes to a temporary file that is then renamed over the old one, so a
reader (or a resumed run) never sees a half-written file. An epoch is one line appended to
epochs.csv (rewriting the file made each epoch cost time proportional to the whole run); a line
a kill cut short is ignored by readers and dropped by the next writer, so a crash loses at most
the epoch in progress.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from search.atomic import atomic_write
from search.errors import UsageError
from search.pareto import front_ids
from search.ranking import clean_value, rank_trials
from search.schema import (
    EPOCH_COLUMNS,
    FINISHED_STATUSES,
    HP_PREFIX,
    INTEGER_COLUMNS,
    INTERVAL_SPLITS,
    LOST_WORKER,
    PARETO_COLUMN,
    RENAMED_COLUMNS,
    TRIAL_COLUMNS,
    TrialStatus,
)
from search.stats import accuracy_interval
from search.store_files import ModelFiles, PredictionFiles


def _renamed(row: dict) -> dict:
    """`row` with RENAMED_COLUMNS under their new names (a value already there wins)."""
    for old, new in RENAMED_COLUMNS.items():
        if old in row:
            value = row.pop(old)
            if row.get(new) is None:
                row[new] = value
    return row


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock shared by the processes of this machine, held for the block."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class RunStore(PredictionFiles, ModelFiles):
    """Reads always come from disk and every change is made under an exclusive lock on the run
    directory, so several worker processes can share one run (as Optuna workers do)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.run_json = self.run_dir / "run.json"
        self.trials_csv = self.run_dir / "trials.csv"
        self.epochs_csv = self.run_dir / "epochs.csv"
        self.best_model_path = self.run_dir / "best_model.keras"
        self.best_hparams_path = self.run_dir / "best_hparams.json"
        self.predictions_dir = self.run_dir / "predictions"
        self.models_dir = self.run_dir / "models"

    @staticmethod
    def _read_rows(path: Path) -> list[dict]:
        if not path.exists():
            return []
        text = path.read_text(encoding="utf-8")
        # Every line is written whole with its newline, so text after the last newline is an
        # epoch line a kill cut short (appends are not atomic): that epoch was never recorded.
        text = text[: text.rfind("\n") + 1]
        if not text:
            return []
        frame = pd.read_csv(io.StringIO(text)).astype(object)
        return [{k: clean_value(v) for k, v in row.items()} for row in frame.to_dict("records")]

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.run_dir / ".store.lock"):
            yield

    @contextmanager
    def _rows(self) -> Iterator[dict[int, dict]]:
        """Trial rows by id, re-read under the lock and written back to trials.csv after."""
        with self._locked():
            trials = {r["trial_id"]: r for r in self._read_rows(self.trials_csv)}
            yield trials
            atomic_write(
                self.trials_csv, lambda p: self._trial_frame(trials).to_csv(p, index=False)
            )

    def _write_epochs(self, epochs: list[dict]) -> None:
        """Rewrite epochs.csv whole (the caller holds the lock)."""
        atomic_write(self.epochs_csv, lambda p: self._epoch_frame(epochs).to_csv(p, index=False))

    def _epoch_file_current(self) -> bool:
        """Whether epochs.csv exists, has the current header and ends with a whole line (the
        caller holds the lock): then an epoch can be appended to it."""
        try:
            with open(self.epochs_csv, "rb") as handle:
                header = handle.readline().decode("utf-8").rstrip("\n")
                handle.seek(0, os.SEEK_END)
                if handle.tell() == 0:
                    return False
                handle.seek(-1, os.SEEK_END)
                whole = handle.read(1) == b"\n"
        except FileNotFoundError:
            return False
        return whole and header == ",".join(EPOCH_COLUMNS)

    @contextmanager
    def exclusive_run(self) -> Iterator[None]:
        """One search process per run directory. The lock dies with its process, so a crashed
        run never leaves a stale lock behind; the file names its holder for the message."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        lock = self.run_dir / ".run.lock"
        with open(lock, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                raise UsageError(
                    f"{self.run_dir} is in use by process {holder}; wait for it to finish "
                    f"or pick another --name"
                ) from None
            try:  # unbuffered, so a full disk fails here, naming the file, and not at close
                os.ftruncate(handle.fileno(), 0)
                os.pwrite(handle.fileno(), f"{os.getpid()}\n".encode(), 0)
            except OSError as error:
                raise OSError(error.errno, error.strerror, str(lock)) from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def exists(self) -> bool:
        return self.run_json.exists()

    def create(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)

    # run.json
    def write_run_info(self, info: dict) -> None:
        text = json.dumps(info, indent=2, default=str)
        atomic_write(self.run_json, lambda p: p.write_text(text, encoding="utf-8"))

    def read_run_info(self) -> dict:
        return json.loads(self.run_json.read_text(encoding="utf-8"))

    # trials.csv and epochs.csv
    def trials(self) -> pd.DataFrame:
        return self._trial_frame({r["trial_id"]: r for r in self._read_rows(self.trials_csv)})

    def epochs(self) -> pd.DataFrame:
        return self._epoch_frame(self._read_rows(self.epochs_csv))

    @classmethod
    def _trial_frame(cls, trials: dict[int, dict]) -> pd.DataFrame:
        rows = sorted(map(_renamed, trials.values()), key=lambda r: r["trial_id"])
        columns = set(TRIAL_COLUMNS).union(*[r.keys() for r in rows])
        frame = pd.DataFrame(rows, columns=cls._column_order(columns))
        return frame.astype({c: "Int64" for c in INTEGER_COLUMNS})

    @staticmethod
    def _epoch_frame(epochs: list[dict]) -> pd.DataFrame:
        return pd.DataFrame(epochs, columns=EPOCH_COLUMNS)

    def begin_trial(self, trial_id: int, hparams: dict) -> None:
        """Mark a trial running. A retried trial (after a crash) starts its epoch history anew:
        the one change that rewrites epochs.csv, and only when that trial has rows there (or
        the file is yet to be made: it exists, with its header, once a trial has begun)."""
        with self._rows() as trials:
            epochs = self._read_rows(self.epochs_csv)
            kept = [r for r in epochs if r["trial_id"] != trial_id]
            if len(kept) < len(epochs) or not self.epochs_csv.exists():
                self._write_epochs(kept)
            row = {"trial_id": trial_id, "status": TrialStatus.RUNNING}
            trials[trial_id] = row | {f"{HP_PREFIX}{k}": clean_value(v) for k, v in hparams.items()}

    def append_epoch(self, row: dict) -> None:
        """Append one line to epochs.csv, synced to disk before the lock is let go."""
        values = {c: clean_value(row.get(c)) for c in EPOCH_COLUMNS}
        with self._locked():
            if not self._epoch_file_current():
                # New, older-headed, or ending in a torn line: rewritten whole once (readers
                # never see a file without its header), then appended to.
                self._write_epochs([*self._read_rows(self.epochs_csv), values])
                return
            line = io.StringIO()
            # Formatted as pandas' to_csv writes a row (None as empty), so both read the same.
            csv.writer(line, lineterminator="\n").writerow(
                "" if v is None else v for v in values.values()
            )
            with open(self.epochs_csv, "a", encoding="utf-8") as handle:
                handle.write(line.getvalue())
                handle.flush()
                os.fsync(handle.fileno())

    def finish_trial(self, trial_id: int, results: dict, hparams: dict | None = None) -> None:
        """Record a trial's outcome (status, metrics, error) on its row, with the
        hyperparameters it ended with (an Optuna trial samples them while building), and the
        95% intervals of its accuracies."""
        with self._rows() as trials:
            hp = {f"{HP_PREFIX}{k}": v for k, v in (hparams or {}).items()}
            trials[trial_id].update({k: clean_value(v) for k, v in (hp | results).items()})
            self._add_intervals([trials[trial_id]])
            self._mark_pareto(trials)

    def replace_all(self, trial_rows: list[dict], epoch_rows: list[dict]) -> None:
        """Rewrite both tables, as when rebuilding the store from an Optuna study."""
        with self._rows() as trials:
            trials.clear()
            trials.update(
                {r["trial_id"]: {k: clean_value(v) for k, v in r.items()} for r in trial_rows}
            )
            self._write_epochs(
                [{c: clean_value(r.get(c)) for c in EPOCH_COLUMNS} for r in epoch_rows]
            )
            self._add_intervals(trials.values())
            self._mark_pareto(trials)

    def set_test_accuracy(self, trial_id: int, accuracy: float) -> None:
        """Only the trial whose model is best_model.keras carries a test score."""
        with self._rows() as trials:
            for row in trials.values():
                row["test_accuracy"] = (
                    clean_value(accuracy) if row["trial_id"] == trial_id else None
                )
            self._add_intervals(trials.values())

    def objectives(self) -> list[str]:
        """The run's --objectives (none for a single-objective run)."""
        return list(self.read_run_info().get("objectives") or []) if self.exists() else []

    def pareto_front(self) -> set[int]:
        """The trial ids on the Pareto front of the run's --objectives."""
        return front_ids(self.trials(), self.objectives())

    def _mark_pareto(self, trials: dict[int, dict]) -> None:
        """Set every row's PARETO_COLUMN, for a multi-objective run (the caller holds the
        lock): a trial's result can put it on the front and push others off it."""
        objectives = self.objectives()
        if len(objectives) < 2:
            return
        front = front_ids(self._trial_frame(trials), objectives)
        for row in trials.values():
            row[PARETO_COLUMN] = row["trial_id"] in front

    def split_size(self, split: str) -> int | None:
        """Usable images of a split, from run.json's counts; None before run.json has them."""
        if not self.run_json.exists():
            return None
        counts = self.read_run_info().get("counts", {}).get(split)
        return sum(counts.values()) if counts else None

    def _add_intervals(self, rows: Iterable[dict]) -> None:
        """Fill each row's <accuracy>_low/_high (Wilson, 95%) from its accuracies, so every
        writer of an accuracy leaves its interval beside it."""
        sizes = {split: self.split_size(split) for split in INTERVAL_SPLITS.values()}
        for row in rows:
            for column, split in INTERVAL_SPLITS.items():
                low, high = accuracy_interval(row.get(column), sizes[split])
                row[f"{column}_low"], row[f"{column}_high"] = low, high

    @staticmethod
    def _column_order(columns) -> list[str]:
        hp = sorted(c for c in columns if c.startswith(HP_PREFIX))
        extra = sorted(c for c in columns if c not in TRIAL_COLUMNS and c not in hp)
        return TRIAL_COLUMNS[:2] + hp + TRIAL_COLUMNS[2:] + extra

    def completed(self, trial_id: int) -> pd.Series | None:
        """The stored row of a trial that completed, or None."""
        trials = self.trials()
        row = trials[(trials["trial_id"] == trial_id) & (trials["status"] == TrialStatus.COMPLETE)]
        return None if row.empty else row.iloc[0]

    def objective(self) -> str:
        """The run's --objective (runs from before it existed ranked by val_accuracy)."""
        return (
            self.read_run_info().get("objective", "val_accuracy")
            if self.exists()
            else ("val_accuracy")
        )

    def best_trial(self) -> pd.Series | None:
        ranked = rank_trials(self.trials(), self.objective())
        return None if ranked.empty else ranked.iloc[0]

    def finished_count(self) -> int:
        """Finished trials as the trial budget counts them: not those of lost workers."""
        trials = self.trials()
        lost = trials["error"].fillna("").astype(str).str.startswith(LOST_WORKER)
        return int((trials["status"].isin(FINISHED_STATUSES) & ~lost).sum())
