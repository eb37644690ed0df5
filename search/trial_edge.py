"""The edge between a back end and the trial runner: one value asks for a trial
(`TrialRequest`), one value answers (`TrialOutcome`), and a read-only `RunView` is all a back
end sees of the run its trials go to. A third back end needs nothing else."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from search.schema import OBJECTIVES

if TYPE_CHECKING:
    import keras
    import pandas as pd

    from search.checkpoint import TrialCheckpoints
    from search.settings import TrainSettings
    from search.store import RunStore


@dataclass
class TrialResult:
    """A trial's figures at its kept epoch, as its row of trials.csv holds them."""

    trial_id: int
    status: str
    duration_s: float
    error: str | None = None
    best_epoch: int | None = None
    val_accuracy: float | None = None
    val_loss: float | None = None
    val_auc: float | None = None
    val_f1: float | None = None
    train_accuracy_clean: float | None = None
    train_loss_clean: float | None = None
    gap_clean: float | None = None
    train_accuracy_fit: float | None = None
    gap_fit: float | None = None
    n_params: int | None = None
    batch_size: int | None = None
    features: str | None = None  # frozen-base features: "computed", "memory" or "disk"
    head_from_trial: int | None = None  # a fine-tune trial's reused phase-one head
    rss_mb: float | None = None  # the process's resident memory when the trial ended
    jit: bool | None = None  # whether every phase it trained was XLA-compiled
    tflite_kb: float | None = None  # --measure-deploy: schema.DEPLOY_COLUMNS
    latency_ms: float | None = None
    latency_iqr_ms: float | None = None
    deploy_s: float | None = None
    deploy_format: str | None = None  # the file measured: "tflite", or "onnx" without TensorFlow
    deploy_error: str | None = None  # why the model could not be converted to it
    deploy_same_as: int | None = None  # the trial of the same inference graph measured first

    def row(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "trial_id"}


@dataclass(frozen=True)
class TrialRequest:
    """What a back end asks of one trial.

    `hp` holds its hyperparameters (Keras Tuner's `HyperParameters`, whichever back end);
    `epochs` to train (None: the run's --epochs) from `initial_epoch`, starting from
    `initial_weights` (Hyperband's continued trials). A back end passes its pruning callbacks
    in `extra_callbacks` and the exceptions they raise in `prune_on`; `on_epoch` sees every
    recorded epoch row; `on_result` sees the outcome and hyperparameter values before the store
    does, so a back end that keeps its own record (an Optuna study) never lags behind it. The
    trial goes on from the epoch checkpoint that it, or the trial `resume_from` it retries,
    left (search/checkpoint.py).
    """

    trial_id: int
    hp: object
    epochs: int | None = None
    initial_epoch: int = 0
    initial_weights: Path | None = None
    extra_callbacks: Sequence[keras.callbacks.Callback] = field(default=())
    prune_on: tuple[type[BaseException], ...] = ()
    on_epoch: Callable[[dict], None] | None = None
    on_result: Callable[[TrialResult, dict], None] | None = None
    resume_from: int | None = None


class TrialOutcome(NamedTuple):
    """What a trial answers: its result, and its model with the kept weights when complete."""

    result: TrialResult
    model: keras.Model | None


class TrialHook:
    """The runner's extension point around each trial's record, as Keras callbacks are a fit's:
    override what you need. `trained` runs before the outcome is recorded, so what it adds to
    the result or makes of its status (search/deployment_hook.py: what the model costs where
    it ships, and the limits) is what every back end and the store see; `recorded` runs once
    the store holds it (the report's refresh)."""

    def trained(self, result: TrialResult, model: keras.Model | None) -> None:
        """Look at `result` and the trained `model` (None when no model was built)."""

    def recorded(self, result: TrialResult) -> None:
        """The trial's outcome is in the store."""


class RunView:
    """What a back end may read of the run: its objective, budget and finished trials. Read
    only, so the store, the checkpoints and the settings stay the runner's."""

    def __init__(
        self, store: RunStore, checkpoints: TrialCheckpoints, settings: TrainSettings
    ) -> None:
        self._store, self._checkpoints, self._settings = store, checkpoints, settings

    @property
    def run_dir(self) -> Path:
        return self._store.run_dir

    @property
    def objective(self) -> str:
        """--objective: what ranks the trials and what the back end optimises."""
        return self._settings.objective

    @property
    def direction(self) -> str:
        """The objective's direction, "max" or "min" (schema.OBJECTIVES)."""
        return OBJECTIVES[self._settings.objective]

    @property
    def objectives(self) -> tuple[str, ...]:
        """--objectives of a multi-objective search, or ()."""
        return self._settings.objectives

    @property
    def limits(self) -> dict[str, float]:
        """The deployment limits, by the trials.csv column each bounds."""
        return dict(self._settings.limits)

    @property
    def epochs(self) -> int:
        return self._settings.epochs

    def completed(self, trial_id: int) -> pd.Series | None:
        """The stored row of a trial that finished complete, or None."""
        return self._store.completed(trial_id)

    def has_checkpoint(self, trial_id: int) -> bool:
        """Whether a trial cut off left an epoch checkpoint its retry can go on from."""
        return self._checkpoints.exists(trial_id)

    def trials(self) -> pd.DataFrame:
        """trials.csv as the store reads it."""
        return self._store.trials()
