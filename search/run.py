"""One search, start to finish: data, space, back end, run store, test score, report."""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from reports.html import write_report
from search.data import ImageData, load_image_data, resolve_data_dir
from search.errors import SearchStopped, UsageError, first_line
from search.store import RunStore
from spaces import get_space
from spaces.context import SpaceContext

# Settings a resumed run must share with the run it continues.
RESUME_KEYS = (
    "space",
    "backend",
    "algorithm",
    "data",
    "image_size",
    "split_seed",
    "weights",
    "fix",
)
REPORT_EVERY_S = 60.0
REPORT_SHARE = 20  # wait at least 20 times as long as the last report took
VERSIONED = ("tensorflow", "keras", "keras-tuner", "optuna", "numpy", "pandas", "pillow")


@dataclass(frozen=True)
class SearchConfig:
    space: str = "transfer"
    data: str = "cats_and_dogs_filtered"
    backend: str = "keras-tuner"
    algorithm: str = "random"
    max_trials: int = 10
    epochs: int = 10
    patience: int = 3
    warmup_epochs: int = 0
    clean_train_eval: str = "every"  # inference-mode training figures: every, best or off
    image_size: int = 160
    batch_size: int = 32
    seed: int = 42
    split_seed: int = 1337
    weights: str = "imagenet"
    name: str | None = None
    runs_dir: str = "runs"
    resume: bool = False
    tensorboard: bool = False
    verbose: bool = False
    max_consecutive_failures: int = 3
    with_baselines: bool = False
    sampler: str = "tpe"
    pruner: str = "median"
    storage: str | None = None
    workers: int = 1
    heartbeat: int = 60
    enqueue: str | None = None
    fix: tuple[str, ...] = ()  # NAME=VALUE pins (search.fixed)
    cache_dir: str | None = None
    no_feature_cache: bool = False
    mixed_precision: str = "auto"
    jit: str = "auto"
    gpu_memory_mb: int | None = None  # per process, on each GPU it sees (search.devices)
    # MiB; 0 never restarts. The CLI's default is 256: only a command can be started again.
    max_memory_growth: int = 0
    confirm_top: int = 0  # finalists trained again with confirm_seeds fresh seeds (search.confirm)
    confirm_seeds: int = 2
    refit: bool = False  # the best configuration trained again on training + validation images
    worker: bool = False  # set in the processes that --workers starts
    worker_index: int = 0  # offsets the sampler's seed, so workers do not propose alike

    def __post_init__(self):
        object.__setattr__(self, "fix", tuple(self.fix))  # from argparse or run.json: a list
        if self.name is None:  # named once, so every message and path agrees
            object.__setattr__(self, "name", f"{self.space}-{datetime.now():%Y%m%d-%H%M%S}")

    def run_name(self) -> str:
        return self.name


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in VERSIONED:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def find_store(config: SearchConfig) -> RunStore:
    """The run's store, not created yet; --resume needs a stored run."""
    store = RunStore(Path(config.runs_dir) / config.run_name())
    if config.resume and not store.exists():
        raise UsageError(f"--resume: no run at {store.run_dir}; start it without --resume")
    return store


def create_store(store: RunStore) -> None:
    try:
        store.create()
    except OSError as error:
        raise UsageError(
            f"cannot create {store.run_dir} ({error.strerror}); pass a writable --runs-dir"
        ) from None


def _same_setting(key: str, stored, wanted) -> bool:
    if key == "data":  # one folder, however it is spelt (a checkout moved beside the data)
        return os.path.realpath(stored) == os.path.realpath(wanted)
    return stored == wanted


def _check_same_run(stored: dict, wanted: dict, run_dir: Path) -> None:
    differ = [
        f"{k}: stored {stored.get(k)!r}, asked {wanted[k]!r}"
        for k in RESUME_KEYS
        # A run started before a setting existed ran without it: its unset value matches.
        if (not _same_setting(k, stored[k], wanted[k]) if k in stored else bool(wanted[k]))
    ]
    if differ:
        raise UsageError(
            f"{run_dir} was started with other settings ({'; '.join(differ)}); "
            f"rerun with the stored settings or pick another --name"
        )


def describe_run(
    config: SearchConfig, data: ImageData, ctx: SpaceContext, devices: list[str], precision: str
) -> dict:
    return asdict(config) | {
        "fix": list(config.fix),  # as run.json gives it back, so a resume compares equal
        "precision": precision,
        "name": config.run_name(),
        "command": sys.argv,
        "data": str(data.root.absolute()),
        "layout": data.layout,
        "class_names": data.class_names,
        "counts": data.counts(),
        "skipped": data.skipped,
        "alpha": ctx.alpha,
        "versions": _versions(),
        "devices": devices,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def storage_url(config: SearchConfig, store: RunStore) -> str:
    """The Optuna storage: --storage, or the embedded default, SQLite in the run directory."""
    return config.storage or f"sqlite:///{(store.run_dir / 'study.db').absolute()}"


def read_enqueue(path: str | None) -> list[dict]:
    """Hyperparameter sets to run first: a JSON list of {name: value} objects."""
    if path is None:
        return []
    try:
        sets = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UsageError(f"--enqueue {path}: cannot read it as JSON ({error})") from None
    if not isinstance(sets, list) or not all(isinstance(v, dict) for v in sets):
        raise UsageError(f"--enqueue {path}: expected a JSON list of {{name: value}} objects")
    return sets


def first_trials(
    config: SearchConfig, space, ctx: SpaceContext, fixed: dict, queued: list[dict]
) -> list[dict]:
    """Hyperparameter sets to run first: the documents' baselines of the space (with
    --with-baselines, or always for the baselines space) that agree with --fix, then the
    `queued` sets of --enqueue, checked against the space and --fix."""
    from search.fixed import agreeing, check_enqueued
    from spaces.baselines import for_space, preset_of

    wanted = config.with_baselines or config.space == "baselines"
    baselines = for_space(config.space) if wanted else []
    kept = agreeing(baselines, fixed)
    for values in baselines:
        if values not in kept:
            # The baselines space's points are {"baseline": name}; other spaces' are the values.
            name = values.get("baseline") or preset_of(config.space, values)
            print(f"baseline {name} left out: --fix pins what it sets otherwise", flush=True)
    if queued:
        from search.backends.keras_tuner import declared_space

        declared = declared_space(space, ctx)
        kept += check_enqueued(queued, declared, fixed, f"--enqueue {config.enqueue}")
    if len(kept) > config.max_trials and config.space != "baselines":
        print(
            f"{len(kept)} first trials queued; --max-trials {config.max_trials} runs the first "
            f"{config.max_trials} of them",
            flush=True,
        )
    return kept


def check_options(config: SearchConfig) -> None:
    """Refuse option combinations that cannot work, before anything is created."""
    if config.warmup_epochs >= config.epochs:
        raise UsageError(
            f"--warmup-epochs {config.warmup_epochs} leaves no epoch of --epochs "
            f"{config.epochs} to judge; pass fewer warm-up epochs or more epochs"
        )
    if config.backend != "optuna":
        if config.workers > 1 or config.storage:
            raise UsageError(
                "--workers and --storage need --backend optuna; Keras Tuner runs in parallel "
                "through its chief/worker mode (see the README)"
            )
        return
    _check_sampler_installed(config.sampler)
    if config.workers > 1 and (config.storage is None or config.storage.startswith("sqlite")):
        raise UsageError(
            f"--workers {config.workers} needs a server database: SQLite is not for parallel "
            f"writers (Optuna FAQ); pass --storage postgresql://USER@HOST/DB"
        )
    if config.storage is not None:
        from search.backends.optuna import open_storage

        open_storage(config.storage, config.heartbeat)  # fails fast on a bad or unreachable URL


def _check_sampler_installed(sampler: str) -> None:
    """A sampler whose module Optuna imports only when it first samples fails every trial but
    the first without it: refuse it before any trial, naming what to install."""
    from search.backends import SAMPLER_NEEDS

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


def score_best_on_test(store: RunStore, data: ImageData) -> float | None:
    """Test accuracy of the stored best model; the test split is used here and nowhere else.
    Its per-image test predictions are stored, its validation ones too where its trial left
    none, with both splits' files and labels, so the report can show its mistakes."""
    import keras

    from search.stats import predicted_classes

    if not store.best_model_path.exists():
        return None
    trial_id = store.read_best_hparams()["trial_id"]
    model = keras.saving.load_model(store.best_model_path, safe_mode=True)
    for name in ("validation", "test"):
        split = data.split(name)
        store.save_split_images(name, split.files, split.y)
        if len(split) and (name == "test" or store.predictions(trial_id, name) is None):
            store.save_predictions(trial_id, name, model.predict(split.x, verbose=0))
    if len(data.test) == 0:
        return None
    # The accuracy is counted from the stored predictions, so the two always agree.
    correct = predicted_classes(store.predictions(trial_id, "test")) == data.test.y
    accuracy = float(correct.mean())
    store.set_test_accuracy(trial_id, accuracy)
    return accuracy


def run_search(config: SearchConfig) -> RunStore:
    # Growth even if TensorFlow's runtime starts before configure_devices (read by TensorFlow
    # when it starts a GPU, so setting it here holds for the CLI, the Python API and workers).
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    store = find_store(config)
    check_options(config)
    queued = read_enqueue(config.enqueue)  # unreadable JSON is refused before the run exists
    root = resolve_data_dir(config.data)
    # Weights are checked before the run directory exists, so a bad --weights leaves nothing.
    weights, alpha, devices = "imagenet", 1.0, None
    if config.space in ("transfer", "baselines"):  # both build MobileNetV2 backbones
        from search.devices import configure_devices
        from search.weights import backbone_weights

        # Building the backbone starts TensorFlow's runtime: the devices are set up before.
        devices = configure_devices(config.gpu_memory_mb)
        weights, alpha = backbone_weights(config.weights, config.image_size)
    create_store(store)
    if config.worker:  # the process that started the workers holds the run's lock
        return _search_locked(config, store, root, weights, alpha, queued, devices)
    with store.exclusive_run():
        return _search_locked(config, store, root, weights, alpha, queued, devices)


def _search_locked(
    config: SearchConfig,
    store: RunStore,
    root: Path,
    weights: str,
    alpha: float,
    queued: list[dict],
    devices: list[str] | None,
) -> RunStore:
    """The search, holding the run's lock; `devices` are the configured devices' names, or
    None when run_search has not configured them yet."""
    cache_dir = Path(config.cache_dir) if config.cache_dir else store.run_dir / "cache"
    data = load_image_data(root, config.image_size, config.split_seed, cache_dir=cache_dir)
    # TensorFlow is imported only once the inputs are known to be usable.
    from search.devices import configure_devices, configure_precision
    from search.features import FeatureCache
    from search.trial import TrainSettings, TrialRunner

    if devices is None:  # first, before anything below starts TensorFlow's runtime
        devices = configure_devices(config.gpu_memory_mb)
    space = get_space(config.space)
    num_classes = len(data.class_names)
    ctx = SpaceContext(config.image_size, num_classes, weights, alpha)
    precision = configure_precision(config.mixed_precision)
    fixed = pinned_values(config, space, ctx)
    enqueued = first_trials(config, space, ctx, fixed, queued)
    if config.space == "baselines":  # every preset that --fix leaves, exactly once
        config = replace(config, max_trials=len(enqueued))
    grid = checked_grid(config, space, ctx, fixed)
    info = describe_run(config, data, ctx, devices, precision)
    if store.exists():
        _check_same_run(store.read_run_info(), info, store.run_dir)
        info["started_at"] = store.read_run_info()["started_at"]
    if not config.worker:
        store.reconcile()
        store.write_run_info(info | {"status": "running"})
        # Validation labels stored now, so reports written during the search can mark ties.
        store.save_split_images("validation", data.validation.files, data.validation.y)
    print(
        f"run {store.run_dir}: {len(data.train)} train / {len(data.validation)} validation / "
        f"{len(data.test)} test images of {num_classes} classes, {len(data.skipped)} skipped",
        flush=True,
    )
    settings = TrainSettings(
        epochs=config.epochs,
        patience=config.patience,
        batch_size=config.batch_size,
        seed=config.seed,
        verbose=config.verbose,
        tensorboard=config.tensorboard,
        jit=config.jit,
        precision=precision,
        warmup_epochs=config.warmup_epochs,
        clean_train_eval=config.clean_train_eval,
    )
    # The report is rewritten as trials finish, so a long search can be watched by reloading.
    runner = TrialRunner(
        space,
        ctx,
        data,
        store,
        settings,
        # Hyperband sizes its own brackets from --epochs; it has no trial budget to show.
        None if config.algorithm == "hyperband" else config.max_trials,
        after_trial=ReportRefresher(store.run_dir),
        features=None if config.no_feature_cache else FeatureCache(data, cache_dir),
        max_memory_growth_mb=config.max_memory_growth,
    )
    stopped = None
    with frozen_startup_objects():
        try:
            if config.backend == "optuna":
                _search_optuna(config, runner, store, enqueued, len(devices), fixed, grid)
            else:
                from search.backends import keras_tuner
                from search.fixed import pinned_space

                keras_tuner.search(
                    space,
                    ctx,
                    runner,
                    config.algorithm,
                    config.max_trials,
                    config.seed,
                    config.max_consecutive_failures,
                    config.verbose,
                    queued=enqueued,
                    hyperparameters=pinned_space(keras_tuner.declared_space(space, ctx), fixed)
                    if fixed
                    else None,
                )
        except SearchStopped as error:
            stopped = error
        except KeyboardInterrupt:
            if not config.worker:
                store.write_run_info(info | {"status": "interrupted"})
                write_report(store.run_dir)
            raise
    if config.worker:  # the process that started the workers scores and reports
        if stopped:
            raise stopped
        return store
    finish(config, runner, info, stopped)
    if stopped:
        raise stopped
    return store


def finish(config: SearchConfig, runner, info: dict, stopped: SearchStopped | None) -> None:
    """After the search: confirm the finalists (--confirm-top), score the best model on the
    test split, refit it on training + validation images (--refit), record and report."""
    from search.confirm import confirm_finalists
    from search.refit import refit_best

    store, data = runner.store, runner.data
    if config.confirm_top and not stopped:
        try:
            info["confirm"] = confirm_finalists(runner, config.confirm_top, config.confirm_seeds)
        except KeyboardInterrupt:  # finished runs are kept under RUNDIR/confirm/
            store.write_run_info(info | {"status": "interrupted"})
            raise
    test_accuracy = score_best_on_test(store, data)
    if config.refit and not stopped:
        info["refit"] = refit_best(store, runner.space, runner.ctx, data, runner.settings)
    finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    status = f"stopped: {stopped}" if stopped else "finished"
    store.write_run_info(
        info | {"status": status, "test_accuracy": test_accuracy, "finished_at": finished_at}
    )
    write_report(store.run_dir)


@contextlib.contextmanager
def frozen_startup_objects() -> Iterator[None]:
    """Everything alive when the search starts (modules, TensorFlow's registries, the images)
    lives until it ends, so the garbage collection at each trial's start skips it: scanning it
    took 0.3 s of a 2 s trial on cached features."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class ReportRefresher:
    """Rewrites the report after a trial, every `every_s` seconds at most and at most 1/20 of
    the time (rendering takes seconds, longer than a trial on cached features); the run writes
    it again at the end. A report that fails is reported, never fatal."""

    def __init__(self, run_dir: Path, every_s: float = REPORT_EVERY_S):
        self.run_dir, self.every_s = run_dir, every_s
        self.wait_s, self.last = every_s, time.monotonic()

    def __call__(self) -> None:
        if time.monotonic() - self.last < self.wait_s:
            return
        start = time.monotonic()
        try:
            write_report(self.run_dir)
        except Exception as error:
            message = f"report not updated: {type(error).__name__}: {error}"
            print(message, file=sys.stderr, flush=True)
        self.last = time.monotonic()
        self.wait_s = max(self.every_s, REPORT_SHARE * (self.last - start))


def pinned_values(config: SearchConfig, space, ctx: SpaceContext) -> dict:
    """--fix values, checked against the space before any trial runs."""
    if not config.fix:
        return {}
    from search.backends.keras_tuner import declared_space
    from search.fixed import parse_fixed

    return parse_fixed(config.fix, declared_space(space, ctx))


def checked_grid(config: SearchConfig, space, ctx: SpaceContext, fixed: dict) -> dict | None:
    """With a grid search, its points per hyperparameter, sized before any trial: an Optuna
    grid over GRID_MAX_POINTS is refused (search.backends.optuna.checked_grid). Keras Tuner's
    grid is walked lazily, so it is only sized, for the user to see what --max-trials covers."""
    optuna_grid = config.backend == "optuna" and config.sampler == "grid"
    if not optuna_grid and not (config.backend != "optuna" and config.algorithm == "grid"):
        return None
    from search.backends.keras_tuner import declared_space
    from search.backends.optuna import checked_grid as optuna_checked_grid
    from search.fixed import grid_size, grid_space, pinned_space

    declared = pinned_space(declared_space(space, ctx), fixed)
    grid = optuna_checked_grid(declared) if optuna_grid else grid_space(declared)
    points = grid_size(grid)
    covered = "all of them" if config.max_trials >= points else f"the first {config.max_trials}"
    print(f"grid search: {points:,} points; this run tries {covered}", flush=True)
    return grid


def _search_optuna(
    config, runner, store, enqueued: list[dict], n_gpus: int, fixed: dict, grid: dict | None
) -> None:
    import optuna

    from search.backends import optuna as backend
    from search.workers import run_workers

    if not config.verbose:  # our one line per trial replaces Optuna's own
        optuna.logging.set_verbosity(optuna.logging.WARNING)

    study = backend.open_study(
        storage_url(config, store),
        config.run_name(),
        None,  # seeded below, from the trials the study already holds
        backend.make_pruner(config.pruner, config.epochs, config.warmup_epochs),
        config.heartbeat,
    )
    seed = backend.sampler_seed(config.seed, config.worker_index, len(study.trials))
    study.sampler = backend.make_sampler(config.sampler, seed)
    if not config.worker:
        backend.enqueue(study, enqueued)
    try:
        if config.workers > 1 and not config.worker:
            run_workers(config, config.workers, n_gpus if n_gpus > 1 else 0)
        else:
            backend.search(
                study,
                runner,
                config.max_trials,
                pruning=config.pruner != "none",
                max_consecutive_failures=config.max_consecutive_failures,
                fixed=fixed,
                storage_url=storage_url(config, store),
                grid=grid,
            )
    finally:
        if not config.worker:
            backend.sync_store(study, store)
