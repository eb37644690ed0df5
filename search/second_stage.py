"""A space's second training stage (transfer fine-tuning), continuing the trial's epochs."""

from __future__ import annotations

import keras

from search.fitting import FitLoop
from search.judge import best_row, diverged
from search.trial_state import TrialFit


def fine_tune(loop: FitLoop, fit: TrialFit, *, model: keras.Model, hp) -> None:
    """Fine-tune phase, continuing the epoch count; keep the frozen phase's weights if the
    fine-tuned ones never beat them on validation loss."""
    warmup = loop.settings.warmup_epochs
    frozen_weights, frozen_best = model.get_weights(), best_row(fit.rows, warmup)["val_loss"]
    done = len(fit.rows)
    last = fit.rows[-1]["epoch"]
    loop.fit(
        model,
        hp,
        fit,
        phase="fine_tune",
        initial_epoch=last,
        epochs=last + loop.settings.epochs,
    )
    tuned = fit.rows[done:]
    if tuned and not diverged(tuned) and best_row(tuned, warmup)["val_loss"] >= frozen_best:
        model.set_weights(frozen_weights)
