"""Keras Tuner back end: a Keras Tuner oracle proposes, our trial runner trains and records.

The oracle state lives in runs/<name>/kt/, so rerunning the same run resumes it
(`overwrite=False`): finished trials are kept and a trial cut off by a crash is retried.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import keras_tuner as kt

from search import compat
from search.atomic import atomic_write
from search.backends import ALGORITHMS
from search.errors import Restart, SearchStopped, UsageError, find_write_fault, first_line
from search.fixed import grid_space
from search.schema import OBJECTIVES, TUNER_PREFIX, TrialStatus
from search.trial import TrialRunner
from search.trial_edge import TrialRequest
from spaces import as_hypermodel, declared_space

if TYPE_CHECKING:
    from search.config import SearchConfig
    from search.steps import PreparedRun


# What Keras Tuner's oracle is told of an infeasible trial (it has no constraints of its own).
WORST = {"val_accuracy": 0.0, "val_auc": 0.0, "val_f1": 0.0, "val_loss": 1e9}


def kt_objective(name: str) -> kt.Objective:
    """--objective as Keras Tuner's Objective, with its direction."""
    return kt.Objective(name, direction=OBJECTIVES[name])


OBJECTIVE = kt_objective("val_accuracy")  # the default, as the benchmarks use it


class RestartSearch(kt.errors.FatalError, Restart):
    """Restart that Keras Tuner lets through, leaving the trial it just created to be retried
    by the resumed run, as after a crash."""


class FaultedSearch(kt.errors.FatalError):
    """A write fault (its cause) that Keras Tuner lets through rather than failing the trial,
    which the resumed run retries, as after a crash."""


ORACLES = {
    "random": kt.oracles.RandomSearchOracle,
    "bayesian": kt.oracles.BayesianOptimizationOracle,
    "grid": kt.oracles.GridSearchOracle,
}


def make_oracle(
    algorithm: str,
    *,
    max_trials: int,
    epochs: int,
    seed: int,
    max_consecutive_failures: int,
    hyperparameters: kt.HyperParameters | None = None,
    queued: Sequence[dict] = (),
    objective: str = "val_accuracy",
    startup_trials: int | None = None,
) -> kt.Oracle:
    """The oracle, its first trials taking the `queued` values; `hyperparameters` is a space
    with pinned values (search.fixed); `startup_trials` is the bayesian oracle's
    num_initial_points (None: Keras Tuner's default)."""
    common = {
        "objective": kt_objective(objective),
        "seed": seed,
        "max_consecutive_failed_trials": max_consecutive_failures,
        "hyperparameters": hyperparameters,
        "queued": queued,
    }
    if algorithm == "hyperband":  # its budget is epochs, not trials
        return _queueing(kt.oracles.HyperbandOracle)(max_epochs=epochs, factor=3, **common)
    if algorithm == "bayesian":
        common["num_initial_points"] = startup_trials
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

    def __init__(self, oracle: kt.Oracle, runner: TrialRunner, directory: Path):
        self.runner = runner
        super().__init__(
            oracle,
            as_hypermodel(runner.space, runner.ctx),
            directory=str(directory),
            project_name="kt",
            overwrite=False,
        )

    def known_space(self) -> kt.HyperParameters:
        # The space was learnt once per process (declared_space); building the model several
        # times again to learn it, as Keras Tuner does, costs seconds per search.
        return declared_space(self.runner.space, self.runner.ctx)

    def _checkpoint(self, trial_id: str) -> Path:
        return Path(self.get_trial_dir(trial_id)) / "checkpoint.weights.h5"

    def fatal(self, error: Exception) -> Exception | None:
        """A write fault stops the search (the resume retries the trial), whether it came
        from the trial or from Keras Tuner's own state files."""
        return None if find_write_fault(error) is None else FaultedSearch(first_line(error))

    def run_trial(self, trial, *args, **kwargs) -> dict[str, float]:
        try:
            self.runner.check_memory()
        except Restart as restart:
            raise RestartSearch(str(restart)) from None
        hp = trial.hyperparameters
        done = self.runner.view.completed(int(trial.trial_id))
        if done is not None:
            # Finished before a crash that came before Keras Tuner saved it: never train twice.
            return self._metrics(done.to_dict())
        parent = hp.values.get(f"{TUNER_PREFIX}trial_id")
        # Hyperband's tuner/epochs is the epoch to reach, as in fit(epochs=, initial_epoch=);
        # the runner takes the number of epochs to train.
        initial_epoch = hp.values.get(f"{TUNER_PREFIX}initial_epoch", 0)
        target = hp.values.get(f"{TUNER_PREFIX}epochs")
        result, model = self.runner.run(
            TrialRequest(
                int(trial.trial_id),
                hp,
                epochs=None if target is None else target - initial_epoch,
                initial_epoch=initial_epoch,
                initial_weights=self._checkpoint(parent) if parent else None,
            )
        )
        if result.status == TrialStatus.INFEASIBLE:
            # Over a deployment limit: the oracle is told the worst score, so it moves away.
            return self._metrics(result.row() | WORST)
        if result.status != TrialStatus.COMPLETE:
            raise kt.errors.FailedTrialError(result.error)
        if f"{TUNER_PREFIX}epochs" in hp.values:
            atomic_write(self._checkpoint(trial.trial_id), model.save_weights)
        return self._metrics(result.row())

    def _metrics(self, figures: dict) -> dict[str, float]:
        """What the oracle is told of a trial: its figures at the kept epoch."""
        names = {"val_accuracy", "val_loss", self.runner.view.objective}
        return {name: figures[name] for name in names}


def check_options(config: SearchConfig) -> None:
    if config.workers > 1 or config.storage:
        raise UsageError(
            "--workers and --storage need --backend optuna; Keras Tuner runs in parallel "
            "through its chief/worker mode (see docs/workers.md)"
        )
    if config.multi_objective():
        raise UsageError(
            f"--objectives {','.join(config.objectives)}: Keras Tuner optimises one objective; "
            f"use --backend optuna for a multi-objective search"
        )
    if config.startup_trials is not None and config.algorithm != "bayesian":
        raise UsageError(
            f"--startup-trials is the bayesian oracle's random start; --algorithm "
            f"{config.algorithm} has none: pass --algorithm bayesian or leave it out"
        )


def grid(config: SearchConfig, declared: kt.HyperParameters) -> dict | None:
    """Keras Tuner walks its grid lazily: it is only sized, for the user to see what
    --max-trials covers."""
    return grid_space(declared) if config.algorithm == "grid" else None


def search(run: PreparedRun, runner: TrialRunner) -> None:
    config = run.config
    run_tuner(
        runner,
        algorithm=config.algorithm,
        max_trials=config.max_trials,
        seed=config.seed,
        max_consecutive_failures=config.max_consecutive_failures,
        verbose=config.verbose,
        queued=run.first_trials,
        hyperparameters=run.declared if run.fixed else None,
        startup_trials=config.startup_trials,
    )


def run_tuner(
    runner: TrialRunner,
    *,
    algorithm: str,
    max_trials: int,
    seed: int,
    max_consecutive_failures: int,
    verbose: bool = False,
    queued: Sequence[dict] = (),
    hyperparameters: kt.HyperParameters | None = None,
    startup_trials: int | None = None,
) -> None:
    """A Keras Tuner search of `runner`'s space, its trials trained by `runner`;
    `hyperparameters` is the space with --fix values pinned."""
    oracle = make_oracle(
        algorithm,
        max_trials=max_trials,
        epochs=runner.view.epochs,
        seed=seed,
        max_consecutive_failures=max_consecutive_failures,
        hyperparameters=hyperparameters,
        queued=queued,
        objective=runner.view.objective,
        startup_trials=startup_trials,
    )
    compat.atomic_keras_tuner_files()
    tuner = StoreTuner(oracle, runner, runner.view.run_dir)
    try:
        tuner.search(verbose=1 if verbose else 0)
    except RuntimeError as error:
        if not compat.too_many_failures(error):
            raise
        failed = (
            runner.view.trials()
            .query(f"status == '{TrialStatus.FAILED}'")["error"]
            .tail(max_consecutive_failures)
        )
        raise SearchStopped(
            f"stopped after {max_consecutive_failures} failed trials in a row, most often with: "
            f"{failed.mode().iloc[0]}"
        ) from None
