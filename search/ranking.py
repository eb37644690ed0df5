"""Which trials are best: the one ranking the store, the report and the export all use, so
"best" means the same thing everywhere."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from search.schema import TrialStatus, maximised


def rank_trials(trials: pd.DataFrame, objective: str = "val_accuracy") -> pd.DataFrame:
    """Complete trials, best first: best `objective` (--objective, in its direction), then lower
    val loss, then the earlier trial. Never a signed gap: a negative one can reward
    augmentation, not generalisation. A trial confirmed with more seeds (--confirm-top, which
    measures accuracy) is ranked by the mean of its runs, and ahead of every trial that was not:
    the finalists were the best by one run each, and the winner is chosen among them (a
    finalist's mean below another trial's single run must not hand the win to a trial whose
    model the search did not keep)."""
    done = trials[trials["status"] == TrialStatus.COMPLETE]
    score = done[objective] if objective in done else pd.Series(np.nan, index=done.index)
    loss = done["val_loss"]
    unconfirmed = pd.Series(False, index=done.index)
    if (
        "confirm_mean" in done
        and objective == "val_accuracy"
        and done["confirm_mean"].notna().any()
    ):
        unconfirmed = done["confirm_mean"].isna()
        score = done["confirm_mean"].fillna(score)
        loss = done["confirm_val_loss"].fillna(loss)
    score = score.astype(float) * (-1 if maximised(objective) else 1)
    keys = pd.DataFrame(
        {"unconfirmed": unconfirmed, "score": score, "loss": loss, "trial_id": done["trial_id"]}
    )
    order = keys.sort_values(["unconfirmed", "score", "loss", "trial_id"], kind="stable").index
    return done.loc[order]


def clean_value(value):
    """JSON- and CSV-friendly scalars: numpy types to Python, NaN to None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
