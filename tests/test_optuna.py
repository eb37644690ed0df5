"""The Optuna back end: same spaces, pruning, durable studies, resume, and parallel workers."""

from __future__ import annotations

import concurrent.futures
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable

import keras
import keras_tuner as kt
import numpy as np
import optuna
import pandas as pd
import pytest
import sqlalchemy
from conftest import REPO, error_lines, link_images, run_cli
from optuna.trial import TrialState

from search.backends import optuna as backend
from search.data import load_image_data
from search.schema import HP_PREFIX
from search.store import RunStore
from search.trial import TrainSettings, TrialRunner
from spaces import SPACES, Space, declared_space, get_space
from spaces.context import DEFAULT_BACKBONE, SpaceContext

HP = kt.engine.hyperparameters


def expected_distribution(hp) -> optuna.distributions.BaseDistribution:
    """What a Keras Tuner hyperparameter must become in Optuna."""
    if isinstance(hp, HP.Boolean):
        return optuna.distributions.CategoricalDistribution([False, True])
    if isinstance(hp, HP.Choice):
        return optuna.distributions.CategoricalDistribution(list(hp.values))
    log = hp.sampling == "log"
    if isinstance(hp, HP.Int):
        return optuna.distributions.IntDistribution(
            hp.min_value, hp.max_value, log=log, step=1 if log else hp.step or 1
        )
    return optuna.distributions.FloatDistribution(
        hp.min_value, hp.max_value, log=log, step=None if log else hp.step
    )


@pytest.mark.parametrize("name", list(SPACES))
def test_both_back_ends_see_the_same_space(name, weights_file):
    space = get_space(name)
    weights = str(weights_file) if name == "transfer" else "imagenet"
    ctx = SpaceContext(32, 2, DEFAULT_BACKBONE.with_weights(weights))
    declared = {hp.name: hp for hp in declared_space(space, ctx).space}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    # Visit every conditional branch: one trial per condition, with its parents set to activate it.
    for hp in declared.values():
        if hp.conditions:
            study.enqueue_trial({c.name: c.values[-1] for c in hp.conditions})
    seen = {}
    for _ in range(len(study.get_trials()) + 1):
        trial = study.ask()
        space.build(backend.OptunaHyperParameters(trial), ctx)
        seen |= trial.distributions
        study.tell(trial, 0.5)
        keras.backend.clear_session()
    assert set(seen) == set(declared)
    for hp_name, hp in declared.items():
        assert seen[hp_name] == expected_distribution(hp), hp_name


def bad_region_space() -> Space:
    """A space with a bad region: `broken` models predict the minority class whatever they see."""

    def build(hp, ctx):
        inputs = keras.Input(ctx.input_shape)
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
        if hp.Boolean("broken"):
            head = keras.layers.Dense(
                1,
                activation="sigmoid",
                trainable=False,
                bias_initializer=keras.initializers.Constant(-10.0),
                kernel_initializer="zeros",
            )
        else:
            head = keras.layers.Dense(1, activation="sigmoid")
        model = keras.Model(inputs, head(x))
        model.compile(
            keras.optimizers.Adam(hp.Float("learning_rate", 1e-2, 1e-1, sampling="log")),
            "binary_crossentropy",
            metrics=["accuracy"],
        )
        return model

    return Space(name="bad_region", build=build)


def bad_region_runner(data, run_dir, settings: TrainSettings) -> TrialRunner:
    store = RunStore(run_dir)
    store.create()
    return TrialRunner(
        bad_region_space(), SpaceContext(32, 2), data, store=store, settings=settings
    )


def optunas_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    """The deprecation, future and experimental warnings Optuna raised."""
    kinds = (FutureWarning, DeprecationWarning, optuna.exceptions.ExperimentalWarning)
    return [
        f"{w.filename}: {w.message}"
        for w in caught
        if issubclass(w.category, kinds)
        and ("optuna" in w.filename or "constraints_func" in str(w.message))
    ]


def test_pruning_stops_a_trial_in_the_bad_region(tmp_path):
    """Also: the deployment limits reach the study as each complete trial's constraints (none
    for the pruned one), and neither the "auto" sampler nor the search warns of a deprecated
    Optuna API."""
    # Dogs outnumber cats, so a model that always says "cat" scores 0.25 while any trained one
    # soon says "dog" and scores 0.75.
    folder = link_images(tmp_path / "imbalanced", {"train": 10, "validation": 5}, ("cats",))
    link_images(folder, {"train": 24, "validation": 15}, ("dogs",))
    limits = (("n_params", 1e9),)
    settings = TrainSettings(epochs=4, patience=4, batch_size=8, limits=limits)
    runner = bad_region_runner(load_image_data(folder, 32), tmp_path / "run", settings)
    store = runner.store
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study = backend.open_study(
            f"sqlite:///{tmp_path / 'study.db'}",
            "prune",
            sampler=backend.make_sampler("auto", 0),
            pruner=backend.make_pruner("median", 4),
            heartbeat_s=60,
        )
        good = [{"broken": False, "learning_rate": rate} for rate in (0.1, 0.09, 0.08)]
        backend.enqueue(study, [*good, {"broken": True, "learning_rate": 0.1}])
        backend.run_trials(study, runner, max_trials=4, pruning=True, max_consecutive_failures=3)
    assert not optunas_warnings(caught)
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.COMPLETE] * 3 + [TrialState.PRUNED]
    for trial in study.get_trials()[:3]:
        n_params = trial.user_attrs["result"]["n_params"]
        assert trial.constraints == {"n_params": pytest.approx(n_params - 1e9)}
    assert study.get_trials()[3].constraints == {}
    pruned = study.get_trials()[3]
    assert len(pruned.intermediate_values) < 4, "the pruned trial stopped early"
    backend.sync_store(study, store)
    trials = store.trials()
    assert list(trials["status"]) == ["complete"] * 3 + ["pruned"]
    assert len(store.epochs().query("trial_id == 3")) == len(pruned.intermediate_values)


@pytest.mark.parametrize("directions", [["maximize"], ["maximize", "minimize"]])
def test_auto_is_the_sampler_optuna_itself_creates(directions):
    """For one objective and for two, whatever the installed Optuna picks, seeded as named."""
    several = len(directions) > 1
    made = type(optuna.create_study(directions=directions).sampler)
    assert backend.resolved_sampler("auto", multi_objective=several) != "auto"

    def first_point(seed: int) -> float:
        sampler = backend.make_sampler("auto", seed, multi_objective=several, startup_trials=2)
        assert type(sampler) is made
        study = optuna.create_study(sampler=sampler, directions=directions)
        return study.ask().suggest_float("x", 0.0, 1.0)

    assert first_point(5) == first_point(5) != first_point(6)


def file_lock_held(lock_path) -> Callable[[], bool]:
    def held() -> bool:
        with open(lock_path, "a") as handle:  # its own open file: flock contends with it
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    return held


def advisory_lock_held(url: str) -> Callable[[], bool]:
    """Whether any session holds a PostgreSQL advisory lock, asked from another connection."""
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    query = sqlalchemy.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")

    def held() -> bool:
        with engine.connect() as connection:
            return connection.execute(query).scalar() > 0

    return held


class LockWitness(optuna.samplers.RandomSampler):
    """Notes whether the workers' lock is held as each trial starts and as it is sampled."""

    def __init__(self, held: Callable[[], bool]):
        super().__init__(seed=0)
        self.held = held
        self.held_at_start: list[bool] = []
        self.held_while_sampling: list[bool] = []

    def before_trial(self, study, trial):
        # Optuna calls this once the queued trial is popped and RUNNING.
        assert trial.state == TrialState.RUNNING
        self.held_at_start.append(self.held())
        super().before_trial(study, trial)

    def sample_independent(self, *args):
        self.held_while_sampling.append(self.held())
        return super().sample_independent(*args)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_the_workers_lock_is_held_until_the_queued_trial_runs(
    tiny_data, tmp_path, request, database
):
    # Released earlier, another worker could pop this worker's queued trial, and Optuna would
    # sample one beyond --max-trials (seen as 10 trials of 9 with three workers). On PostgreSQL
    # the lock is in the database, so workers on other machines contend for it too.
    runner = bad_region_runner(
        tiny_data, tmp_path / "run", TrainSettings(epochs=1, patience=1, batch_size=16)
    )
    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'study.db'}"
        witness = LockWitness(file_lock_held(runner.store.run_dir / ".optuna.lock"))
    else:
        url = request.getfixturevalue("postgres_url")
        witness = LockWitness(advisory_lock_held(url))
    pruner = optuna.pruners.NopPruner()
    study = backend.open_study(
        url, f"lock-{tmp_path.name}", sampler=witness, pruner=pruner, heartbeat_s=60
    )
    backend.run_trials(
        study, runner, max_trials=2, pruning=False, max_consecutive_failures=3, storage_url=url
    )
    assert len(study.trials) == 2
    assert witness.held_at_start == [True, True], "held while the queued trial is popped"
    assert witness.held_while_sampling and not any(witness.held_while_sampling), (
        "let go while the trial trains, so other workers can start theirs"
    )


def optuna_args(folder, runs, name, *extra):
    return (
        "--backend",
        "optuna",
        "--space",
        "scratch",
        "--data",
        str(folder),
        "--epochs",
        "1",
        "--image-size",
        "32",
        "--batch-size",
        "16",
        "--runs-dir",
        str(runs),
        "--name",
        name,
        *extra,
    )


class _Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_ctrl_c_hides_optunas_failure_lines_for_that_trial_only():
    """A trial Ctrl-C stopped is not logged by Optuna as failed; a trial of the same number
    that fails in a later study of the same process (a notebook) still is."""
    messages = _Messages()
    logging.getLogger("optuna").addHandler(messages)

    def interrupted(trial: optuna.Trial) -> float:
        backend.INTERRUPTED.numbers.add(trial.number)  # as objective does on Ctrl-C
        raise KeyboardInterrupt

    def failing(trial: optuna.Trial) -> float:
        raise RuntimeError("broken")

    try:
        with pytest.raises(KeyboardInterrupt):
            optuna.create_study().optimize(interrupted, n_trials=1)
        assert not [line for line in messages.lines if "failed with" in line]
        optuna.create_study().optimize(failing, n_trials=1, catch=(RuntimeError,))
    finally:
        logging.getLogger("optuna").removeHandler(messages)
    failed = [line for line in messages.lines if line.startswith("Trial 0 failed with")]
    assert len(failed) == 2 and "RuntimeError('broken')" in failed[0]


def test_stop_then_resume_keeps_finished_trials(tiny_folder, tmp_path):
    first = run_cli(*optuna_args(tiny_folder, tmp_path, "resume", "--max-trials", "2"))
    assert first.returncode == 0, error_lines(first)
    store = RunStore(tmp_path / "resume")
    before = store.trials()
    again = run_cli(
        "--resume", "--name", "resume", "--runs-dir", str(tmp_path), "--max-trials", "4"
    )
    assert again.returncode == 0, error_lines(again)
    after = store.trials()
    assert list(after["trial_id"]) == [0, 1, 2, 3]
    assert (after["status"] == "complete").all()
    # Only the best model carries a test score (and its interval): a resumed trial may take it.
    kept = [c for c in before.columns if not c.startswith("test_accuracy")]
    # Columns of the hyperparameters only later trials use turn from None to numbers.
    pd.testing.assert_frame_equal(after.iloc[:2][kept], before[kept], check_dtype=False)
    points = after[[c for c in after.columns if c.startswith(HP_PREFIX)]]
    assert not points.duplicated().any(), "the resumed run proposed a finished trial's point"
    study = optuna.load_study(study_name="resume", storage=f"sqlite:///{tmp_path}/resume/study.db")
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    # Optuna's own tools read our study unchanged.
    axes = optuna.visualization.matplotlib.plot_optimization_history(study)
    assert len(axes.collections[0].get_offsets()) == 4
    epochs = study.trials[0].user_attrs["epochs"]
    assert [e["epoch"] for e in epochs] == [1]
    assert study.trials[0].intermediate_values == {0: epochs[0]["val_accuracy"]}


def test_workers_on_two_machines_run_exactly_the_budget_on_postgresql(
    tiny_folder, tmp_path, postgres_url
):
    # Two run directories stand for two machines: they share no lock file, only the database,
    # and they start together on a fresh one. One runs two worker processes.
    def machine(index: int, workers: int, seed: int) -> subprocess.CompletedProcess:
        args = optuna_args(tiny_folder, tmp_path / f"machine{index}", "shared", "--seed", str(seed))
        return run_cli(
            *args, "--max-trials", "8", "--workers", str(workers), "--storage", postgres_url
        )

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(machine, (0, 1), (2, 1), (0, 10)))
    for result in results:
        assert result.returncode == 0, error_lines(result)
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    assert sorted(t.number for t in study.trials) == list(range(8))
    assert {t.state for t in study.trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    for index in range(2):  # each machine's run directory ends with the whole study
        trials = RunStore(tmp_path / f"machine{index}" / "shared").trials()
        assert sorted(trials["trial_id"]) == list(range(8))
        assert set(trials["status"]) <= {"complete", "pruned"}
    # Each worker's sampler has its own seed: no two workers propose the same point.
    assert len({*map(tuple, trials.filter(like="hp_").astype(str).values)}) == 8


def test_sqlite_is_refused_for_several_workers(tiny_folder, tmp_path):
    result = run_cli(*optuna_args(tiny_folder, tmp_path, "x", "--workers", "2"))
    assert result.returncode == 2
    assert "--workers 2 needs a server database" in error_lines(result)[0]
    assert not (tmp_path / "x").exists()


def test_unreachable_postgresql_is_one_line(tiny_folder, tmp_path):
    result = run_cli(
        *optuna_args(
            tiny_folder, tmp_path, "x", "--storage", "postgresql://nobody@127.0.0.1:9/none"
        )
    )
    assert result.returncode == 2
    [line] = error_lines(result)
    assert "--storage postgresql://nobody@127.0.0.1:9/none: cannot open it" in line


def test_a_killed_worker_leaves_the_others_running(tmp_path, postgres_url):
    """SIGKILL one of two workers mid-trial: its trial is failed by the heartbeat and retried."""
    folder = link_images(tmp_path / "data", {"train": 60, "validation": 20})
    parent = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "run_search.py"),
            *optuna_args(
                folder,
                tmp_path,
                "kill",
                "--max-trials",
                "4",
                "--workers",
                "2",
                "--storage",
                postgres_url,
                "--heartbeat",
                "1",
                "--epochs",
                "3",
                "--image-size",
                "64",
                "--pruner",
                "none",
            ),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    storage = optuna.storages.RDBStorage(postgres_url)
    deadline = time.monotonic() + 300
    victim = None
    while victim is None and time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name="kill", storage=storage)
        except KeyError:
            continue
        running = study.get_trials(states=(TrialState.RUNNING,))
        if running and running[0].user_attrs.get("epochs"):  # mid-trial, past its first epoch
            workers = subprocess.run(
                ["pgrep", "-P", str(parent.pid)], capture_output=True, text=True
            ).stdout.split()
            victim = int(workers[0])
            os.kill(victim, signal.SIGKILL)
    assert victim is not None, "no trial was seen running"
    _, stderr = parent.communicate(timeout=600)
    assert parent.returncode == 0, stderr[-2000:]
    study = optuna.load_study(study_name="kill", storage=postgres_url)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 4
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert failed, "the killed worker's trial was not failed"
    retried = {t.system_attrs.get("failed_trial") for t in study.trials}
    assert {t.number for t in failed} <= retried
    trials = RunStore(tmp_path / "kill").trials()
    assert sorted(trials["trial_id"]) == [t.number for t in study.trials]
    assert (trials["status"] == "complete").sum() == 4
    lost = trials[trials["status"] == "failed"]
    assert lost["error"].str.contains("no heartbeat").all()
    assert np.isfinite(trials.query("status == 'complete'")["val_accuracy"]).all()


def test_enqueued_sets_run_first_and_only_once(tiny_folder, tmp_path):
    from search.steps import SearchConfig, run_search

    sets = [{"conv_blocks": 1, "filters_1": 32, "learning_rate": 0.001, "pooling": "global_avg"}]
    (tmp_path / "baselines.json").write_text(json.dumps(sets))
    config = SearchConfig(
        space="scratch",
        data=str(tiny_folder),
        backend="optuna",
        max_trials=2,
        epochs=1,
        image_size=32,
        batch_size=16,
        name="enq",
        runs_dir=str(tmp_path),
        enqueue=str(tmp_path / "baselines.json"),
    )
    run_search(config)
    store = run_search(SearchConfig(**{**config.__dict__, "max_trials": 3}))
    trials = store.trials()
    first = trials.iloc[0]
    assert (first["hp_conv_blocks"], first["hp_filters_1"], first["hp_pooling"]) == (
        1,
        32,
        "global_avg",
    )
    matches = trials[
        (trials["hp_conv_blocks"] == 1)
        & (trials["hp_filters_1"] == 32)
        & (trials["hp_learning_rate"] == 0.001)
    ]
    assert len(matches) == 1, "an enqueued set ran twice after resume"
    assert list(trials["trial_id"]) == [0, 1, 2]


@pytest.mark.failure
def test_a_trial_killed_before_its_first_heartbeat_is_retried(tiny_folder, tmp_path):
    # A worker killed between popping its trial and the trial's first heartbeat leaves it
    # RUNNING with no heartbeat, which Optuna never judges stale: ask() leaves one just so.
    args = optuna_args(tiny_folder, tmp_path, "orphan", "--heartbeat", "1", "--pruner", "none")
    first = run_cli(*args, "--max-trials", "1")
    assert first.returncode == 0, error_lines(first)
    url = f"sqlite:///{tmp_path}/orphan/study.db"
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=1)
    orphan = optuna.load_study(study_name="orphan", storage=storage).ask()
    resumed = run_cli(*args, "--max-trials", "2", "--resume", timeout=180)
    assert resumed.returncode == 0, error_lines(resumed)
    trials = RunStore(tmp_path / "orphan").trials().set_index("trial_id")
    assert (trials["status"] == "complete").sum() == 2
    assert trials.loc[orphan.number, "status"] == "failed"
    assert trials.loc[orphan.number, "error"] == "worker stopped (no heartbeat); retried as trial 2"
    # Progress counts as the budget does, the stored lost trial not among them.
    third = run_cli(*args, "--max-trials", "3", "--resume", timeout=180)
    assert third.returncode == 0, error_lines(third)
    assert "trial 3 (3/3) complete" in third.stdout, third.stdout
