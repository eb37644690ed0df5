"""`--refit`: the best configuration trained again on the training and validation images together.

The search needs the validation split to choose a configuration and an epoch; once both are
chosen, those images can train the model too. The refit builds the best trial's configuration
afresh with the trial's own seed and trains it for the epochs the trial kept (per phase, for a
fine-tuned trial) with no early stopping, since no images are left to judge it on. The test
split scores it, as it scored the best model, and both figures go in the model card.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd

from search.data import ImageData
from search.fitting import class_weights
from search.fixed import hyperparameters_of
from search.inputs import evaluation_dataset, training_dataset
from search.judge import best_row
from search.settings import TrainSettings
from search.stats import accuracy_interval
from search.store import RunStore
from spaces import Space
from spaces.context import SpaceContext
from spaces.user import labels_for

REFIT_MODEL = "refit_model.keras"


@dataclass(frozen=True)
class RefitPlan:
    """The epochs that reach a trial's kept weights: its first phase's, then its fine-tune's."""

    first_epochs: int
    fine_tune_epochs: int = 0


def refit_plan(epochs: pd.DataFrame, best_epoch: int, warmup_epochs: int = 0) -> RefitPlan:
    """A trial's epochs are numbered across its phases. If it kept a fine-tuned epoch, its first
    phase had restored that phase's best epoch before fine-tuning began after the phase's last
    epoch; otherwise it kept `best_epoch` of its first phase (numbered from 1 even for a
    Hyperband trial that continued another, so the refit trains that many from scratch)."""
    first = epochs[epochs["phase"] != "fine_tune"]
    tuned = epochs[epochs["phase"] == "fine_tune"]
    if best_epoch not in set(tuned["epoch"]):
        return RefitPlan(best_epoch)
    first_best = best_row(first.to_dict("records"), warmup_epochs)["epoch"]
    return RefitPlan(int(first_best), best_epoch - int(first["epoch"].max()))


def refit_best(
    store: RunStore,
    *,
    space: Space,
    ctx: SpaceContext,
    data: ImageData,
    settings: TrainSettings,
) -> dict | None:
    """Train the best trial's configuration on training + validation images, save it as
    refit_model.keras beside best_model.keras, score it on the test split and return what
    run.json records of it; None when no trial completed."""
    best = store.best_trial()
    if best is None:
        return None
    trial_id = int(best["trial_id"])
    trial_epochs = store.epochs().query("trial_id == @trial_id")
    plan = refit_plan(trial_epochs, int(best["best_epoch"]), settings.warmup_epochs)
    start = time.perf_counter()
    keras.backend.clear_session(free_memory=True)
    keras.mixed_precision.set_global_policy(settings.precision)
    keras.utils.set_random_seed(settings.seed + trial_id)  # the trial's own seed
    hp = hyperparameters_of(store.read_best_hparams()["hyperparameters"])
    model = space.build(hp, ctx)
    # Validation images join the training set: nothing is held out but the test split.
    x = np.concatenate([data.train.x, data.validation.x])
    y = labels_for(model, np.concatenate([data.train.y, data.validation.y]), ctx.num_classes)
    batches = training_dataset(x, y, settings.batch_size, seed=settings.seed + trial_id)
    weights = class_weights(data.train.y, settings.class_weight)
    model.fit(batches, epochs=plan.first_epochs, shuffle=False, class_weight=weights, verbose=0)
    fine_tune = space.fine_tune  # a space's optional second stage
    if plan.fine_tune_epochs and fine_tune is not None and fine_tune(hp, model):
        last = plan.first_epochs + plan.fine_tune_epochs
        model.fit(
            batches,
            epochs=last,
            initial_epoch=plan.first_epochs,
            shuffle=False,
            class_weight=weights,
            verbose=0,
        )
    store.save_model(model, REFIT_MODEL)
    record = {
        "trial_id": trial_id,
        "first_epochs": plan.first_epochs,
        "fine_tune_epochs": plan.fine_tune_epochs,
        "train_images": len(y),
        "seconds": round(time.perf_counter() - start, 3),
    }
    if len(data.test):
        test_y = labels_for(model, data.test.y, ctx.num_classes)
        test = evaluation_dataset(data.test.x, test_y, settings.batch_size)
        accuracy = model.evaluate(test, verbose=0, return_dict=True)["accuracy"]
        low, high = accuracy_interval(accuracy, len(data.test))
        record |= {"test_accuracy": accuracy, "test_accuracy_low": low, "test_accuracy_high": high}
    return record
