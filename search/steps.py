"""A search in three steps: `prepare` (inputs, data, devices, space, first trials, resume
check, run.json) -> the back end's `search` (search/backends) -> `finish` (confirmation,
test score, refit, report).

The process that owns the run holds its lock and writes run.json, scores and reports; a
--workers worker (`config.worker`) only runs trials, and that is decided once, in `prepare`.
The report is a hook (`Report`) the caller passes in, so search/ never imports reports/.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from search.backends import Backend, get_backend
from search.config import SearchConfig, config_defaults
from search.console import log, start_keras_backend
from search.data import ImageData, ImagesBySize, load_image_data, resolve_data_dir
from search.errors import SearchStopped, UsageError, first_line, write_faults_say
from search.keras_backend import (
    check_backend_options,
    choose_backend,
    configured_backend,
    library_version,
)
from search.store import RunStore
from search.trial_edge import TrialHook, TrialResult
from spaces import Space, declared_space, get_space, sized_space
from spaces.context import DEFAULT_BACKBONE, BackboneWeights, SpaceContext
from spaces.user import SpaceError, check_contract, is_user_space, source_digest

if TYPE_CHECKING:
    import keras_tuner as kt

    from search.trial import TrialRunner

# Settings a resumed run must share with the run it continues.
RESUME_KEYS = (
    "space",
    "backend",
    "algorithm",
    "data",
    "labels",
    "objective",
    "objectives",
    "image_size",
    "image_sizes",
    "split_seed",
    "weights",
    "backbone_weights",
    "backbones",
    "fix",
)
REPORT_EVERY_S = 60.0
REPORT_SHARE = 20  # wait at least 20 times as long as the last report took
VERSIONED = (
    *("tensorflow", "torch", "jax", "keras", "keras-tuner", "optuna"),
    *("numpy", "pandas", "pillow"),
)

_DEFAULTS = config_defaults()
Report = Callable[[Path], object]  # renders a run directory's report (reports.html.write_report)


@dataclass
class PreparedRun:
    """Everything a back end needs to search, fixed before the first trial."""

    config: SearchConfig
    backend: Backend
    store: RunStore
    data: ImageData  # decoded at --image-size
    images_at: ImagesBySize  # the same images at another size (--image-sizes)
    space: Space
    ctx: SpaceContext
    declared: kt.HyperParameters  # the space's hyperparameters, --fix values pinned
    fixed: dict  # --fix values by name
    first_trials: list[dict]  # baselines and --enqueue sets, run before any proposal
    grid: dict | None  # a grid search's values per hyperparameter (Backend.grid)
    info: dict  # run.json
    devices: list[str]
    precision: str
    owner: bool  # writes run.json, scores and reports: False in a --workers worker
    report: Report | None


def run_search(config: SearchConfig, report: Report | None = None) -> RunStore:
    """Search as `config` says, writing the run directory; `report` renders it as trials finish
    and at the end. Raises SearchStopped when the search stopped early (its run is kept), and
    WriteFault, saying how to resume, when the machine refused a write."""
    with write_faults_say(partial(_after_a_write_fault, config)), prepare(config, report) as run:
        runner = trial_runner(run)
        stopped = search(run, runner)
        if run.owner:
            finish(run, runner, stopped)
    if stopped:
        raise stopped
    return run.store


def _after_a_write_fault(config: SearchConfig) -> str:
    """What to do once the machine refused a write. Finished trials are kept (the store writes
    whole files), so a run with its run.json resumes; one without has nothing to resume yet."""
    again = (
        f"rerun with --resume --name {config.run_name()} --runs-dir {config.runs_dir}"
        if RunStore(Path(config.runs_dir) / config.run_name()).exists()
        else "run the same command again"
    )
    return f"free space (or make it writable) or pass --runs-dir/--cache-dir elsewhere; {again}"


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
    if key in ("data", "labels") and stored and wanted:  # one file, however it is spelt
        return os.path.realpath(stored) == os.path.realpath(wanted)
    return stored == wanted or (not stored and not wanted)  # None, () and [] alike


def _check_same_run(stored: dict, wanted: dict, run_dir: Path) -> None:
    differ = [
        f"{k}: stored {stored.get(k)!r}, asked {wanted[k]!r}"
        for k in RESUME_KEYS
        # A run started before a setting existed ran at its default.
        if not _same_setting(k, stored.get(k, _DEFAULTS.get(k)), wanted[k])
    ]
    if differ:
        raise UsageError(
            f"{run_dir} was started with other settings ({'; '.join(differ)}); "
            f"rerun with the stored settings or pick another --name"
        )


def _deploy_format() -> str:
    from search.deploy import deploy_format

    return deploy_format()


def check_same_keras_backend(store: RunStore, keras_backend: str) -> None:
    """A run resumes on the Keras backend it started on: its checkpoints and its trials'
    figures are that backend's (a run from before the choice existed ran on TensorFlow)."""
    stored = store.read_run_info().get("keras_backend", "tensorflow")
    if stored != keras_backend:
        raise UsageError(
            f"{store.run_dir} was trained on the {stored} backend of Keras, not {keras_backend}: "
            f"resume it with --keras-backend {stored}, or pick another --name"
        )


def _check_same_deploy_format(stored: dict, info: dict, run_dir: Path) -> None:
    """Trials timed as TFLite and as ONNX do not rank together: a run measured one way
    resumes only where the same file can be measured (TensorFlow installed or not)."""
    before, now = stored.get("deploy_format"), info.get("deploy_format")
    if before and now and before != now:
        missing = (
            "TensorFlow is not installed here" if now == "onnx" else "TensorFlow is installed here"
        )
        raise UsageError(
            f"{run_dir} measured its trials as {before} and would now measure {now} "
            f"({missing}): resume it where it started, or pick another --name"
        )


def describe_run(
    config: SearchConfig,
    *,
    data: ImageData,
    ctx: SpaceContext,
    devices: list[str],
    precision: str,
) -> dict:
    """The run's run.json: its settings, data, Keras backend, machine and library versions."""
    keras_backend = configured_backend()  # Keras is imported: the backend it runs on
    return asdict(config) | {
        # As run.json gives them back, so a resume compares equal.
        "fix": list(config.fix),
        "objectives": list(config.objectives),
        "image_sizes": list(config.image_sizes),
        "backbones": list(config.backbones),
        "backbone_weights": list(config.backbone_weights),
        # Each searched backbone as resolved: its weights (None: random) and variant.
        "backbone_choices": {
            choice.name: {"weights": choice.weights, **choice.options}
            for choice in ctx.backbone_choices
        },
        "precision": precision,
        "name": config.run_name(),
        "command": sys.argv,
        "data": str(data.root.absolute()),
        "layout": data.layout,
        "class_names": data.class_names,
        "counts": data.counts(),
        "skipped": data.skipped,
        # The backbone's variant (MobileNetV2's "alpha"), as run.json has always recorded it.
        **ctx.backbone.options,
        "keras_backend": keras_backend,
        # Which file --measure-deploy times (TFLite, or ONNX without TensorFlow): one per run.
        "deploy_format": _deploy_format() if config.measures_deploy() else None,
        "keras_backend_version": library_version(keras_backend),
        "versions": _versions(),
        "devices": devices,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


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
    config: SearchConfig, *, declared: kt.HyperParameters, fixed: dict, queued: list[dict]
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
            log.info(f"baseline {name} left out: --fix pins what it sets otherwise")
    if queued:
        kept += check_enqueued(queued, declared, fixed, source=f"--enqueue {config.enqueue}")
    if len(kept) > config.max_trials and config.space != "baselines":
        log.info(
            f"{len(kept)} first trials queued; --max-trials {config.max_trials} runs the first "
            f"{config.max_trials} of them"
        )
    return kept


def check_options(config: SearchConfig) -> None:
    """Refuse option combinations that cannot work whatever the back end."""
    if config.confirm_top and config.objective != "val_accuracy":
        raise UsageError(
            f"--confirm-top ranks finalists by the mean validation accuracy of their runs; use "
            f"it with --objective val_accuracy, not {config.objective}"
        )
    if config.image_sizes and (config.refit or config.confirm_top):
        raise UsageError(
            "--refit and --confirm-top train the best configuration again at --image-size, not "
            "at its own size: search with --image-sizes, then rerun them with --fix "
            "image_size=SIZE"
        )
    if config.warmup_epochs >= config.epochs:
        raise UsageError(
            f"--warmup-epochs {config.warmup_epochs} leaves no epoch of --epochs "
            f"{config.epochs} to judge; pass fewer warm-up epochs or more epochs"
        )


@dataclass(frozen=True)
class _Inputs:
    """What the command asks for, checked before the run directory exists."""

    backend: Backend
    root: Path
    queued: list[dict]
    # Resolved where the space builds one, else the default; the first is the default choice.
    backbones: tuple[BackboneWeights, ...]
    devices: list[str] | None  # configured already where the backbone's weights needed it
    keras_backend: str  # tensorflow, torch or jax


def check_inputs(config: SearchConfig) -> _Inputs:
    """Options, --enqueue, the data folder, the back end's options and the backbone's weights,
    so bad input leaves nothing behind. TensorFlow is imported once the cheap checks pass."""
    check_options(config)
    queued = read_enqueue(config.enqueue)
    root = resolve_data_dir(config.data)
    if config.labels is not None:
        from search.labels import read_label_rows

        read_label_rows(Path(config.labels))  # an unreadable CSV is refused before the run
    keras_backend = choose_backend(config.keras_backend, gpu_memory_mb=config.gpu_memory_mb)
    check_backend_options(config, keras_backend)
    start_keras_backend(verbose=config.verbose)  # its start-up lines shown only with --verbose
    backend = get_backend(config.backend)
    backend.check_options(config)
    if not load_space(config.space).uses_backbone:
        return _Inputs(backend, root, queued, (DEFAULT_BACKBONE,), None, keras_backend)
    from search.devices import configure_devices
    from search.weights import backbone_names, named_weights, resolve_backbones

    names, named = backbone_names(config.backbones), named_weights(config.backbone_weights)
    # Building the backbone starts TensorFlow's runtime: the devices are set up before.
    devices = configure_devices(config.gpu_memory_mb)
    backbones = resolve_backbones(names, config.weights, named, image_size=config.image_size)
    return _Inputs(backend, root, queued, backbones, devices, keras_backend)


@contextlib.contextmanager
def prepare(config: SearchConfig, report: Report | None) -> Iterator[PreparedRun]:
    """Step one: check the inputs, create (or reopen) the run directory and, in the process
    that owns the run, hold its lock for the block; then load the data and devices, learn the
    space, check --fix and the first trials, compare a resumed run's settings, and write
    run.json."""
    # Growth even if TensorFlow's runtime starts before configure_devices (read by TensorFlow
    # when it starts a GPU, so setting it here holds for the CLI, the Python API and workers).
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    owner = not config.worker  # the process that started the workers holds the run's lock
    store = find_store(config)
    inputs = check_inputs(config)
    if store.exists():
        check_same_keras_backend(store, inputs.keras_backend)
    create_store(store)
    with store.exclusive_run() if owner else contextlib.nullcontext():
        run = _load(config, store=store, inputs=inputs, owner=owner, report=report)
        if owner:
            store.reconcile()
            store.write_run_info(run.info | {"status": "running"})
            # Validation labels stored now, so reports written during the search can mark ties.
            store.save_split_images("validation", run.data.validation.files, run.data.validation.y)
        data = run.data
        log.info(
            f"run {store.run_dir}: {len(data.train)} train / {len(data.validation)} validation / "
            f"{len(data.test)} test images of {len(data.class_names)} classes, "
            f"{len(data.skipped)} skipped"
        )
        yield run


def run_images(config: SearchConfig, *, store: RunStore, root: Path) -> ImagesBySize:
    """The run's images, decoded at --image-size now and at each other size on first use."""
    decode = partial(
        load_image_data,
        root,
        split_seed=config.split_seed,
        cache_dir=cache_folder(config, store),
        labels=Path(config.labels).absolute() if config.labels else None,
    )
    return ImagesBySize(decode(config.image_size), decode)


def run_context(config: SearchConfig, *, data: ImageData, inputs: _Inputs) -> SpaceContext:
    """What every build of the run is told: image size, classes, backbone weights, and the
    optimizer steps of a trial trained for all its epochs (for learning-rate schedules)."""
    steps = math.ceil(len(data.train) / config.batch_size) * config.epochs
    return SpaceContext(
        config.image_size,
        len(data.class_names),
        inputs.backbones[0],
        train_steps=steps,
        backbones=inputs.backbones,
    )


def run_space(config: SearchConfig) -> Space:
    """--space, with the input size among its hyperparameters for --image-sizes."""
    space = load_space(config.space)
    if config.image_sizes:
        space = sized_space(space, config.image_sizes, default=config.image_size)
    return space


def _load(
    config: SearchConfig,
    *,
    store: RunStore,
    inputs: _Inputs,
    owner: bool,
    report: Report | None,
) -> PreparedRun:
    """The run's data, devices and space, its first trials and grid, and its run.json."""
    images_at = run_images(config, store=store, root=inputs.root)
    data = images_at(config.image_size)
    # TensorFlow is imported only once the inputs are known to be usable.
    from search.devices import configure_devices, configure_precision
    from search.fixed import parse_fixed, pinned_space

    devices = inputs.devices
    if devices is None:  # first, before anything below starts TensorFlow's runtime
        devices = configure_devices(config.gpu_memory_mb)
    space = run_space(config)
    ctx = run_context(config, data=data, inputs=inputs)
    precision = configure_precision(config.mixed_precision)
    if is_user_space(config.space):  # the built-in spaces keep the contract by construction
        check_user_model(space, ctx)
    declared = declared_space(space, ctx)
    fixed = parse_fixed(config.fix, declared) if config.fix else {}
    enqueued = first_trials(config, declared=declared, fixed=fixed, queued=inputs.queued)
    declared = pinned_space(declared, fixed)
    if config.space == "baselines":  # every preset that --fix leaves, exactly once
        config = replace(config, max_trials=len(enqueued))
    grid = sized_grid(config, inputs.backend, declared)
    info = describe_run(config, data=data, ctx=ctx, devices=devices, precision=precision)
    if is_user_space(config.space):
        info["space_source"] = source_digest(config.space)
    if store.exists():
        stored = store.read_run_info()
        _check_same_run(stored, info, store.run_dir)
        _check_same_space(stored, info, config)
        _check_same_deploy_format(stored, info, store.run_dir)
        info["started_at"] = stored["started_at"]
    return PreparedRun(
        config=config,
        backend=inputs.backend,
        store=store,
        data=data,
        images_at=images_at,
        space=space,
        ctx=ctx,
        declared=declared,
        fixed=fixed,
        first_trials=enqueued,
        grid=grid,
        info=info,
        devices=devices,
        precision=precision,
        owner=owner,
        report=report,
    )


def load_space(spec: str) -> Space:
    """The space `--space` names; a user space that cannot be loaded is refused in one line."""
    try:
        return get_space(spec)
    except SpaceError as error:
        raise UsageError(str(error)) from None


def check_user_model(space: Space, ctx: SpaceContext) -> None:
    """Build a user space once at its defaults and check the model contract (input and output
    shapes, probabilities out) before any trial, so a mismatch is one line, not failed trials."""
    import keras_tuner as kt

    try:
        model = space.build(kt.HyperParameters(), ctx)
    except Exception as error:
        raise UsageError(
            f"--space {space.name}: building the model at its defaults failed: {first_line(error)}"
        ) from None
    try:
        check_contract(model, ctx, space.name)
    except SpaceError as error:
        raise UsageError(str(error)) from None


def _check_same_space(stored: dict, wanted: dict, config: SearchConfig) -> None:
    """A resumed run of a user space goes on with the same file, unless --allow-changed-space."""
    before, now = stored.get("space_source"), wanted.get("space_source")
    if before and now and before["sha256"] != now["sha256"] and not config.allow_changed_space:
        raise UsageError(
            f"--space {config.space}: {now['path']} changed since the run started (sha256 "
            f"{before['sha256'][:12]} then, {now['sha256'][:12]} now); restore it, pick another "
            f"--name, or pass --allow-changed-space to go on with the new file"
        )


def sized_grid(config: SearchConfig, backend: Backend, declared: kt.HyperParameters) -> dict | None:
    """A grid search's points per hyperparameter, checked by the back end and sized before any
    trial, so the user sees what --max-trials covers."""
    grid = backend.grid(config, declared)
    if grid is None:
        return None
    from search.fixed import grid_size

    points = grid_size(grid)
    covered = "all of them" if config.max_trials >= points else f"the first {config.max_trials}"
    log.info(f"grid search: {points:,} points; this run tries {covered}")
    return grid


def cache_folder(config: SearchConfig, store: RunStore) -> Path:
    """Where decoded images and frozen-backbone features are kept: --cache-dir or RUN/cache."""
    return Path(config.cache_dir) if config.cache_dir else store.run_dir / "cache"


def trial_runner(run: PreparedRun) -> TrialRunner:
    """The runner every trial of `run` trains through, whatever the back end, with the hooks
    this run asks for: deployment figures and limits before a trial is recorded, the report's
    refresh after."""
    from search.announce import TrialAnnouncer
    from search.features import FeatureCache
    from search.memory_guard import MemoryGuard
    from search.trial import TrainSettings, TrialRunner

    config = run.config
    # Hyperband sizes its own brackets from --epochs; it has no trial budget to show.
    budget = None if config.algorithm == "hyperband" else config.max_trials
    return TrialRunner(
        run.space,
        run.ctx,
        run.data,
        store=run.store,
        settings=TrainSettings.of(config, run.precision),
        announcer=TrialAnnouncer(run.store, max_trials=budget),
        memory=MemoryGuard(config.max_memory_growth),
        hooks=trial_hooks(run),
        features=None
        if config.no_feature_cache
        else FeatureCache(run.data, cache_folder(config, run.store)),
        images_at=run.images_at if config.image_sizes else None,
    )


def trial_hooks(run: PreparedRun) -> list[TrialHook]:
    """What runs around each trial's record in this run: deployment figures and limits before
    it (search/deployment_hook.py), and the report's refresh after, so a long search can be
    watched by reloading."""
    from search.deployment_hook import DeploymentHook

    config, hooks = run.config, []
    measure, limits = config.measures_deploy(), config.limits()
    if measure or limits:
        hooks.append(DeploymentHook(measure=measure, limits=limits))
    if run.report:
        hooks.append(ReportRefresher(run.report, run.store.run_dir))
    return hooks


def search(run: PreparedRun, runner: TrialRunner) -> SearchStopped | None:
    """Step two: the back end's search. Returns why it stopped early, if it did; on Ctrl-C the
    owner marks the run interrupted and reports it before passing the interrupt on."""
    with frozen_startup_objects():
        try:
            run.backend.search(run, runner)
        except SearchStopped as error:
            return error
        except KeyboardInterrupt:
            if run.owner:
                _interrupted(run)
            raise
    return None


def _interrupted(run: PreparedRun) -> None:
    run.store.write_run_info(run.info | {"status": "interrupted"})
    if run.report is not None:
        run.report(run.store.run_dir)


def finish(run: PreparedRun, runner: TrialRunner, stopped: SearchStopped | None) -> None:
    """Step three, in the owner: confirm the finalists (--confirm-top), score the best model on
    the test split, refit it on training + validation images (--refit), record and report."""
    from search.confirm import confirm_finalists
    from search.refit import refit_best

    config, store, info = run.config, run.store, run.info
    if config.confirm_top and not stopped:
        try:
            info["confirm"] = confirm_finalists(runner, config.confirm_top, config.confirm_seeds)
        except KeyboardInterrupt:  # finished runs are kept under RUNDIR/confirm/
            store.write_run_info(info | {"status": "interrupted"})
            raise
    test_accuracy = score_best_on_test(store, run.images_at)
    if config.refit and not stopped:
        info["refit"] = refit_best(
            store, space=run.space, ctx=run.ctx, data=run.data, settings=runner.settings
        )
    finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    status = f"stopped: {stopped}" if stopped else "finished"
    store.write_run_info(
        info | {"status": status, "test_accuracy": test_accuracy, "finished_at": finished_at}
    )
    if run.report is not None:
        run.report(store.run_dir)


def score_best_on_test(store: RunStore, images_at: Callable[[int], ImageData]) -> float | None:
    """Test accuracy of the stored best model, on the images at its own input size; the test
    split is used here and nowhere else. Its per-image test predictions are stored, its
    validation ones too where its trial left none, with both splits' files and labels, so the
    report can show its mistakes."""
    import keras

    from search.stats import predicted_classes

    if not store.best_model_path.exists():
        return None
    trial_id = store.read_best_hparams()["trial_id"]
    model = keras.saving.load_model(store.best_model_path, safe_mode=True)
    data = images_at(model.input_shape[1])
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


class ReportRefresher(TrialHook):
    """Rewrites the report after a trial is recorded, every `every_s` seconds at most and at
    most 1/20 of the time (rendering takes seconds, longer than a trial on cached features);
    the run writes it again at the end. A report that fails is reported, never fatal."""

    def __init__(self, report: Report, run_dir: Path, every_s: float = REPORT_EVERY_S):
        self.report, self.run_dir, self.every_s = report, run_dir, every_s
        self.wait_s, self.last = every_s, time.monotonic()

    def recorded(self, result: TrialResult) -> None:
        if time.monotonic() - self.last < self.wait_s:
            return
        start = time.monotonic()
        try:
            self.report(self.run_dir)
        except Exception as error:
            message = f"report not updated: {type(error).__name__}: {error}"
            log.warning(message)
        self.last = time.monotonic()
        self.wait_s = max(self.every_s, REPORT_SHARE * (self.last - start))
