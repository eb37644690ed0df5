"""Back ends turn a space into trials; all of them train through the `Trials` they
are given (search.trial.TrialRunner), asking for each trial with one `TrialRequest`.

A back end is a module with the three functions of `Backend`. Adding one means one module in
this package and one line in `BACKENDS`; `get_backend` imports it on first use. The option
values live here so that the command line can list them without importing a back end.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    import keras_tuner as kt

    from search.config import SearchConfig
    from search.steps import PreparedRun
    from search.trial_edge import RunView, TrialOutcome, TrialRequest
    from spaces import Space
    from spaces.context import SpaceContext


class Trials(Protocol):
    """All a back end may use of the trial runner (search.trial.TrialRunner): train one trial
    per request, read the run through a read-only view, and check between trials whether the
    process must restart; the space and its context are what a Keras Tuner HyperModel wraps."""

    space: Space
    ctx: SpaceContext
    view: RunView

    def run(self, request: TrialRequest) -> TrialOutcome:
        """Train and record one trial; failures are outcomes, never exceptions."""

    def check_memory(self) -> None:
        """Raise search.errors.Restart when the process should restart before the next trial."""


class Backend(Protocol):
    """What a back-end module provides (a module satisfies this protocol with functions)."""

    def check_options(self, config: SearchConfig) -> None:
        """Refuse, with a UsageError, options this back end cannot run, before anything of
        the run is created."""

    def grid(self, config: SearchConfig, declared: kt.HyperParameters) -> dict | None:
        """For a grid search, the values walked per hyperparameter of `declared` (the space
        with --fix applied), sized and checked before any trial; None for any other search."""

    def search(self, run: PreparedRun, runner: Trials) -> None:
        """Propose trials of `run` and train each with `runner.run`, until the run's budget is
        spent; resumes what the run store and the back end's own state hold. Only the process
        that owns the run (`run.owner`, not a --workers worker) queues `run.first_trials`."""


class Registered(NamedTuple):
    module: str
    about: str


BACKENDS = {
    "keras-tuner": Registered(
        "search.backends.keras_tuner", "Keras Tuner oracles (random, bayesian, hyperband, grid)"
    ),
    "optuna": Registered(
        "search.backends.optuna",
        "Optuna samplers and pruners on a persistent study (SQLite or PostgreSQL)",
    ),
}
ALGORITHMS = ("random", "bayesian", "hyperband", "grid")
SAMPLERS = ("auto", "tpe", "nsga2", "random", "cmaes", "gp", "grid")
MODEL_BASED_SAMPLERS = ("tpe", "gp", "cmaes")  # those with a random start-up phase
PRUNERS = ("median", "hyperband", "successive-halving", "none")
# Samplers whose module Optuna imports only when it first samples: checked before any trial.
SAMPLER_NEEDS = {
    "cmaes": ("cmaes", "pip install cmaes"),
    "gp": ("torch", "pip install -e '.[gp]' for PyTorch"),
}
# An Optuna grid is materialised whole (GridSampler lists every point): a larger one is refused.
GRID_MAX_POINTS = 10_000


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise ValueError(f"unknown back end {name!r}; choose one of {', '.join(BACKENDS)}")
    return importlib.import_module(BACKENDS[name].module)
