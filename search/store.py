"""The run store: the only code that writes a run directory, and the schema the report reads.

runs/<name>/
  run.json          command line, space, back end, data, classes, counts, skipped files, versions
  trials.csv        one row per trial (TRIAL_COLUMNS, with one hp_<name> column per hyperparameter)
  epochs.csv        one row per trained epoch (EPOCH_COLUMNS), written after every epoch
  best_model.keras  the best trial's model at its best epoch
  best_hparams.json that trial's hyperparameters

Every write goes to a temporary file that is then renamed over the old one, so a reader (or a
resumed run) never sees a half-written file, and a crash loses at most the epoch in progress.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd

TRIAL_COLUMNS = [
    "trial_id",
    "status",
    "best_epoch",
    "val_accuracy",
    "val_loss",
    "train_accuracy",
    "gap",
    "test_accuracy",
    "duration_s",
    "n_params",
    "error",
]
EPOCH_COLUMNS = [
    "trial_id",
    "epoch",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "seconds",
    "phase",
]
INTEGER_COLUMNS = ("trial_id", "best_epoch", "n_params")
STATUSES = ("complete", "failed", "pruned", "running")
HP_PREFIX = "hp_"


def rank_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """Complete trials, best first: highest val accuracy, then smaller gap, then lower val loss."""
    done = trials[trials["status"] == "complete"]
    return done.sort_values(
        ["val_accuracy", "gap", "val_loss", "trial_id"],
        ascending=[False, True, True, True],
        kind="stable",
    )


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _clean(value):
    """JSON- and CSV-friendly scalars: numpy types to Python, NaN to None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class RunStore:
    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.run_json = self.run_dir / "run.json"
        self.trials_csv = self.run_dir / "trials.csv"
        self.epochs_csv = self.run_dir / "epochs.csv"
        self.best_model_path = self.run_dir / "best_model.keras"
        self.best_hparams_path = self.run_dir / "best_hparams.json"
        self._trials = {r["trial_id"]: r for r in self._read_rows(self.trials_csv)}
        self._epochs = self._read_rows(self.epochs_csv)

    @staticmethod
    def _read_rows(path: Path) -> list[dict]:
        if not path.exists():
            return []
        frame = pd.read_csv(path).astype(object)
        return [{k: _clean(v) for k, v in row.items()} for row in frame.to_dict("records")]

    def exists(self) -> bool:
        return self.run_json.exists()

    def create(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)

    # run.json
    def write_run_info(self, info: dict) -> None:
        text = json.dumps(info, indent=2, default=str)
        _atomic_write(self.run_json, lambda p: p.write_text(text, encoding="utf-8"))

    def read_run_info(self) -> dict:
        return json.loads(self.run_json.read_text(encoding="utf-8"))

    # trials.csv and epochs.csv
    def trials(self) -> pd.DataFrame:
        rows = sorted(self._trials.values(), key=lambda r: r["trial_id"])
        columns = set(TRIAL_COLUMNS).union(*[r.keys() for r in rows])
        frame = pd.DataFrame(rows, columns=self._column_order(columns))
        return frame.astype({c: "Int64" for c in INTEGER_COLUMNS})

    def epochs(self) -> pd.DataFrame:
        return pd.DataFrame(self._epochs, columns=EPOCH_COLUMNS)

    def begin_trial(self, trial_id: int, hparams: dict) -> None:
        """Mark a trial running. A retried trial (after a crash) starts its epoch history anew."""
        self._epochs = [r for r in self._epochs if r["trial_id"] != trial_id]
        self._write_epochs()
        row = {"trial_id": trial_id, "status": "running"}
        self._trials[trial_id] = row | {f"{HP_PREFIX}{k}": _clean(v) for k, v in hparams.items()}
        self._write_trials()

    def append_epoch(self, row: dict) -> None:
        self._epochs.append({c: _clean(row.get(c)) for c in EPOCH_COLUMNS})
        self._write_epochs()

    def finish_trial(self, trial_id: int, results: dict) -> None:
        """Record a trial's outcome (status, metrics, error) on its row."""
        self._trials[trial_id].update({k: _clean(v) for k, v in results.items()})
        self._write_trials()

    def set_test_accuracy(self, trial_id: int, accuracy: float) -> None:
        """Only the trial whose model is best_model.keras carries a test score."""
        for row in self._trials.values():
            row["test_accuracy"] = _clean(accuracy) if row["trial_id"] == trial_id else None
        self._write_trials()

    @staticmethod
    def _column_order(columns) -> list[str]:
        hp = sorted(c for c in columns if c.startswith(HP_PREFIX))
        extra = sorted(c for c in columns if c not in TRIAL_COLUMNS and c not in hp)
        return TRIAL_COLUMNS[:2] + hp + TRIAL_COLUMNS[2:] + extra

    def _write_trials(self) -> None:
        _atomic_write(self.trials_csv, lambda p: self.trials().to_csv(p, index=False))

    def _write_epochs(self) -> None:
        _atomic_write(self.epochs_csv, lambda p: self.epochs().to_csv(p, index=False))

    def best_trial(self) -> pd.Series | None:
        ranked = rank_trials(self.trials())
        return None if ranked.empty else ranked.iloc[0]

    def finished_count(self) -> int:
        return sum(r["status"] in ("complete", "failed", "pruned") for r in self._trials.values())

    # best model
    def save_best_model(self, model, hparams: dict, trial_id: int) -> None:
        """Save atomically: the old best model stays loadable until the new one is complete."""
        tmp = self.run_dir / ".best_model.tmp.keras"
        model.save(tmp)
        os.replace(tmp, self.best_model_path)
        text = json.dumps(
            {"trial_id": trial_id, "hyperparameters": hparams}, indent=2, default=_clean
        )
        _atomic_write(self.best_hparams_path, lambda p: p.write_text(text, encoding="utf-8"))

    def read_best_hparams(self) -> dict:
        return json.loads(self.best_hparams_path.read_text(encoding="utf-8"))
