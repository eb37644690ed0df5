"""The one training loop every back end calls: build, fit with early stopping, record, judge.

A trial's `best_epoch` is the epoch whose weights the trial keeps: the lowest validation loss,
restored by EarlyStopping(restore_best_weights=True). Every number is read at that epoch, so it
describes the model that would be exported. Training accuracy comes twice: `accuracy` (the
trial's `train_accuracy_fit`) is Keras's running figure during `fit`, with dropout and
augmentation active on weights that change through the epoch, as the documents plot it;
`train_accuracy_clean` and `train_loss_clean` measure the epoch's weights in inference mode on a
fixed sample of training images (`clean_sample`), so `gap_clean` compares like with like.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path

import keras
import numpy as np

from search import compat
from search.checkpoint import (
    Checkpoint,
    ResumableEarlyStopping,
    TrialCheckpoints,
    lowest_after_warmup,
)
from search.config import SearchConfig
from search.console import format_seconds, live_line, live_output, log
from search.data import ImageData, ImagesBySize
from search.deploy import DeployCache, violations
from search.devices import is_out_of_memory
from search.errors import Restart, first_line
from search.features import FeatureCache, FrozenSplit, split_frozen_base
from search.inputs import evaluation_dataset, subset_dataset, training_dataset
from search.schema import PREDICTION_SCORES, TrialStatus
from search.stats import prediction_scores
from search.store import RunStore
from spaces import IMAGE_SIZE, Space
from spaces.context import SpaceContext
from spaces.user import labels_for

HEAD_STEPS_PER_EXECUTION = 32
CLEAN_EVAL = ("every", "best", "off")  # --clean-train-eval: after every epoch, once at the end
CLEAN_KEYS = ("train_accuracy_clean", "train_loss_clean")


@dataclass(frozen=True)
class TrainSettings:
    """How every trial of a run trains; the defaults are the search's (SearchConfig)."""

    epochs: int = SearchConfig.epochs
    patience: int = SearchConfig.patience
    batch_size: int = SearchConfig.batch_size
    seed: int = SearchConfig.seed
    verbose: bool = SearchConfig.verbose
    tensorboard: bool = SearchConfig.tensorboard
    jit: str = SearchConfig.jit  # XLA: "auto" (Keras's choice), "on" or "off"
    precision: str = "float32"  # Keras dtype policy: "float32" or "mixed_float16"
    # Epochs 1..N are never judged nor kept (Keras's start_from_epoch).
    warmup_epochs: int = SearchConfig.warmup_epochs
    clean_train_eval: str = SearchConfig.clean_train_eval  # one of CLEAN_EVAL
    objective: str = SearchConfig.objective  # one of schema.OBJECTIVES
    class_weight: str = SearchConfig.class_weight  # "none" or "balanced"
    measure_deploy: bool = SearchConfig.measure_deploy  # search/deploy.py, per complete trial
    objectives: tuple[str, ...] = SearchConfig.objectives  # --objectives (Optuna), or none
    limits: tuple[tuple[str, float], ...] = ()  # (column, limit): SearchConfig.limits()
    # A trial's state is saved at an epoch's end at most this often (search/checkpoint.py).
    checkpoint_every: float | None = SearchConfig.checkpoint_every

    @classmethod
    def of(cls, config: SearchConfig, precision: str) -> TrainSettings:
        """A search's settings for its trials, at the dtype policy its devices chose."""
        own = ("precision", "limits", "measure_deploy")
        shared = {f.name: getattr(config, f.name) for f in fields(cls) if f.name not in own}
        limits = tuple(config.limits().items())
        measure = config.measures_deploy()
        return cls(**shared, precision=precision, limits=limits, measure_deploy=measure)


@dataclass
class TrialResult:
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
    deploy_error: str | None = None  # why TFLite could not convert the model
    deploy_same_as: int | None = None  # the trial of the same inference graph measured first

    def row(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "trial_id"}


@dataclass(frozen=True)
class _Request:
    """What a back end asks of one run of a trial (TrialRunner.run's arguments)."""

    epochs: int | None
    initial_epoch: int
    initial_weights: Path | None
    extra_callbacks: list[keras.callbacks.Callback]
    prune_on: tuple[type[BaseException], ...]
    on_epoch: Callable[[dict], None] | None
    resume_from: int | None  # the trial whose checkpoint this one continues, if not its own


@dataclass
class _Fit:
    """What the phases of one trial share: its epoch rows and the back end's hooks."""

    trial_id: int
    rows: list[dict]
    extra_callbacks: list[keras.callbacks.Callback]
    on_epoch: Callable[[dict], None] | None
    batch_size: int
    started: float  # time.perf_counter() when the trial's run began
    model: keras.Model | None = None
    features: str | None = None
    head_from_trial: int | None = None
    jit: bool | None = None
    phase: _Phase | None = None  # the last phase trained (or a reused head)
    clean: dict | None = None  # CLEAN_KEYS measured on the kept weights once training ended
    predictions: np.ndarray | None = None  # on the validation split, with the kept weights
    resumed: Checkpoint | None = None  # the checkpoint the trial went on from

    def trained_s(self) -> float:
        """Seconds of training, with those before the checkpoint it went on from."""
        before = self.resumed.seconds if self.resumed is not None else 0.0
        return before + time.perf_counter() - self.started


@dataclass
class _Phase:
    """What a phase trains: the full model on images, or the head on cached features. What is
    measured once training ends runs on the last one, which holds the kept weights."""

    model: keras.Model
    train_x: np.ndarray
    val_x: np.ndarray


class CleanTrainEval(keras.callbacks.Callback):
    """Adds CLEAN_KEYS to each epoch's logs, for EpochRecorder after it: the epoch's weights in
    inference mode (no augmentation, no dropout) on the fixed training sample. Placed first, it
    measures those weights before any callback could restore others."""

    def __init__(self, measure: Callable[[], dict[str, float]]):
        super().__init__()
        self.measure = measure

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.measure())


class ValidationScores(keras.callbacks.Callback):
    """Adds val_auc and val_f1 (search.stats.prediction_scores) to each epoch's logs, for the
    pruner and EpochRecorder after it, from the epoch's predictions on the validation split:
    only when one of them is the --objective, as it costs one more validation pass."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            batches = evaluation_dataset(self.x, self.y, self.batch_size)
            logs.update(prediction_scores(self.y, self.model.predict(batches, verbose=0)))


class LiveProgress(keras.callbacks.Callback):
    """On a terminal, one line rewritten at each epoch's start and end: the trial, the epoch
    of the phase's last, the phase, the elapsed time and the estimated time left (from the
    epochs so far; early stopping usually ends the trial sooner)."""

    def __init__(self, label: str, phase: str, last_epoch: int):
        super().__init__()
        self.label, self.phase, self.last_epoch = label, phase, last_epoch
        self.start, self.first = time.perf_counter(), None

    def on_epoch_begin(self, epoch, logs=None):
        self.first = epoch if self.first is None else self.first
        self._show(epoch + 1, done=epoch - self.first)

    def on_epoch_end(self, epoch, logs=None):
        self._show(epoch + 1, done=epoch + 1 - self.first)

    def _show(self, epoch: int, done: int) -> None:
        elapsed = time.perf_counter() - self.start
        left = self.last_epoch - self.first - done
        eta = format_seconds(elapsed / done * left) if done else "-"
        live_line(
            f"{self.label} epoch {epoch}/{self.last_epoch} ({self.phase}) "
            f"{format_seconds(elapsed)} elapsed, ETA {eta}"
        )


class StopOnNaN(keras.callbacks.Callback):
    """Stops training after an epoch whose loss is not finite; the trial is then judged
    "nan_loss" from its recorded epochs. Keras's TerminateOnNaN checks every batch, and a
    batch hook turns off Keras's asynchronous callbacks and waits for the device every step."""

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True


class EpochRecorder(keras.callbacks.Callback):
    """Appends each finished epoch to the store, so a crash loses at most the current epoch."""

    def __init__(
        self,
        store: RunStore,
        trial_id: int,
        phase: str,
        *,
        rows: list[dict],
        on_epoch: Callable[[dict], None] | None = None,
    ):
        super().__init__()
        self.store, self.trial_id, self.phase = store, trial_id, phase
        self.rows, self.on_epoch = rows, on_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        row = {
            "trial_id": self.trial_id,
            "epoch": epoch + 1,
            "phase": self.phase,
            "seconds": round(time.perf_counter() - self._start, 3),
        }
        measured = ("loss", "accuracy", "val_loss", "val_accuracy", *PREDICTION_SCORES, *CLEAN_KEYS)
        row |= {k: float(logs[k]) for k in measured if k in logs}
        self.rows.append(row)
        self.store.append_epoch(row)
        if self.on_epoch is not None:
            self.on_epoch(row)


def resident_mb() -> float | None:
    """This process's resident memory in MiB (Linux), to see whether trials leak."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def best_row(rows: list[dict], warmup_epochs: int = 0) -> dict:
    """The epoch whose weights the trial keeps: the lowest validation loss after the warm-up,
    as EarlyStopping restores it; the last epoch if all are warm-up (nothing is restored)."""
    return lowest_after_warmup(rows, warmup_epochs) or rows[-1]


def class_weights(y: np.ndarray, mode: str) -> dict[int, float] | None:
    """--class-weight balanced: each class weighs n / (classes x its count) in the loss, as
    scikit-learn's "balanced", so a rare class counts as much as a common one; None otherwise."""
    if mode != "balanced":
        return None
    classes, counts = np.unique(y, return_counts=True)
    return {
        int(c): float(len(y) / (len(classes) * n)) for c, n in zip(classes, counts, strict=True)
    }


def clean_sample(n_train: int, size: int, seed: int) -> np.ndarray:
    """Indices of the training images the clean figures are measured on: a seeded sample of
    `size` (the validation split's size, so both figures carry a like uncertainty), or every
    image when there are fewer. The seed is the run's, so every trial is measured on the same
    images and their figures compare."""
    if n_train <= size:
        return np.arange(n_train)
    return np.sort(np.random.default_rng(seed).choice(n_train, size, replace=False))


def _diverged(rows: list[dict]) -> bool:
    return any(not math.isfinite(r.get("loss", math.nan)) for r in rows)


def _hparams_callback(hp, log_dir: Path, trial_id: int) -> keras.callbacks.Callback:
    """TensorBoard's HParams record of this trial, written the way Keras Tuner writes it."""
    from tensorboard.plugins.hparams import api as hparams_api

    hparams = compat.tensorboard_hparams(hp, hparams_api)
    return hparams_api.KerasCallback(writer=str(log_dir), hparams=hparams, trial_id=str(trial_id))


class TrialRunner:
    """Trains one hyperparameter set of a space on the run's decoded images."""

    def __init__(
        self,
        space: Space,
        ctx: SpaceContext,
        data: ImageData,
        *,
        store: RunStore,
        settings: TrainSettings,
        max_trials: int | None = None,
        after_trial: Callable[[], None] | None = None,
        features: FeatureCache | None = None,
        max_memory_growth_mb: float = 0,
        reuse_heads: bool = True,
        announce_as: str | None = None,
        images_at: ImagesBySize | None = None,
    ):
        self.space, self.ctx, self.data, self.store = space, ctx, data, store
        self.settings, self.max_trials = settings, max_trials
        self.after_trial = after_trial
        self.features = features
        self.max_memory_growth_mb = max_memory_growth_mb
        # A fine-tune trial may take the first stage of an earlier trial with its phase-one
        # values: a run that must train with its own seed (--confirm-top) turns that off.
        self.reuse_heads = reuse_heads
        self.announce_as = announce_as  # the progress line's name for a trial outside a search
        # --image-sizes: the images at the size a trial's model takes (search.data.ImagesBySize).
        self.images_at = images_at
        self._deploy = DeployCache()  # --measure-deploy's figures per inference architecture
        self._resident: list[float] = []  # after each trial run in this process
        self._sample = clean_sample(len(data.train), len(data.validation), settings.seed)
        self.checkpoints = TrialCheckpoints(store.run_dir, settings.checkpoint_every)

    def run(
        self,
        trial_id: int,
        hp,
        *,
        epochs: int | None = None,
        initial_epoch: int = 0,
        initial_weights: Path | None = None,
        extra_callbacks: Sequence[keras.callbacks.Callback] = (),
        prune_on: tuple[type[BaseException], ...] = (),
        on_epoch: Callable[[dict], None] | None = None,
        on_result: Callable[[TrialResult, dict], None] | None = None,
        resume_from: int | None = None,
    ) -> tuple[TrialResult, keras.Model | None]:
        """Train and record one trial. Failures are results, never exceptions.

        A back end passes its pruning callbacks in `extra_callbacks` and the exceptions they
        raise in `prune_on`; `on_epoch` sees every recorded epoch row; `on_result` sees the
        outcome and hyperparameters before the store does, so a back end that keeps its own
        record (an Optuna study) never lags behind the store. A trial goes on from the epoch
        checkpoint that it, or the trial `resume_from` it retries, left (search/checkpoint.py).
        """
        start = time.perf_counter()
        request = _Request(
            epochs,
            initial_epoch,
            initial_weights,
            list(extra_callbacks),
            prune_on,
            on_epoch,
            resume_from,
        )
        fit, error, pruned = self._attempt(trial_id, hp, request, start=start)
        self.checkpoints.discard(trial_id)  # ended: only a trial cut off is continued
        model = fit.model
        seconds = fit.trained_s()
        result = self._judge(
            trial_id, model, fit.rows, error=error, seconds=seconds, clean=fit.clean
        )
        result.batch_size = fit.batch_size
        result.features, result.head_from_trial = fit.features, fit.head_from_trial
        result.jit = fit.jit
        result.rss_mb = resident_mb()
        if result.rss_mb is not None:
            self._resident.append(result.rss_mb)
        if pruned and result.status == TrialStatus.COMPLETE:
            result.status = TrialStatus.PRUNED
        if self.settings.measure_deploy and result.status == TrialStatus.COMPLETE:
            result.__dict__.update(self._deploy.measure(model, trial_id=trial_id))
        self._check_limits(result)
        self._record(result, fit, hp, on_result=on_result)
        return result, (model if result.status == TrialStatus.COMPLETE else None)

    def _attempt(
        self, trial_id: int, hp, request: _Request, *, start: float
    ) -> tuple[_Fit, str, bool]:
        """Train the trial; out of memory, halve the batch and try once more, as AutoKeras
        does. Returns what was trained, the error that ended it ("" for none), and whether
        the back end pruned it."""
        error, pruned = "", False
        for batch_size in (self.settings.batch_size, self.settings.batch_size // 2):
            fit = _Fit(trial_id, [], request.extra_callbacks, request.on_epoch, batch_size, start)
            self._start(trial_id, hp)
            try:
                self._train(hp, fit, request)
                error = ""
            except request.prune_on:
                pruned = True
            except KeyboardInterrupt:
                seconds = round(fit.trained_s(), 3)
                interrupted = {"status": TrialStatus.INTERRUPTED, "error": "interrupted"}
                self.store.finish_trial(trial_id, interrupted | {"duration_s": seconds})
                raise
            except Exception as failure:  # any error in build or fit fails this trial only
                error = first_line(failure)
                if is_out_of_memory(failure):
                    error = f"oom: {error}"
                    if batch_size > 1 and batch_size == self.settings.batch_size:
                        log.info(
                            f"trial {trial_id}: out of memory at batch {batch_size}; "
                            f"retrying once at batch {batch_size // 2}"
                        )
                        continue
            break
        return fit, error, pruned

    def _record(
        self,
        result: TrialResult,
        fit: _Fit,
        hp,
        *,
        on_result: Callable[[TrialResult, dict], None] | None,
    ) -> None:
        """Store the trial's outcome: a complete one's model (staged before its row says
        complete, so the best complete trial always has its model; one that cannot be best is
        not saved at all) and validation predictions, then its row."""
        trial_id, complete = result.trial_id, result.status == TrialStatus.COMPLETE
        if complete and self.store.would_lead(trial_id, result.row()):
            self.store.stage_model(fit.model, trial_id)
        if complete:  # before its row says so, as its model is
            self.store.save_predictions(trial_id, "validation", fit.predictions)
        if on_result is not None:
            on_result(result, hp.values)
        self.store.finish_trial(trial_id, result.row(), hp.values)
        if complete:
            self.store.promote(trial_id, hp.values)
        if len(self.settings.objectives) > 1:  # the front's models, for export --trial N
            self.store.keep_models(fit.model, trial_id, self.store.pareto_front())
        self._announce(result)
        if self.after_trial is not None:
            self.after_trial()

    def check_memory(self) -> None:
        """Raise Restart, between trials, when the next trial would likely take the process
        past `max_memory_growth_mb` above its size after its first trial (the growth so far
        plus the largest growth of one trial)."""
        if not self.max_memory_growth_mb or len(self._resident) < 2:
            return
        grown = self._resident[-1] - self._resident[0]
        step = max(b - a for a, b in zip(self._resident, self._resident[1:], strict=False))
        if grown + max(step, 0) > self.max_memory_growth_mb:
            raise Restart(
                f"the process grew {grown:.0f} MiB over {len(self._resident)} trials "
                f"(--max-memory-growth {self.max_memory_growth_mb:g})"
            )

    def _start(self, trial_id: int, hp) -> None:
        """A clean slate for a trial: no graph or memory left from earlier ones, its own seed."""
        # Also runs gc.collect, and resets Keras's global dtype policy.
        keras.backend.clear_session(free_memory=True)
        keras.mixed_precision.set_global_policy(self.settings.precision)
        keras.utils.set_random_seed(self.settings.seed + trial_id)
        self.store.begin_trial(trial_id, hp.values)

    def _train(self, hp, fit: _Fit, request: _Request) -> None:
        fit.model = model = self.space.build(hp, self.ctx)
        self._use_images_for(model, hp)
        if request.initial_weights is not None:
            with warnings.catch_warnings():  # the new optimizer has no state to restore yet
                warnings.simplefilter("ignore", UserWarning)
                model.load_weights(request.initial_weights)
        initial_epoch = request.initial_epoch
        last = initial_epoch + (request.epochs or self.settings.epochs)
        frozen = split_frozen_base(model) if self.features is not None else None
        if frozen is None:
            first = self._resume(model, fit, hp=hp, request=request)
            self._fit(model, hp, fit, phase="train", initial_epoch=first, epochs=last, saved=True)
        else:
            self._train_head(frozen, hp, fit, initial_epoch=initial_epoch, last=last)
        fine_tune = self.space.fine_tune
        if fit.rows and not _diverged(fit.rows) and fine_tune and fine_tune(hp, model):
            self._fine_tune(model, hp, fit)
        if fit.rows and not _diverged(fit.rows):
            self._measure_kept(fit)

    def _resume(self, model: keras.Model, fit: _Fit, *, hp, request: _Request) -> int:
        """Go on from the checkpoint this trial, or the one it retries, left: its weights into
        the model, and its epochs told again to the store and to the back end's callbacks (the
        pruner, which may prune the trial there). Returns the epoch training starts from."""
        source = fit.trial_id if request.resume_from is None else request.resume_from
        fit.resumed = self.checkpoints.take(
            source, fit.trial_id, values=hp.values, batch_size=fit.batch_size
        )
        if fit.resumed is None:
            return request.initial_epoch
        fit.resumed.restore(model)
        log.info(f"trial {fit.trial_id}: goes on from its checkpoint at epoch {fit.resumed.epoch}")
        for row in fit.resumed.rows:
            self._replay_epoch(fit, row)
            for callback in fit.extra_callbacks:
                callback.on_epoch_end(row["epoch"] - 1, dict(row))
        return fit.resumed.epoch

    def _use_images_for(self, model: keras.Model, hp) -> None:
        """With --image-sizes, train on the images decoded at the size of this trial's
        IMAGE_SIZE (cached features too: their key holds the size)."""
        if self.images_at is None:
            return
        size = hp.values[IMAGE_SIZE]
        if model.input_shape[1:3] != (size, size):
            raise ValueError(
                f"the model takes {model.input_shape[1:3]} inputs, not the {size} px of its "
                f"{IMAGE_SIZE}: build it for ctx.image_size"
            )
        if size not in self.images_at:
            # Another size's images (and then features) are memory the run needs, not a leak:
            # --max-memory-growth measures from after the first trial that holds them.
            self._resident.clear()
        self.data = self.images_at(size)
        if self.features is not None:
            self.features.data = self.data

    def _measure_kept(self, fit: _Fit) -> None:
        """Once the kept weights are in the model: its validation predictions, and its clean
        training figures where its best epoch has none (--clean-train-eval best, or a reused
        head recorded without them)."""
        phase = fit.phase
        missing = self._best(fit.rows).get("train_accuracy_clean") is None
        if self.settings.clean_train_eval != "off" and missing:
            fit.clean = self._measure_clean(phase.model, phase.train_x, fit.batch_size)
        batches = evaluation_dataset(phase.val_x, self.data.validation.y, fit.batch_size)
        fit.predictions = phase.model.predict(batches, verbose=0)

    def _measure_clean(
        self, model: keras.Model, train_x: np.ndarray, batch_size: int
    ) -> dict[str, float]:
        """CLEAN_KEYS of `model` as it is, on the training sample (or its cached features)."""
        train_y = labels_for(model, self.data.train.y, self.ctx.num_classes)
        batches = subset_dataset(train_x, train_y, self._sample, batch_size=batch_size)
        logs = model.evaluate(batches, verbose=0, return_dict=True)
        return {
            "train_accuracy_clean": float(logs["accuracy"]),
            "train_loss_clean": float(logs["loss"]),
        }

    def _train_head(
        self, frozen: FrozenSplit, hp, fit: _Fit, *, initial_epoch: int, last: int
    ) -> None:
        """The first phase on cached base features: only the head runs, and it is the model's
        own head, so the full model ends up with the weights it learns. A fine-tune trial whose
        phase-one hyperparameters match an earlier trial's takes that trial's head instead."""
        key = self.features.key(frozen)
        features, fit.features = self.features.features(frozen, key)
        head_key = self.features.head_key(key, self._phase_one_values(hp), self.settings)
        model = frozen.model
        # Compiled before a reused head returns too: what is measured at the end may run on it.
        frozen.head.compile(
            optimizer=model.optimizer,
            loss=model.loss,
            metrics=["accuracy"],
            # The same batches and updates, with fewer calls from Python: on features a step
            # takes less time than calling it does.
            steps_per_execution=HEAD_STEPS_PER_EXECUTION,
        )
        fit.phase = _Phase(frozen.head, features["train"], features["validation"])
        if self.reuse_heads and self.space.fine_tunes(hp) and initial_epoch == 0:
            reused = self.features.load_head(head_key, frozen)
            if reused is not None:
                fit.head_from_trial, rows = reused
                for row in rows:
                    self._replay_epoch(fit, row)
                return
        inputs = (features["train"], self.data.train.y, features["validation"])
        self._fit(
            frozen.head,
            hp,
            fit,
            phase="train",
            initial_epoch=initial_epoch,
            epochs=last,
            inputs=inputs,
        )
        if fit.rows and not _diverged(fit.rows):
            self.features.save_head(head_key, frozen, trial_id=fit.trial_id, rows=fit.rows)

    def _phase_one_values(self, hp) -> dict:
        return {k: v for k, v in hp.values.items() if k not in self.space.second_stage}

    def _replay_epoch(self, fit: _Fit, row: dict) -> None:
        row = row | {"trial_id": fit.trial_id}
        fit.rows.append(row)
        self.store.append_epoch(row)
        if fit.on_epoch is not None:
            fit.on_epoch(row)

    def _fine_tune(self, model: keras.Model, hp, fit: _Fit) -> None:
        """Fine-tune phase, continuing the epoch count; keep the frozen phase's weights if the
        fine-tuned ones never beat them on validation loss."""
        frozen_weights, frozen_best = model.get_weights(), self._best(fit.rows)["val_loss"]
        done = len(fit.rows)
        last = fit.rows[-1]["epoch"]
        self._fit(
            model,
            hp,
            fit,
            phase="fine_tune",
            initial_epoch=last,
            epochs=last + self.settings.epochs,
        )
        tuned = fit.rows[done:]
        if tuned and not _diverged(tuned) and self._best(tuned)["val_loss"] >= frozen_best:
            model.set_weights(frozen_weights)

    def _fit(
        self,
        model: keras.Model,
        hp,
        fit: _Fit,
        *,
        phase: str,
        initial_epoch: int,
        epochs: int,
        inputs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
        saved: bool = False,
    ) -> None:
        """Fit `model` on the run's images, or on `inputs` (train x, train y, validation x);
        `saved`: with epoch checkpoints, going on from `fit.resumed` if there is one."""
        data = self.data
        train_x, train_y, val_x = inputs or (data.train.x, data.train.y, data.validation.x)
        train_y = labels_for(model, train_y, self.ctx.num_classes)
        val_y = labels_for(model, data.validation.y, self.ctx.num_classes)
        # With --jit on, a smaller last batch would make XLA compile the step once more per
        # fit; "auto" keeps every image of every epoch, as without XLA.
        drop_remainder = self._set_jit(model, fit) and self.settings.jit == "on"
        fit.phase = _Phase(model, train_x, val_x)
        callbacks = [
            StopOnNaN(),
            *self._stopping_and_records(hp, fit, phase=phase, saved=saved),
            *fit.extra_callbacks,
        ]
        if live_output() and not self.settings.verbose:
            callbacks.append(LiveProgress(self._trial_label(in_progress=True), phase, epochs))
        if self.settings.objective in PREDICTION_SCORES:
            callbacks.insert(0, ValidationScores(val_x, data.validation.y, fit.batch_size))
        if self.settings.clean_train_eval == "every":
            measure = partial(self._measure_clean, model, train_x, fit.batch_size)
            callbacks.insert(0, CleanTrainEval(measure))
        if self.settings.tensorboard:
            log_dir = self.store.run_dir / "tb" / f"trial_{fit.trial_id}"
            callbacks += [
                keras.callbacks.TensorBoard(log_dir=str(log_dir)),
                _hparams_callback(hp, log_dir, fit.trial_id),
            ]
        seed = self.settings.seed + fit.trial_id
        model.fit(
            training_dataset(
                train_x, train_y, fit.batch_size, seed=seed, drop_remainder=drop_remainder
            ),
            epochs=epochs,
            initial_epoch=initial_epoch,
            validation_data=evaluation_dataset(val_x, val_y, fit.batch_size),
            callbacks=callbacks,
            shuffle=False,  # the dataset shuffles its indices itself, each epoch
            class_weight=class_weights(self.data.train.y, self.settings.class_weight),
            verbose=1 if self.settings.verbose else 0,
        )

    def _stopping_and_records(
        self, hp, fit: _Fit, *, phase: str, saved: bool
    ) -> list[keras.callbacks.Callback]:
        """Early stopping (where a resumed trial's left off), the epoch recorder and, when the
        phase is `saved`, the checkpoint saver after both, so it saves what they took in."""
        resumed = fit.resumed if saved else None
        stopping = ResumableEarlyStopping(
            monitor="val_loss",
            patience=self.settings.patience,
            restore_best_weights=True,
            start_from_epoch=self.settings.warmup_epochs,
            rows=fit.rows if resumed is not None else (),
            best_weights=resumed.kept_weights() if resumed is not None else None,
        )
        callbacks = [
            stopping,
            EpochRecorder(self.store, fit.trial_id, phase, rows=fit.rows, on_epoch=fit.on_epoch),
        ]
        if not saved:
            return callbacks
        saver = self.checkpoints.saver(
            fit.trial_id,
            values=hp.values,
            batch_size=fit.batch_size,
            rows=fit.rows,
            trained_s=fit.trained_s,
            stopping=stopping,
        )
        return callbacks if saver is None else [*callbacks, saver]

    def _set_jit(self, model: keras.Model, fit: _Fit) -> bool:
        """Apply --jit to `model` and say whether its training will be XLA-compiled. With "on",
        a model with layers XLA cannot compile (random rotation, zoom, translation) trains
        without it, and a notice names them, once per trial."""
        if self.settings.jit == "off":
            model.jit_compile = False
        elif self.settings.jit == "on":
            # Nested layers too (the augmentation block), as Keras's own check walks them.
            blocking = [layer.name for layer in compat.all_layers(model) if not layer.supports_jit]
            with warnings.catch_warnings():  # Keras's own warning names no layer
                warnings.simplefilter("ignore", UserWarning)
                model.jit_compile = True
            if not model.jit_compile and fit.jit is not False:
                reason = ", ".join(blocking) or "XLA is not supported here"
                log.info(f"trial {fit.trial_id}: --jit on: trained without XLA ({reason})")
        jit = bool(model.jit_compile)
        fit.jit = jit and fit.jit is not False  # any phase without XLA makes the trial's False
        return jit

    def _best(self, rows: list[dict]) -> dict:
        return best_row(rows, self.settings.warmup_epochs)

    def _judge(
        self,
        trial_id: int,
        model,
        rows: list[dict],
        *,
        error: str,
        seconds: float,
        clean: dict | None = None,
    ) -> TrialResult:
        """The trial's outcome, read at its best epoch; `clean` (CLEAN_KEYS measured on the kept
        weights) stands in for figures the best epoch's row lacks."""
        duration = round(seconds, 3)
        n_params = model.count_params() if model is not None else None
        if not error and _diverged(rows):
            error = "nan_loss"
        if not error and not rows:
            error = "no epoch was trained"
        if error:
            return TrialResult(
                trial_id, TrialStatus.FAILED, duration, error=error, n_params=n_params
            )
        best = self._best(rows)
        clean = clean or {k: best.get(k) for k in CLEAN_KEYS}
        train_clean = clean["train_accuracy_clean"]
        return TrialResult(
            trial_id,
            TrialStatus.COMPLETE,
            duration,
            best_epoch=best["epoch"],
            val_accuracy=best["val_accuracy"],
            val_loss=best["val_loss"],
            val_auc=best.get("val_auc"),
            val_f1=best.get("val_f1"),
            train_accuracy_clean=train_clean,
            train_loss_clean=clean["train_loss_clean"],
            gap_clean=None if train_clean is None else train_clean - best["val_accuracy"],
            train_accuracy_fit=best["accuracy"],
            gap_fit=best["accuracy"] - best["val_accuracy"],
            n_params=n_params,
        )

    def _check_limits(self, result: TrialResult) -> None:
        """A complete trial over a deployment limit becomes infeasible: kept with its figures,
        never ranked nor exported."""
        if result.status != TrialStatus.COMPLETE or not self.settings.limits:
            return
        over = violations(result.row(), dict(self.settings.limits))
        exceeded = [f"{column} {over[column]:+g} over" for column in over if over[column] > 0]
        if exceeded:
            result.status = TrialStatus.INFEASIBLE
            result.error = "over the limit: " + ", ".join(exceeded)

    def _trial_label(self, in_progress: bool) -> str:
        """ "trial i/N" of the run: the trial being trained, or the one just recorded."""
        total = f"/{self.max_trials}" if self.max_trials else ""
        count = self.store.finished_count() + (1 if in_progress else 0)
        return self.announce_as or f"trial {count}{total}"

    def _announce(self, result: TrialResult) -> None:
        name = self._trial_label(in_progress=False)
        head = f"{name} {result.status}"
        if result.status in (TrialStatus.COMPLETE, TrialStatus.PRUNED):
            best = self.store.best_trial()
            best_text = "-" if best is None else f"{best['val_accuracy']:.3f}"
            gap = (
                f"gap_fit={result.gap_fit:+.3f}"
                if result.gap_clean is None
                else f"gap_clean={result.gap_clean:+.3f}"
            )
            deployed = (
                f" {result.latency_ms:.2f}ms {result.tflite_kb:.0f}KB"
                if result.latency_ms is not None
                else ""
            )
            log.info(
                f"{head} val_acc={result.val_accuracy:.3f} {gap}{deployed} "
                f"best={best_text} ({result.duration_s:.1f}s)"
            )
        else:
            log.info(f"{head} {result.error} ({result.duration_s:.1f}s)")
