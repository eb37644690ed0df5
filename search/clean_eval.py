"""The clean training figures (`CLEAN_KEYS`): a trial's weights in inference mode (no
augmentation, dropout or batch statistics) on a fixed, seeded sample of training images, so the
gap to validation compares like with like (--clean-train-eval)."""

from __future__ import annotations

from functools import partial

import keras
import numpy as np

from search.callbacks import CleanTrainEval
from search.inputs import subset_dataset
from search.judge import best_row
from search.trial_state import TrialFit
from spaces.user import labels_for


def clean_sample(n_train: int, size: int, seed: int) -> np.ndarray:
    """Indices of the training images the clean figures are measured on: a seeded sample of
    `size` (the validation split's size, so both figures carry a like uncertainty), or every
    image when there are fewer. The seed is the run's, so every trial is measured on the same
    images and their figures compare."""
    if n_train <= size:
        return np.arange(n_train)
    return np.sort(np.random.default_rng(seed).choice(n_train, size, replace=False))


class CleanEvaluation:
    """--clean-train-eval `mode` ("every" epoch, the "best" one at the end, or "off") on the
    run's training `sample` (clean_sample)."""

    def __init__(
        self, *, mode: str, sample: np.ndarray, num_classes: int, warmup_epochs: int
    ) -> None:
        self.mode, self.sample = mode, sample
        self.num_classes, self.warmup_epochs = num_classes, warmup_epochs

    def measure(
        self, model: keras.Model, train_x: np.ndarray, train_y: np.ndarray, *, batch_size: int
    ) -> dict[str, float]:
        """CLEAN_KEYS of `model` as it is, on the sample of `train_x` (images or features)."""
        labels = labels_for(model, train_y, self.num_classes)
        batches = subset_dataset(train_x, labels, self.sample, batch_size=batch_size)
        logs = model.evaluate(batches, verbose=0, return_dict=True)
        return {
            "train_accuracy_clean": float(logs["accuracy"]),
            "train_loss_clean": float(logs["loss"]),
        }

    def every_epoch(
        self, model: keras.Model, train_x: np.ndarray, fit: TrialFit
    ) -> CleanTrainEval | None:
        """The callback that measures each epoch's weights, with mode "every"; else None."""
        if self.mode != "every":
            return None
        return CleanTrainEval(
            partial(self.measure, model, train_x, fit.data.train.y, batch_size=fit.batch_size)
        )

    def of_kept(self, fit: TrialFit) -> dict[str, float] | None:
        """Once the kept weights are in the model: its clean figures where its best epoch has
        none (mode "best", or a reused head recorded without them); else None."""
        missing = best_row(fit.rows, self.warmup_epochs).get("train_accuracy_clean") is None
        if self.mode == "off" or not missing:
            return None
        phase = fit.phase
        return self.measure(phase.model, phase.train_x, fit.data.train.y, batch_size=fit.batch_size)
