"""One phase of a trial's training: `FitLoop.fit` puts the callbacks in their order, applies
XLA and class weights, and feeds the run's images (or cached features) from memory."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import keras
import numpy as np

from search import compat
from search.callbacks import EpochRecorder, LiveProgress, StopOnNaN, ValidationScores
from search.checkpoint import ResumableEarlyStopping, TrialCheckpoints
from search.clean_eval import CleanEvaluation
from search.console import live_output, log
from search.inputs import evaluation_dataset, training_dataset
from search.runtime import get_runtime
from search.schema import PREDICTION_SCORES
from search.settings import TrainSettings
from search.store import RunStore
from search.trial_state import Phase, TrialFit
from spaces.user import labels_for


def class_weights(y: np.ndarray, mode: str) -> dict[int, float] | None:
    """--class-weight balanced: each class weighs n / (classes x its count) in the loss, as
    scikit-learn's "balanced", so a rare class counts as much as a common one; None otherwise."""
    if mode != "balanced":
        return None
    classes, counts = np.unique(y, return_counts=True)
    return {
        int(c): float(len(y) / (len(classes) * n)) for c, n in zip(classes, counts, strict=True)
    }


class FitLoop:
    """Fits a trial's phases; every epoch goes to the store (and its checkpoint, if saved)."""

    def __init__(
        self,
        *,
        settings: TrainSettings,
        store: RunStore,
        checkpoints: TrialCheckpoints,
        clean: CleanEvaluation,
        num_classes: int,
        progress_label: Callable[[int], str],
    ) -> None:
        self.settings, self.store, self.checkpoints = settings, store, checkpoints
        self.clean, self.num_classes = clean, num_classes
        self.progress_label = progress_label  # the live line's name of a trial in progress

    def fit(
        self,
        model: keras.Model,
        hp,
        fit: TrialFit,
        *,
        phase: str,
        initial_epoch: int,
        epochs: int,
        inputs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
        saved: bool = False,
    ) -> None:
        """Fit `model` on the trial's images, or on `inputs` (train x, train y, validation x);
        `saved`: with epoch checkpoints, going on from `fit.resumed` if there is one."""
        data = fit.data
        train_x, train_y, val_x = inputs or (data.train.x, data.train.y, data.validation.x)
        train_y = labels_for(model, train_y, self.num_classes)
        val_y = labels_for(model, data.validation.y, self.num_classes)
        # With --jit on, a smaller last batch would make XLA compile the step once more per
        # fit; "auto" keeps every image of every epoch, as without XLA.
        drop_remainder = self._set_jit(model, fit) and self.settings.jit == "on"
        fit.phase = Phase(model, train_x, val_x)
        seed = self.settings.seed + fit.trial_id
        model.fit(
            training_dataset(
                train_x, train_y, fit.batch_size, seed=seed, drop_remainder=drop_remainder
            ),
            epochs=epochs,
            initial_epoch=initial_epoch,
            validation_data=evaluation_dataset(val_x, val_y, fit.batch_size),
            callbacks=self._callbacks(model, hp, fit, phase=phase, last=epochs, saved=saved),
            shuffle=False,  # the dataset shuffles its indices itself, each epoch
            class_weight=class_weights(data.train.y, self.settings.class_weight),
            verbose=1 if self.settings.verbose else 0,
        )

    def replay(self, fit: TrialFit, row: dict) -> None:
        """Record an epoch trained before (a checkpoint's, a reused head's) as this trial's."""
        row = row | {"trial_id": fit.trial_id}
        fit.rows.append(row)
        self.store.append_epoch(row)
        if fit.on_epoch is not None:
            fit.on_epoch(row)

    def _callbacks(
        self, model: keras.Model, hp, fit: TrialFit, *, phase: str, last: int, saved: bool
    ) -> list[keras.callbacks.Callback]:
        """In their order: what adds keys to the epoch's logs first, then the stopping, the
        records and the back end's own (its pruner), then what only shows or logs."""
        settings = self.settings
        first = [self.clean.every_epoch(model, fit.phase.train_x, fit)]
        if settings.objective in PREDICTION_SCORES:
            first.append(ValidationScores(fit.phase.val_x, fit.data.validation.y, fit.batch_size))
        callbacks = [
            *(callback for callback in first if callback is not None),
            StopOnNaN(),
            *self._stopping_and_records(hp, fit, phase=phase, saved=saved),
            *fit.extra_callbacks,
        ]
        if live_output() and not settings.verbose:
            callbacks.append(LiveProgress(self.progress_label(fit.trial_id), phase, last))
        if settings.tensorboard:
            log_dir = self.store.run_dir / "tb" / f"trial_{fit.trial_id}"
            callbacks += get_runtime().tensorboard_callbacks(hp, log_dir, fit.trial_id)
        return callbacks

    def _stopping_and_records(
        self, hp, fit: TrialFit, *, phase: str, saved: bool
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

    def _set_jit(self, model: keras.Model, fit: TrialFit) -> bool:
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
                compiler = get_runtime().compiler
                reason = ", ".join(blocking) or f"{compiler} is not supported here"
                log.info(f"trial {fit.trial_id}: --jit on: trained without {compiler} ({reason})")
        jit = bool(model.jit_compile)
        fit.jit = jit and fit.jit is not False  # any phase without XLA makes the trial's False
        return jit
