"""Optuna back end: an Optuna study proposes, our trial runner trains and records.

The study lives in a real database (`--storage`, SQLite in the run directory by default, or
PostgreSQL for several workers and machines), named after the run, so a run can be stopped and
resumed at will and shared by worker processes. Every epoch's metrics go into the study (as
intermediate values and user attributes), so the study alone can rebuild the run store.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import keras_tuner as kt
import optuna
import pandas as pd
import sqlalchemy
from optuna.trial import TrialState
from optuna_integration import KerasPruningCallback

from search import compat
from search.backends import (
    GRID_MAX_POINTS,
    MODEL_BASED_SAMPLERS,
    PRUNERS,
    SAMPLER_NEEDS,
    SAMPLERS,
)
from search.deploy import violations
from search.errors import SearchStopped, UsageError, first_line
from search.fixed import grid_size, grid_space
from search.schema import HP_PREFIX, LOST_WORKER, TrialStatus, maximised
from search.store import RunStore, file_lock
from search.trial import TrialRunner
from search.trial_edge import TrialRequest, TrialResult
from search.workers import run_workers

if TYPE_CHECKING:
    from search.config import SearchConfig
    from search.steps import PreparedRun

POLL_S = 1.0  # how often an idle worker looks for a stale trial to retry
GRACE_BEATS = 2  # a trial silent for this many heartbeat intervals is failed
RESUME_SEED_STRIDE = 7919  # a prime above any worker count, so no two seeds coincide
GRID_POINT = "grid_point"  # user attribute: a grid search trial's point number in the grid
RETRY_OF = "failed_trial"  # system attribute of RetryHeartbeatStaleTrialCallback's retries
HP = kt.engine.hyperparameters


class TrialFailed(Exception):
    """A trial our runner recorded as failed; Optuna marks it FAIL and the search goes on."""


def suggest(trial: optuna.Trial, hp) -> object:
    """Sample one Keras Tuner hyperparameter with the matching Optuna distribution.

    Optuna cannot combine a step with log sampling: a log-sampled Int or Float is sampled on
    its full log range, without the step.
    """
    if isinstance(hp, HP.Fixed):
        return hp.value
    if isinstance(hp, HP.Boolean):
        return trial.suggest_categorical(hp.name, [False, True])
    if isinstance(hp, HP.Choice):
        return trial.suggest_categorical(hp.name, list(hp.values))
    log = hp.sampling in ("log", "reverse_log")
    if isinstance(hp, HP.Int):
        step = 1 if log else (hp.step or 1)
        return trial.suggest_int(hp.name, hp.min_value, hp.max_value, step=step, log=log)
    if isinstance(hp, HP.Float):
        step = None if log else hp.step
        return trial.suggest_float(hp.name, hp.min_value, hp.max_value, step=step, log=log)
    raise TypeError(f"no Optuna distribution for {type(hp).__name__} {hp.name!r}")


class OptunaHyperParameters(compat.RegisteringHyperParameters):
    """Keras Tuner's `HyperParameters`, whose values an Optuna trial chooses.

    Spaces call Int/Float/Choice/Boolean/Fixed and conditional_scope as usual; a hyperparameter
    is sampled when it is first registered and active, so conditional ones inside an inactive
    scope are never sampled, as Optuna's define-by-run expects. A `fixed` (--fix) one is
    recorded as a one-value categorical, so the study lists it with the sampled ones.
    """

    def __init__(self, trial: optuna.Trial, fixed: dict | None = None):
        super().__init__()
        self.trial, self.fixed = trial, fixed or {}

    def on_register(self, hyperparameter: HP.HyperParameter) -> None:
        name = hyperparameter.name
        if self.is_active(hyperparameter) and name not in self.values:
            if name in self.fixed:
                self.values[name] = self.trial.suggest_categorical(name, [self.fixed[name]])
            else:
                self.values[name] = suggest(self.trial, hyperparameter)


def checked_grid(
    declared: kt.HyperParameters, max_points: int = GRID_MAX_POINTS
) -> dict[str, list]:
    """The grid of `declared`, its size computed before Optuna lists its points (GridSampler
    materialises every one of them: 24 GB and the OOM killer for the scratch space). A grid
    larger than `max_points` is refused, naming its widest hyperparameters."""
    grid = grid_space(declared)
    size = grid_size(grid)  # before any point is listed
    if size > max_points:
        widest = sorted((n for n in grid if len(grid[n]) > 1), key=lambda n: -len(grid[n]))
        named = ", ".join(f"{n} ({len(grid[n])} values)" for n in widest[:4])
        raise UsageError(
            f"--sampler grid: this space has {size:.3g} grid points, over the {max_points:,} a "
            f"grid search may have; pin hyperparameters with --fix NAME=VALUE to shrink it "
            f"(widest: {named}), or use another --sampler"
        )
    return grid


def make_sampler(
    name: str,
    seed: int,
    *,
    multi_objective: bool = False,
    startup_trials: int | None = None,
) -> optuna.samplers.BaseSampler:
    """The sampler `name` ("auto": the one Optuna creates for the number of objectives). A grid
    search queues its points itself (`_reserve_trial`), each as a trial whose every value is
    given, so its sampler never samples: Optuna's GridSampler cannot serve queued trials, and
    the exact budget across workers queues every trial. Deployment limits reach TPE, NSGA-II
    and GP through each trial (`set_constraints`), not the sampler; `startup_trials` is TPE's,
    GP's and CMA-ES's n_startup_trials (None: Optuna's default)."""
    startup = {} if startup_trials is None else {"n_startup_trials": startup_trials}
    name = resolved_sampler(name, multi_objective=multi_objective)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, **startup)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        # CMA-ES handles numbers; categorical choices fall back to independent random sampling.
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False, **startup)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, **startup)
    if name == "grid":
        return optuna.samplers.RandomSampler(seed=seed)
    raise UsageError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


@functools.cache
def optuna_default_sampler(n_objectives: int) -> type[optuna.samplers.BaseSampler]:
    """The class of sampler Optuna gives a study of `n_objectives` that names none, read from
    a throwaway in-memory study: Optuna's choice changes between versions (5.0 made TPE the
    multi-objective default, where it had been NSGA-II)."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
    try:
        study = optuna.create_study(
            storage=optuna.storages.InMemoryStorage(), directions=["minimize"] * n_objectives
        )
    finally:
        optuna.logging.set_verbosity(verbosity)
    return type(study.sampler)


def resolved_sampler(name: str, *, multi_objective: bool) -> str:
    """The sampler that "auto" stands for: the one the installed Optuna creates by default for
    the number of objectives, asked of Optuna so that "auto" follows it across versions."""
    if name != "auto":
        return name
    made = optuna_default_sampler(2 if multi_objective else 1)
    ours = {
        "tpe": optuna.samplers.TPESampler,
        "nsga2": optuna.samplers.NSGAIISampler,
        "random": optuna.samplers.RandomSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
        "gp": optuna.samplers.GPSampler,
    }
    for sampler, cls in ours.items():
        if made is cls:
            return sampler
    raise UsageError(
        f"--sampler auto: Optuna {optuna.__version__} creates a {made.__name__} by default, "
        f"which this back end does not offer; name one of {', '.join(ours)}"
    )


def set_constraints(trial: optuna.Trial, result: TrialResult, limits: dict[str, float]) -> None:
    """Give the study a complete trial's excess over each deployment limit (at most 0 when
    within it), through `Trial.set_constraint`: TPE, NSGA-II and GP read the constraints from
    the study's trials (Optuna 5.0 deprecated the samplers' `constraints_func`). A failed or
    pruned trial has no figures and gets none, which Optuna takes as within the limits."""
    if result.status in (TrialStatus.COMPLETE, TrialStatus.INFEASIBLE):
        for column, excess in violations(result.row(), limits).items():
            trial.set_constraint(column, excess)


def sampler_seed(seed: int, worker_index: int, trials_so_far: int) -> int:
    """The seed of one process's sampler. Optuna's samplers draw their random points (all of
    RandomSampler's, TPE's first ten) from their own generator, not from the study, so a resumed
    run seeded as before proposes again the points it proposed before. Offsetting the seed by
    the trials the study already holds keeps a run reproducible and each resume's points new."""
    return seed + worker_index + RESUME_SEED_STRIDE * trials_so_far


def make_pruner(name: str, epochs: int, warmup_epochs: int = 0) -> optuna.pruners.BasePruner:
    """The pruner `name`. Steps are 0-based epochs, so the first step judged is the first epoch
    after the warm-up: step `warmup_epochs`, and never step 0 (one epoch says little)."""
    first_judged = max(1, warmup_epochs)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=first_judged)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=first_judged, max_resource=epochs)
    if name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=first_judged if warmup_epochs else "auto"
        )
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UsageError(f"unknown pruner {name!r}; choose one of {', '.join(PRUNERS)}")


def _postgresql(storage_url: str | None) -> bool:
    return storage_url is not None and (
        sqlalchemy.make_url(storage_url).get_backend_name() == "postgresql"
    )


@contextlib.contextmanager
def advisory_lock(storage_url: str, name: str) -> Iterator[None]:
    """A PostgreSQL advisory lock, `name` hashed to its 64-bit key, held for the block. Every
    machine that reaches the database contends for it, and a process that dies lets go of it
    with its connection."""
    digest = hashlib.blake2b(f"run_search {name}".encode(), digest_size=8).digest()
    key = {"key": int.from_bytes(digest, "big", signed=True)}
    engine = sqlalchemy.create_engine(storage_url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), key)
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), key)
    finally:
        engine.dispose()


def budget_lock(
    storage_url: str | None, study_name: str, lock_path: Path
) -> contextlib.AbstractContextManager[None]:
    """The lock a study's workers take to count, queue and start a trial: on PostgreSQL an
    advisory lock in the study's database, so workers on several machines share it; otherwise
    a lock file in the run directory, shared by this machine's processes."""
    if _postgresql(storage_url):
        return advisory_lock(storage_url, f"budget {study_name}")
    return file_lock(lock_path)


def open_storage(url: str, heartbeat_s: int) -> optuna.storages.RDBStorage:
    """The study database. A trial whose worker stops beating is failed and retried once."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        # Machines starting together on a fresh database would all create Optuna's tables
        # at once, and all but one fail: on PostgreSQL they take turns.
        with advisory_lock(url, "schema") if _postgresql(url) else contextlib.nullcontext():
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=heartbeat_s,
                grace_period=GRACE_BEATS * heartbeat_s,
                heartbeat_stale_trial_callback=retry_unjudged,
            )
    except Exception as error:
        raise UsageError(
            f"--storage {url}: cannot open it ({first_line(error)}); pass a "
            f"reachable SQLAlchemy URL such as sqlite:///study.db or postgresql://user@host/db"
        ) from None


def open_study(
    url: str,
    name: str,
    *,
    sampler,
    pruner,
    heartbeat_s: int,
    objectives: tuple[str, ...] = ("val_accuracy",),
) -> optuna.Study:
    """The run's study, with one direction per objective (several for --objectives)."""
    return optuna.create_study(
        storage=open_storage(url, heartbeat_s),
        study_name=name,
        sampler=sampler,
        pruner=pruner,
        directions=["maximize" if maximised(name) else "minimize" for name in objectives],
        load_if_exists=True,
    )


def enqueue(study: optuna.Study, hparam_sets: list[dict]) -> None:
    """Given hyperparameter sets run first (Optuna's enqueue_trial); never twice on resume."""
    for values in hparam_sets:
        study.enqueue_trial(values, skip_if_exists=True)


def _judged(trial: optuna.trial.FrozenTrial) -> bool:
    """Our runner finished this trial (complete, pruned or failed), even if its worker died
    before telling the study."""
    return bool(trial.user_attrs.get("result"))


def _our_failure(trial: optuna.trial.FrozenTrial) -> bool:
    result = trial.user_attrs.get("result") or {}
    return trial.state == TrialState.FAIL and result.get("status") == TrialStatus.FAILED


def retry_unjudged(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """For a trial whose heartbeat went stale: retry it once, unless our runner had already
    judged it (its worker died between recording the result and telling the study)."""
    if not _judged(trial):
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)(study, trial)


def counted_trials(study: optuna.Study) -> int:
    """Trials that count toward --max-trials: finished, running or queued. A trial failed for a
    lost heartbeat does not count: its retry does."""
    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    return sum(t.state in live or _judged(t) for t in study.get_trials(deepcopy=False))


def _beat_for_silent_trials(study: optuna.Study, beaten: set[int]) -> None:
    """Optuna fails a RUNNING trial whose heartbeat went stale, never one that has none: a
    worker killed after popping its trial but before the trial's first heartbeat leaves it
    RUNNING for ever, and the run waiting on it. So this worker gives each RUNNING trial older
    than the grace period one heartbeat: a live trial beats every interval anyway, and a dead
    one goes stale a grace period later, to be failed and retried like any other."""
    storage = compat.study_storage(study)
    interval = storage.get_heartbeat_interval()
    if interval is None:
        return
    started_before = datetime.now() - timedelta(seconds=GRACE_BEATS * interval)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.number not in beaten and trial.datetime_start < started_before:
            study_id = storage.get_study_id_from_name(study.study_name)
            storage.record_heartbeat(
                storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            )
            beaten.add(trial.number)


def grid_point(grid: dict[str, list], index: int) -> dict:
    """The grid's point number `index`, in `itertools.product` order, found without listing
    the points before it."""
    point = {}
    for name in reversed(grid):
        index, position = divmod(index, len(grid[name]))
        point[name] = grid[name][position]
    return point


def _next_grid_point(study: optuna.Study, grid: dict[str, list]) -> int | None:
    """The first point of the grid that no trial of the study has taken, or None."""
    taken = {t.user_attrs.get(GRID_POINT) for t in study.get_trials(deepcopy=False)}
    return next((i for i in range(grid_size(grid)) if i not in taken), None)


def retried_from(system_attrs: dict, number: int) -> int | None:
    """The trial that trial `number`, a retry, retries: the last of its `retry_history` (its
    `failed_trial` names the first of a chain of retries, as a retry copies its trial's
    attributes). Its own number is passed over: Optuna's retry callback appends it to the list
    it shares with the retried trial's cached copy."""
    history = [n for n in system_attrs.get("retry_history") or [] if n != number]
    return history[-1] if history else None


def _retry_checkpointed(study: optuna.Study, checkpointed: Callable[[int], bool]) -> None:
    """Queue a retry of each trial cut off unjudged (Ctrl-C, or a lost worker past its one
    heartbeat retry) that left an epoch checkpoint and has none yet, so that it goes on from
    its checkpoint; its retry replaces it, as a lost trial's does."""
    trials = study.get_trials(deepcopy=False)
    retried = {retried_from(t.system_attrs, t.number) for t in trials}
    for trial in trials:
        cut_off = trial.state == TrialState.FAIL and not _judged(trial)
        if cut_off and trial.number not in retried and checkpointed(trial.number):
            optuna.storages.RetryHeartbeatStaleTrialCallback()(study, trial)


def _reserve_trial(
    study: optuna.Study,
    *,
    max_trials: int,
    beaten: set[int],
    grid: dict[str, list] | None,
    checkpointed: Callable[[int], bool],
) -> bool:
    """Queue one more trial unless the budget, or the grid, is spent. The caller holds the
    workers' lock. A grid search queues its next point with all its values."""
    # A trial whose worker died is failed here, and its retry queued, before counting.
    optuna.storages.fail_stale_trials(study)
    _retry_checkpointed(study, checkpointed)
    _beat_for_silent_trials(study, beaten)
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    if any(RETRY_OF in t.system_attrs for t in waiting):
        return True  # a retry replaces a lost trial, which the budget no longer counts
    if counted_trials(study) - len(waiting) >= max_trials:
        return False  # queued sets beyond the budget (--with-baselines, --enqueue) stay queued
    if waiting:
        return True
    if grid is None:
        study.enqueue_trial({})
        return True
    index = _next_grid_point(study, grid)
    if index is None:
        return False
    study.enqueue_trial(grid_point(grid, index), user_attrs={GRID_POINT: index})
    return True


def _others_running(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


OWN_ATTRS = ("epochs", "hparams", "result", "interrupted")


class _InterruptedTrials(logging.Filter):
    """Optuna logs a trial that Ctrl-C stopped as failed, with the KeyboardInterrupt's
    traceback and a second line, "failed with value None". It was interrupted, not failed: the
    CLI says so and how to resume, and the resumed run replaces it, so both lines go. The
    second is Optuna's last word on the trial: after it the number is forgotten, so that a
    later study in the same process (a notebook) still shows its own trial of that number
    failing."""

    def __init__(self) -> None:
        super().__init__()
        self.numbers: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for number in self.numbers:
            if message.startswith(f"Trial {number} failed with value"):
                self.numbers.discard(number)
                return False
            if message.startswith(f"Trial {number} failed with"):
                return False
        return True


INTERRUPTED = _InterruptedTrials()
logging.getLogger("optuna.study._optimize").addFilter(INTERRUPTED)  # the logger of both lines


def objective(
    runner: TrialRunner, trial: optuna.Trial, *, pruning: bool, fixed: dict | None = None
) -> float | list[float]:
    # A retried trial starts with a copy of the failed one's attributes: start afresh.
    for key in OWN_ATTRS:
        if key in trial.user_attrs:
            trial.set_user_attr(key, None)
    hp = OptunaHyperParameters(trial, fixed)
    epochs: list[dict] = []

    def record(row: dict) -> None:
        epochs.append(row)
        trial.set_user_attr("epochs", epochs)

    def keep(result: TrialResult, values: dict) -> None:
        trial.set_user_attr("hparams", values)
        trial.set_user_attr("result", result.row())
        # After "result": a judged trial is never retried, so no retry copies its constraints.
        set_constraints(trial, result, runner.view.limits)

    name = runner.view.objective
    callbacks = [KerasPruningCallback(trial, name)] if pruning else []
    try:
        result, _ = runner.run(
            TrialRequest(
                trial.number,
                hp,
                extra_callbacks=callbacks,
                prune_on=(optuna.TrialPruned,),
                on_epoch=record,
                on_result=keep,
                resume_from=retried_from(compat.trial_system_attrs(trial), trial.number),
            )
        )
    except KeyboardInterrupt:
        trial.set_user_attr("interrupted", True)  # not counted: a resumed run replaces it
        INTERRUPTED.numbers.add(trial.number)
        raise
    if result.status == TrialStatus.PRUNED:
        raise optuna.TrialPruned(f"pruned at epoch {len(epochs)}")
    if result.status == TrialStatus.FAILED:
        raise TrialFailed(result.error)
    # An infeasible trial completes with its real score; the constraints say it is infeasible.
    objectives = runner.view.objectives
    if len(objectives) < 2:
        return getattr(result, name)
    return [_objective_value(result, name) for name in objectives]


def _objective_value(result: TrialResult, name: str) -> float:
    """One objective of a complete trial; a figure it lacks (a model TFLite could not
    convert has no latency) counts as the worst, so the sampler moves away from it."""
    value = getattr(result, name)
    if value is None:
        return -math.inf if maximised(name) else math.inf
    return float(value)


def _check_failures(study: optuna.Study, limit: int) -> None:
    """Stop when the last `limit` finished trials all failed, naming their most common error."""
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    last = sorted(finished, key=lambda t: t.datetime_complete)[-limit:]
    if len(last) == limit and all(_our_failure(t) for t in last):
        errors = pd.Series([t.user_attrs["result"]["error"] for t in last])
        raise SearchStopped(
            f"stopped after {limit} failed trials in a row, most often with: {errors.mode()[0]}"
        )


def _run_next_trial(
    study: optuna.Study,
    runner: TrialRunner,
    *,
    max_trials: int,
    pruning: bool,
    fixed: dict | None,
    lock: contextlib.AbstractContextManager,
    beaten: set[int],
    grid: dict[str, list] | None,
) -> bool:
    """Run one trial unless the budget is spent (then False).

    Counting, queueing and popping the queued trial happen under the workers' `budget_lock`,
    so together they run exactly --max-trials. The lock is let go once the trial is RUNNING, at
    the objective's first step: let go any earlier, another worker could take this queued trial
    and Optuna would sample one beyond the budget."""
    with contextlib.ExitStack() as reservation:
        reservation.enter_context(lock)
        reserved = _reserve_trial(
            study,
            max_trials=max_trials,
            beaten=beaten,
            grid=grid,
            checkpointed=runner.view.has_checkpoint,
        )
        if not reserved:
            return False

        def run_reserved(trial: optuna.Trial) -> float:
            reservation.close()
            return objective(runner, trial, pruning=pruning, fixed=fixed)

        study.optimize(run_reserved, n_trials=1, catch=(TrialFailed,), gc_after_trial=True)
    return True


def check_options(config: SearchConfig) -> None:
    _check_sampler_installed(config.sampler)
    if config.multi_objective() and config.sampler == "cmaes":
        raise UsageError(
            "--sampler cmaes optimises one objective; with --objectives use auto, "
            "nsga2, tpe, gp, random or grid"
        )
    sampler = resolved_sampler(config.sampler, multi_objective=config.multi_objective())
    if config.startup_trials is not None and sampler not in MODEL_BASED_SAMPLERS:
        raise UsageError(
            f"--startup-trials is for the samplers that model the results "
            f"({', '.join(MODEL_BASED_SAMPLERS)}); --sampler {sampler} has no start-up phase: "
            f"leave --startup-trials out or pick one of those"
        )
    if config.workers > 1 and (config.storage is None or config.storage.startswith("sqlite")):
        raise UsageError(
            f"--workers {config.workers} needs a server database: SQLite is not for parallel "
            f"writers (Optuna FAQ); pass --storage postgresql://USER@HOST/DB"
        )
    if config.storage is not None:
        open_storage(config.storage, config.heartbeat)  # fails fast on a bad or unreachable URL


def _check_sampler_installed(sampler: str) -> None:
    """A sampler whose module Optuna imports only when it first samples fails every trial but
    the first without it: refuse it before any trial, naming what to install."""
    if sampler not in SAMPLER_NEEDS:
        return
    module, install = SAMPLER_NEEDS[sampler]
    try:
        importlib.import_module(module)  # an installed but broken package counts as missing
    except ImportError as error:
        raise UsageError(
            f"--sampler {sampler} needs the {module} package, which cannot be imported "
            f"({first_line(error)}): {install}, or pick another --sampler"
        ) from None


def grid(config: SearchConfig, declared: kt.HyperParameters) -> dict | None:
    return checked_grid(declared) if config.sampler == "grid" else None


def storage_url(config: SearchConfig, store: RunStore) -> str:
    """The study's database: --storage, or the embedded default, SQLite in the run directory."""
    return config.storage or f"sqlite:///{(store.run_dir / 'study.db').absolute()}"


def search(run: PreparedRun, runner: TrialRunner) -> None:
    """Open (or resume) the run's study and run its trials: in this process, or, with
    --workers, in worker processes that each run this function on the same study. The owner
    queues the first trials and rebuilds the run store from the study at the end."""
    config = run.config
    if not config.verbose:  # our one line per trial replaces Optuna's own
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage_url(config, run.store)
    study = open_study(
        url,
        config.run_name(),
        sampler=None,  # seeded below, from the trials the study already holds
        pruner=make_pruner(config.pruner, config.epochs, config.warmup_epochs),
        heartbeat_s=config.heartbeat,
        objectives=config.objectives or (config.objective,),
    )
    seed = sampler_seed(config.seed, config.worker_index, len(study.trials))
    study.sampler = make_sampler(
        config.sampler,
        seed,
        multi_objective=config.multi_objective(),
        startup_trials=config.startup_trials,
    )
    if run.owner:
        enqueue(study, run.first_trials)
    try:
        if config.workers > 1 and run.owner:
            gpus = len(run.devices)
            run_workers(config, config.workers, gpus if gpus > 1 else 0)
        else:
            run_trials(
                study,
                runner,
                max_trials=config.max_trials,
                # Optuna does not prune multi-objective studies (Trial.report refuses them).
                pruning=config.pruner != "none" and not config.multi_objective(),
                max_consecutive_failures=config.max_consecutive_failures,
                fixed=run.fixed,
                storage_url=url,
                grid=run.grid,
            )
    finally:
        if run.owner:
            sync_store(study, run.store)


def run_trials(
    study: optuna.Study,
    runner: TrialRunner,
    *,
    max_trials: int,
    pruning: bool,
    max_consecutive_failures: int,
    fixed: dict | None = None,
    storage_url: str | None = None,
    grid: dict[str, list] | None = None,
) -> None:
    """One worker: run trials of the shared study until the run has --max-trials of them, or
    until every point of `grid` (a grid search's values per hyperparameter) has run."""
    lock_path = runner.view.run_dir / ".optuna.lock"
    beaten: set[int] = set()  # the silent trials this worker gave a heartbeat
    while True:
        runner.check_memory()  # before a trial is reserved, so none is left half-done
        lock = budget_lock(storage_url, study.study_name, lock_path)
        reserved = _run_next_trial(
            study,
            runner,
            max_trials=max_trials,
            pruning=pruning,
            fixed=fixed,
            lock=lock,
            beaten=beaten,
            grid=grid,
        )
        if reserved:
            _check_failures(study, max_consecutive_failures)
        elif _others_running(study):
            # A running trial may belong to a worker that died: stay until it ends or its
            # heartbeat goes stale, so its retry is not left unrun.
            time.sleep(POLL_S)
        else:
            return


def _status(trial: optuna.trial.FrozenTrial) -> str:
    return {
        TrialState.COMPLETE: TrialStatus.COMPLETE,
        TrialState.PRUNED: TrialStatus.PRUNED,
        TrialState.FAIL: TrialStatus.FAILED,
    }.get(trial.state, TrialStatus.RUNNING)


def _retries(study_trials: list[optuna.trial.FrozenTrial]) -> dict[int, int]:
    """Trial number -> the number of the trial that retried it."""
    return {
        retried_from(t.system_attrs, t.number): t.number
        for t in study_trials
        if RETRY_OF in t.system_attrs
    }


def sync_store(study: optuna.Study, store: RunStore) -> None:
    """Rebuild trials.csv and epochs.csv from the study, which every worker and machine wrote."""
    study_trials = study.get_trials(deepcopy=False)
    retried_as = _retries(study_trials)
    trial_rows, epoch_rows = [], []
    for t in study_trials:
        if t.state == TrialState.WAITING:  # queued, never started: not a trial of the run yet
            continue
        values = t.user_attrs.get("hparams") or t.params
        row = {"trial_id": t.number}
        row |= {f"{HP_PREFIX}{k}": v for k, v in values.items()}
        # A judged trial keeps our verdict even if its worker died before telling the study.
        row |= t.user_attrs.get("result") or {"status": _status(t)}
        if t.user_attrs.get("interrupted"):
            row |= {"status": TrialStatus.INTERRUPTED, "error": "interrupted"}
        elif t.state == TrialState.FAIL and not _judged(t):
            again = retried_as.get(t.number)
            row["error"] = LOST_WORKER + (
                f"; retried as trial {again}" if again is not None else ""
            )
        trial_rows.append(row)
        epoch_rows += [r for r in t.user_attrs.get("epochs") or [] if r["trial_id"] == t.number]
    store.replace_all(trial_rows, epoch_rows)
