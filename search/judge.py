"""A trained trial's outcome, read at the epoch whose weights it keeps."""

from __future__ import annotations

import math

from search.callbacks import CLEAN_KEYS
from search.checkpoint import lowest_after_warmup
from search.schema import TrialStatus
from search.trial_edge import TrialResult


def best_row(rows: list[dict], warmup_epochs: int = 0) -> dict:
    """The epoch whose weights the trial keeps: the lowest validation loss after the warm-up,
    as EarlyStopping restores it; the last epoch if all are warm-up (nothing is restored)."""
    return lowest_after_warmup(rows, warmup_epochs) or rows[-1]


def diverged(rows: list[dict]) -> bool:
    """Whether any epoch's training loss was not finite."""
    return any(not math.isfinite(r.get("loss", math.nan)) for r in rows)


def judge(
    trial_id: int,
    rows: list[dict],
    *,
    error: str,
    seconds: float,
    n_params: int | None,
    warmup_epochs: int,
    clean: dict | None = None,
) -> TrialResult:
    """The trial's outcome, read at its best epoch; `clean` (CLEAN_KEYS measured on the kept
    weights) stands in for figures the best epoch's row lacks."""
    duration = round(seconds, 3)
    if not error and diverged(rows):
        error = "nan_loss"
    if not error and not rows:
        error = "no epoch was trained"
    if error:
        return TrialResult(trial_id, TrialStatus.FAILED, duration, error=error, n_params=n_params)
    best = best_row(rows, warmup_epochs)
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
