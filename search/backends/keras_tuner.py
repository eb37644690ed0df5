"""Keras Tuner back end: a Keras Tuner oracle proposes, our trial runner trains and records.

The oracle state lives in runs/<name>/kt/, so rerunning the same run resumes it
(`overwrite=False`): finished trials are kept and a trial cut off by a crash is retried.
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import keras_tuner as kt

from search import compat
from search.backends import ALGORITHMS
from search.errors import Restart, SearchStopped
from search.trial import TrialRunner
from spaces.context import SpaceContext

OBJECTIVE = kt.Objective("val_accuracy", direction="max")


class RestartSearch(kt.errors.FatalError, Restart):
    """Restart that Keras Tuner lets through, leaving the trial it just created to be retried
    by the resumed run, as after a crash."""


class SpaceHyperModel(kt.HyperModel):
    """A space module as a Keras Tuner HyperModel (the oracle builds it to learn the space)."""

    def __init__(self, space: ModuleType, ctx: SpaceContext):
        super().__init__(name=space.__name__.rsplit(".", 1)[-1])
        self.space, self.ctx = space, ctx

    def build(self, hp):
        return self.space.build(hp, self.ctx)


def declared_space(space: ModuleType, ctx: SpaceContext) -> kt.HyperParameters:
    """Every hyperparameter a space declares, conditional ones included, found the way Keras
    Tuner finds them (building the model until every conditional scope has been active)."""
    return _declared(space, ctx).copy()


@functools.cache  # each discovery builds the model several times
def _declared(space: ModuleType, ctx: SpaceContext) -> kt.HyperParameters:
    oracle = kt.oracles.RandomSearchOracle(objective=OBJECTIVE, max_trials=1)
    # Pretrained weights never change which hyperparameters are declared; loading them would.
    hypermodel = SpaceHyperModel(space, dataclasses.replace(ctx, weights=None))
    with tempfile.TemporaryDirectory() as scratch:
        kt.engine.base_tuner.BaseTuner(oracle, hypermodel, directory=scratch, overwrite=True)
    return oracle.get_space()


ORACLES = {
    "random": kt.oracles.RandomSearchOracle,
    "bayesian": kt.oracles.BayesianOptimizationOracle,
    "grid": kt.oracles.GridSearchOracle,
}


def make_oracle(
    algorithm: str,
    max_trials: int,
    epochs: int,
    seed: int,
    max_consecutive_failures: int,
    hyperparameters: kt.HyperParameters | None = None,
    queued: Sequence[dict] = (),
) -> kt.Oracle:
    """The oracle, its first trials taking the `queued` values; `hyperparameters` is a space
    with pinned values (search.fixed)."""
    common = {
        "objective": OBJECTIVE,
        "seed": seed,
        "max_consecutive_failed_trials": max_consecutive_failures,
        "hyperparameters": hyperparameters,
        "queued": queued,
    }
    if algorithm == "hyperband":  # its budget is epochs, not trials
        return _queueing(kt.oracles.HyperbandOracle)(max_epochs=epochs, factor=3, **common)
    if algorithm in ORACLES:
        return _queueing(ORACLES[algorithm])(max_trials=max_trials, **common)
    raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")


@functools.cache  # one subclass per oracle class
def _queueing(oracle_class: type[kt.Oracle]) -> type[kt.Oracle]:
    """`oracle_class` whose first trials take the `queued` values (defaults fill the rest), then
    propose as usual: Keras Tuner's counterpart of Optuna's enqueue_trial, through
    `populate_space`, the documented override point of a custom Oracle. Counting the oracle's
    trials makes this resume-safe: a resumed run does not queue them again."""

    class QueueingOracle(oracle_class):
        def __init__(self, *args, queued: Sequence[dict] = (), **kwargs):
            super().__init__(*args, **kwargs)
            self.queued = list(queued)

        def populate_space(self, trial_id: str) -> dict:
            index = len(self.trials)  # the trial being created is not registered yet
            if index >= len(self.queued):
                return super().populate_space(trial_id)
            hp = self.get_space()
            hp.values.update(self.queued[index])
            hp.ensure_active_values()
            return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": hp.values}

    QueueingOracle.__name__ = QueueingOracle.__qualname__ = f"Queueing{oracle_class.__name__}"
    return QueueingOracle


class StoreTuner(compat.KnownSpaceTuner):
    """Runs each trial the oracle creates through the shared trial runner.

    Hyperband trials carry `tuner/epochs` and `tuner/initial_epoch`; a trial that continues an
    earlier one (`tuner/trial_id`) starts from that trial's saved weights, as Keras Tuner's own
    Hyperband tuner does.
    """

    def __init__(
        self, oracle: kt.Oracle, hypermodel: SpaceHyperModel, runner: TrialRunner, directory: Path
    ):
        self.runner = runner
        super().__init__(
            oracle, hypermodel, directory=str(directory), project_name="kt", overwrite=False
        )

    def known_space(self) -> kt.HyperParameters:
        # The space was learnt once per process (declared_space); building the model several
        # times again to learn it, as Keras Tuner does, costs seconds per search.
        return declared_space(self.hypermodel.space, self.hypermodel.ctx)

    def _checkpoint(self, trial_id: str) -> Path:
        return Path(self.get_trial_dir(trial_id)) / "checkpoint.weights.h5"

    def run_trial(self, trial, *args, **kwargs):
        try:
            self.runner.check_memory()
        except Restart as restart:
            raise RestartSearch(str(restart)) from None
        hp = trial.hyperparameters
        done = self.runner.store.completed(int(trial.trial_id))
        if done is not None:
            # Finished before a crash that came before Keras Tuner saved it: never train twice.
            return {"val_accuracy": done["val_accuracy"], "val_loss": done["val_loss"]}
        parent = hp.values.get("tuner/trial_id")
        # Hyperband's tuner/epochs is the epoch to reach, as in fit(epochs=, initial_epoch=);
        # the runner takes the number of epochs to train.
        initial_epoch = hp.values.get("tuner/initial_epoch", 0)
        target = hp.values.get("tuner/epochs")
        result, model = self.runner.run(
            int(trial.trial_id),
            hp,
            epochs=None if target is None else target - initial_epoch,
            initial_epoch=initial_epoch,
            initial_weights=self._checkpoint(parent) if parent else None,
        )
        if result.status != "complete":
            raise kt.errors.FailedTrialError(result.error)
        if "tuner/epochs" in hp.values:
            model.save_weights(self._checkpoint(trial.trial_id))
        return {"val_accuracy": result.val_accuracy, "val_loss": result.val_loss}


def search(
    space: ModuleType,
    ctx: SpaceContext,
    runner: TrialRunner,
    algorithm: str,
    max_trials: int,
    seed: int,
    max_consecutive_failures: int,
    verbose: bool,
    queued: list[dict] = (),
    hyperparameters: kt.HyperParameters | None = None,
) -> None:
    oracle = make_oracle(
        algorithm,
        max_trials,
        runner.settings.epochs,
        seed,
        max_consecutive_failures,
        hyperparameters,
        queued,
    )
    tuner = StoreTuner(oracle, SpaceHyperModel(space, ctx), runner, runner.store.run_dir)
    try:
        tuner.search(verbose=1 if verbose else 0)
    except RuntimeError as error:
        if not compat.too_many_failures(error):
            raise
        failed = (
            runner.store.trials()
            .query("status == 'failed'")["error"]
            .tail(max_consecutive_failures)
        )
        raise SearchStopped(
            f"stopped after {max_consecutive_failures} failed trials in a row, most often with: "
            f"{failed.mode().iloc[0]}"
        ) from None
