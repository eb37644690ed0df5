"""The files of a run beside its tables: per-image predictions (predictions/) and models
(best_model.keras, staged and kept trial models). Mixed into search.store.RunStore, the only
writer of a run directory, whose lock and tables they use."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from search.atomic import atomic_write
from search.errors import UsageError
from search.ranking import clean_value, rank_trials
from search.schema import CONFIRM_COLUMNS, HP_PREFIX, TrialStatus


class PredictionFiles:
    """Per-image predictions of trials and the split's images in their order."""

    # predictions/
    def _predictions_path(self, trial_id: int, split: str) -> Path:
        return self.predictions_dir / f"{split}-trial-{trial_id}.npy"

    def save_predictions(self, trial_id: int, split: str, probabilities: np.ndarray) -> None:
        """A trial's predicted probabilities on a split, one per image in the split's order:
        shape (n,), P(class 1), for one sigmoid unit (an (n, 1) output is flattened), or
        (n, classes) for softmax; float32, so 800 images take 3 KB."""
        array = np.asarray(probabilities, dtype=np.float32)
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        self.predictions_dir.mkdir(parents=True, exist_ok=True)

        def write(path: Path) -> None:
            with open(path, "wb") as handle:  # np.save would append .npy to a path
                np.save(handle, array)

        atomic_write(self._predictions_path(trial_id, split), write)

    def predictions(self, trial_id: int, split: str) -> np.ndarray | None:
        """What `save_predictions` stored, or None (a run from before predictions were kept,
        or a trial that did not complete)."""
        path = self._predictions_path(trial_id, split)
        return np.load(path) if path.exists() else None

    def save_split_images(self, split: str, files: list[str], labels: np.ndarray) -> None:
        """The split's image files (absolute paths) and true class indices, in the order of
        every prediction file of that split."""
        text = json.dumps(
            {"files": [os.path.abspath(f) for f in files], "labels": [int(y) for y in labels]}
        )
        self.predictions_dir.mkdir(parents=True, exist_ok=True)
        path = self.predictions_dir / f"{split}-images.json"
        atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))

    def split_images(self, split: str) -> tuple[list[str], np.ndarray] | None:
        """The files and labels `save_split_images` stored, or None."""
        path = self.predictions_dir / f"{split}-images.json"
        if not path.exists():
            return None
        stored = json.loads(path.read_text(encoding="utf-8"))
        return stored["files"], np.asarray(stored["labels"], dtype=int)


class ModelFiles:
    """best_model.keras (staged, promoted, reconciled), the kept models of the Pareto front,
    and the best trial's hyperparameters."""

    # best model
    def _staged(self, trial_id: int) -> Path:
        return self.run_dir / f".trial_{trial_id}.keras"

    def would_lead(self, trial_id: int, results: dict) -> bool:
        """Whether a complete trial with these results would rank first now. Others never
        become best later (the best only improves), so their models need not be saved."""
        rows = [r for r in self.trials().to_dict("records") if r["trial_id"] != trial_id]
        rows.append(results | {"trial_id": trial_id, "status": TrialStatus.COMPLETE})
        ranked = rank_trials(pd.DataFrame(rows), self.objective())
        return int(ranked.iloc[0]["trial_id"]) == trial_id

    def stage_model(self, model, trial_id: int) -> None:
        """Keep a finished trial's model until `promote` decides whether it is the best."""
        atomic_write(self._staged(trial_id), model.save)

    def promote(self, trial_id: int, hparams: dict) -> bool:
        """Make a staged model best_model.keras if its trial now ranks first, else drop it.
        Decided under the lock, so concurrent workers never overwrite a better model; the old
        file stays loadable until the rename."""
        staged = self._staged(trial_id)
        with self._locked():
            if not staged.exists():
                return False
            best = self.best_trial()
            if best is None or int(best["trial_id"]) != trial_id:
                staged.unlink()
                return False
            os.replace(staged, self.best_model_path)
            text = json.dumps(
                {"trial_id": trial_id, "hyperparameters": hparams}, indent=2, default=clean_value
            )
            atomic_write(self.best_hparams_path, lambda p: p.write_text(text, encoding="utf-8"))
            return True

    def reconcile(self) -> None:
        """After a crash: promote staged models of trials that completed, drop the others."""
        trials = self.trials().set_index("trial_id")
        for staged in self.run_dir.glob(".trial_*.keras"):
            trial_id = int(staged.name.split("_")[1].split(".")[0])
            if trial_id in trials.index and trials.loc[trial_id, "status"] == TrialStatus.COMPLETE:
                row = trials.loc[trial_id]
                hparams = {
                    k[len(HP_PREFIX) :]: clean_value(v)
                    for k, v in row.items()
                    if k.startswith(HP_PREFIX) and not pd.isna(v)
                }
                self.promote(trial_id, hparams)
            else:
                staged.unlink()

    # models/ of the Pareto front
    def trial_model_path(self, trial_id: int) -> Path:
        """Where a kept trial's model is (it exists only while the trial is kept)."""
        return self.models_dir / f"trial-{trial_id}.keras"

    def kept_trials(self) -> list[int]:
        """Trials with a model on disk: the best one and those kept in models/."""
        kept = {int(p.stem.split("-")[1]) for p in self.models_dir.glob("trial-*.keras")}
        if self.best_model_path.exists():
            kept.add(int(self.read_best_hparams()["trial_id"]))
        return sorted(kept)

    def model_path(self, trial_id: int | None = None) -> Path:
        """The model file of `trial_id` (the best trial's when None), or a one-line UsageError
        naming the trials whose models were kept."""
        if trial_id is None or (
            self.best_model_path.exists() and self.read_best_hparams()["trial_id"] == trial_id
        ):
            if not self.best_model_path.exists():
                raise UsageError(
                    f"{self.run_dir} has no best_model.keras: no trial of it has completed"
                )
            return self.best_model_path
        if self.trial_model_path(trial_id).exists():
            return self.trial_model_path(trial_id)
        kept = ", ".join(map(str, self.kept_trials())) or "none"
        raise UsageError(
            f"trial {trial_id} of {self.run_dir} has no kept model (kept: {kept}); only the best "
            f"trial's and, with --objectives, the Pareto front's models are kept"
        )

    def keep_models(self, model, trial_id: int, front: Iterable[int]) -> None:
        """Save a trial's model if it is on the Pareto `front` (the trial ids on it now) and
        delete the kept models of trials that left it."""
        front = set(front)
        with self._locked():
            if trial_id in front:
                self.models_dir.mkdir(exist_ok=True)
                atomic_write(self.trial_model_path(trial_id), model.save)
            for path in self.models_dir.glob("trial-*.keras"):
                if int(path.stem.split("-")[1]) not in front:
                    path.unlink()

    def read_best_hparams(self) -> dict:
        return json.loads(self.best_hparams_path.read_text(encoding="utf-8"))

    def save_model(self, model, filename: str) -> Path:
        """Another model of the run beside best_model.keras (the refit one), written whole or
        not at all."""
        path = self.run_dir / filename
        atomic_write(path, model.save)
        return path

    def set_confirmation(self, summary: pd.DataFrame, runs: pd.DataFrame) -> None:
        """Record --confirm-top's runs in confirm.csv, and each finalist's mean, spread and run
        count on its trials.csv row, which the ranking then follows."""
        atomic_write(self.run_dir / "confirm.csv", lambda p: runs.to_csv(p, index=False))
        by_trial = summary.set_index("trial_id").to_dict("index")
        with self._rows() as trials:
            for trial_id, row in trials.items():
                values = by_trial.get(trial_id, dict.fromkeys(CONFIRM_COLUMNS))
                row.update({k: clean_value(values[k]) for k in CONFIRM_COLUMNS})

    def adopt_best(self, model_path: Path, trial_id: int, hparams: dict) -> None:
        """Make another run's model of `trial_id` (a confirmation run's) best_model.keras."""
        with self._locked():
            atomic_write(self.best_model_path, lambda p: shutil.copyfile(model_path, p))
            text = json.dumps(
                {"trial_id": trial_id, "hyperparameters": hparams}, indent=2, default=clean_value
            )
            atomic_write(self.best_hparams_path, lambda p: p.write_text(text, encoding="utf-8"))
