"""--confirm-top's ranking and export choice, and --refit's epochs, on hand-made stores with
known answers (the end-to-end runs are in test_options.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from search.confirm import exported_run, summarise
from search.refit import RefitPlan, refit_plan
from search.store import rank_trials


def runs_of(*rows: tuple[int, int, float, float], failed: tuple[int, int] | None = None):
    frame = pd.DataFrame(rows, columns=["trial_id", "run", "val_accuracy", "val_loss"])
    frame["status"] = "complete"
    frame["seed"] = 42 + frame["trial_id"] + 100_003 * frame["run"]
    if failed:
        at = (frame["trial_id"] == failed[0]) & (frame["run"] == failed[1])
        frame.loc[at, ["status", "val_accuracy", "val_loss"]] = ["failed", None, None]
    return frame


def test_the_ranking_follows_the_mean_of_the_confirmed_runs():
    """Trial 1 won the search by one lucky run; over three runs trial 2 is better. An
    unconfirmed trial keeps its single figure but ranks after the finalists, even above one's
    mean: the winner is chosen among the confirmed trials, whose models were kept."""
    runs = runs_of(
        (1, 0, 0.80, 0.40), (1, 1, 0.70, 0.50), (1, 2, 0.71, 0.50),
        (2, 0, 0.78, 0.45), (2, 1, 0.77, 0.46), (2, 2, 0.79, 0.44),
    )  # fmt: skip
    summary = summarise(runs).set_index("trial_id")
    assert summary.loc[1, "confirm_mean"] == pytest.approx(0.7366667)
    assert summary.loc[2, "confirm_sd"] == pytest.approx(0.01)
    trials = pd.DataFrame(
        {
            "trial_id": [1, 2, 3],
            "status": ["complete"] * 3,
            "val_accuracy": [0.80, 0.78, 0.75],
            "val_loss": [0.40, 0.45, 0.50],
        }
    ).merge(summary.reset_index(), on="trial_id", how="left")
    assert list(rank_trials(trials)["trial_id"]) == [2, 1, 3]
    alone = trials[trials["trial_id"] != 2]  # --confirm-top 1: trial 1's mean is below trial 3
    assert list(rank_trials(alone)["trial_id"]) == [1, 3]


def test_a_failed_run_is_left_out_of_the_mean():
    runs = runs_of((1, 0, 0.8, 0.4), (1, 1, 0.6, 0.5), (1, 2, 0.9, 0.3), failed=(1, 1))
    summary = summarise(runs).set_index("trial_id")
    assert summary.loc[1, "confirm_runs"] == 2
    assert summary.loc[1, "confirm_mean"] == pytest.approx(0.85)


def test_the_exported_run_is_the_winners_best_run_that_kept_a_model():
    runs = runs_of((1, 0, 0.80, 0.40), (1, 1, 0.70, 0.50), (2, 0, 0.90, 0.30), (2, 1, 0.78, 0.4))
    # Trial 2's own run is the search's best trial, so its model is kept.
    assert exported_run(runs, winner=2, best_trial_id=2) == 0
    # Trial 1's own model was never kept (trial 2 was best): its best confirmation run instead.
    assert exported_run(runs, winner=1, best_trial_id=2) == 1


def epochs_of(phases: list[tuple[str, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"epoch": n, "phase": p, "val_loss": v} for n, (p, v) in enumerate(phases, 1)]
    )


def test_a_refit_trains_the_epochs_the_trial_kept():
    one_phase = epochs_of([("train", 0.9), ("train", 0.5), ("train", 0.6)])
    assert refit_plan(one_phase, best_epoch=2) == RefitPlan(2)
    # Phase one kept epoch 2 of 3; fine-tuning went on from epoch 4 and kept epoch 5.
    tuned = epochs_of(
        [("train", 0.9), ("train", 0.5), ("train", 0.6), ("fine_tune", 0.45), ("fine_tune", 0.4)]
    )
    assert refit_plan(tuned, best_epoch=5) == RefitPlan(2, 2)
    # Fine-tuning never beat phase one: the trial kept a phase-one epoch, refit has no phase two.
    assert refit_plan(tuned, best_epoch=2) == RefitPlan(2)
    # A warm-up is never kept: phase one's best judged epoch is 3.
    warm = epochs_of([("train", 0.3), ("train", 0.5), ("train", 0.4), ("fine_tune", 0.35)])
    assert refit_plan(warm, best_epoch=4, warmup_epochs=2) == RefitPlan(3, 1)
