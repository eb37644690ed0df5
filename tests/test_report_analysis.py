"""Overfitting measures and rankings on hand-made tables whose answers are known exactly."""

from __future__ import annotations

import math

import optuna
import pandas as pd
import pytest

from reports.analysis import (
    analyse_trials,
    baseline_column,
    best_so_far,
    conditional_hyperparameters,
    hyperparameter_columns,
    hyperparameter_importance,
    importance_study,
    overfitting_onset,
    penalised_score,
    rank,
    trial_measures,
    verdict,
    wasted_epochs,
)


def curve(loss, accuracy, val_loss, val_accuracy, trial_id=0, phase="train") -> pd.DataFrame:
    """One trial's epochs.csv rows, epochs numbered from 1."""
    return pd.DataFrame(
        {
            "trial_id": trial_id,
            "epoch": range(1, len(loss) + 1),
            "loss": loss,
            "accuracy": accuracy,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "seconds": 1.0,
            "phase": phase,
        }
    )


# Validation loss is lowest at epoch 3, then rises for three epochs while training loss falls.
OVERFITTING = curve(
    loss=[1.0, 0.8, 0.6, 0.5, 0.4, 0.3],
    accuracy=[0.5, 0.6, 0.7, 0.8, 0.9, 0.95],
    val_loss=[0.9, 0.7, 0.55, 0.65, 0.7, 0.75],
    val_accuracy=[0.5, 0.6, 0.6, 0.7, 0.7, 0.7],
)
# One rise (epoch 3) that recovers, then two rises in a row (epochs 5 and 6).
RECOVERS_THEN_OVERFITS = curve(
    loss=[1.0, 0.9, 0.8, 0.7, 0.6, 0.5],
    accuracy=[0.6, 0.7, 0.8, 0.85, 0.9, 0.95],
    val_loss=[1.0, 0.8, 0.85, 0.7, 0.75, 0.8],
    val_accuracy=[0.6, 0.7, 0.7, 0.8, 0.8, 0.8],
)
# Both losses rise together: diverging, not overfitting.
DIVERGING = curve(
    loss=[0.5, 0.6, 0.7, 0.8],
    accuracy=[0.9, 0.85, 0.8, 0.75],
    val_loss=[0.5, 0.6, 0.7, 0.8],
    val_accuracy=[0.9, 0.85, 0.8, 0.75],
)
# Validation beats training (dropout is on while training accuracy is measured) and is still
# improving at the last epoch.
VALIDATION_AHEAD = curve(
    loss=[0.7, 0.5],
    accuracy=[0.6, 0.7],
    val_loss=[0.6, 0.4],
    val_accuracy=[0.7, 0.8],
)


def test_onset_is_the_epoch_before_k_rises_of_val_loss_while_loss_falls():
    assert overfitting_onset(OVERFITTING, k=2) == 3
    assert overfitting_onset(OVERFITTING, k=3) == 3
    assert overfitting_onset(OVERFITTING, k=4) is None
    assert overfitting_onset(RECOVERS_THEN_OVERFITS, k=1) == 2
    assert overfitting_onset(RECOVERS_THEN_OVERFITS, k=2) == 4
    assert overfitting_onset(DIVERGING) is None
    assert overfitting_onset(VALIDATION_AHEAD) is None


def test_onset_reads_epochs_in_order_whatever_the_row_order():
    assert overfitting_onset(OVERFITTING.iloc[::-1]) == 3


def test_measures_of_an_overfitting_trial():
    m = trial_measures(OVERFITTING)
    assert m["best_epoch"] == 3
    assert m["epochs"] == 6
    assert m["val_accuracy"] == pytest.approx(0.6)
    assert m["val_loss"] == pytest.approx(0.55)
    assert m["train_accuracy_fit"] == pytest.approx(0.7)
    assert m["gap"] == pytest.approx(0.1)
    assert m["gap_last"] == pytest.approx(0.25)
    assert m["max_gap"] == pytest.approx(0.25)
    assert m["loss_gap"] == pytest.approx(-0.05)
    assert m["onset_epoch"] == 3
    assert m["wasted_epochs"] == 3
    assert m["verdict"] == "overfit"


def test_wasted_epochs_count_from_the_onset():
    m = trial_measures(RECOVERS_THEN_OVERFITS)
    assert (m["best_epoch"], m["onset_epoch"], m["wasted_epochs"]) == (4, 4, 2)
    assert m["gap"] == pytest.approx(0.05)
    assert m["max_gap"] == pytest.approx(0.15)


def test_epochs_before_a_new_lowest_val_loss_are_not_wasted():
    # val_loss rises at epochs 3 and 4 (the onset is 2), then reaches its lowest at epoch 5.
    late_best = curve(
        loss=[1.0, 0.9, 0.8, 0.7, 0.6, 0.5],
        accuracy=[0.6, 0.7, 0.8, 0.85, 0.9, 0.95],
        val_loss=[0.8, 0.7, 0.75, 0.8, 0.6, 0.65],
        val_accuracy=[0.6, 0.7, 0.7, 0.7, 0.8, 0.8],
    )
    m = trial_measures(late_best)
    assert (m["onset_epoch"], m["best_epoch"], m["wasted_epochs"]) == (2, 5, 1)
    assert wasted_epochs(last_epoch=5, onset_epoch=2, best_epoch=5) == 0
    assert wasted_epochs(last_epoch=9, onset_epoch=4, best_epoch=3) == 5
    assert wasted_epochs(last_epoch=9, onset_epoch=None, best_epoch=3) == 0


def test_negative_gaps_are_kept_as_they_are():
    m = trial_measures(VALIDATION_AHEAD)
    assert m["gap"] == pytest.approx(-0.1)
    assert m["gap_last"] == pytest.approx(-0.1)
    assert m["max_gap"] == pytest.approx(-0.1)
    assert m["loss_gap"] == pytest.approx(-0.1)
    assert (m["onset_epoch"], m["wasted_epochs"]) == (None, 0)
    # Still improving at its last epoch: stopped before it finished learning.
    assert m["verdict"] == "underfit"


def test_measures_are_read_at_the_stored_best_epoch_when_given():
    m = trial_measures(OVERFITTING, best_epoch=5)
    assert (m["best_epoch"], m["val_accuracy"], m["train_accuracy_fit"]) == (5, 0.7, 0.9)
    assert m["gap"] == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("gap", "train_accuracy", "still_improving", "expected"),
    [
        (0.06, 0.95, False, "overfit"),
        (0.05, 0.95, False, "fit"),  # the threshold itself is not overfitting
        (0.10, 0.50, True, "overfit"),  # a large gap wins over everything else
        (0.00, 0.80, False, "fit"),
        (0.00, 0.79, False, "underfit"),
        (0.00, 0.95, True, "underfit"),
        (-0.20, 0.95, False, "fit"),
        (math.nan, 0.95, False, None),
    ],
)
def test_verdict_thresholds(gap, train_accuracy, still_improving, expected):
    assert verdict(gap, train_accuracy, still_improving) == expected


def trials_table(rows) -> pd.DataFrame:
    """trials.csv rows: (trial_id, status, val_accuracy, gap_clean, val_loss)."""
    columns = ["trial_id", "status", "val_accuracy", "gap_clean", "val_loss"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.assign(train_accuracy_clean=frame["val_accuracy"] + frame["gap_clean"])


RANKING = trials_table(
    [
        (0, "complete", 0.8, 0.10, 0.5),
        (1, "complete", 0.8, 0.02, 0.6),
        (2, "complete", 0.75, -0.05, 0.7),
        (3, "complete", 0.9, 0.30, 0.3),
        (4, "failed", None, None, None),
        (5, "complete", 0.8, 0.02, 0.4),
        (6, "pruned", 0.95, 0.0, 0.2),
    ]
)


def test_ranking_by_val_accuracy_breaks_ties_by_val_loss():
    ranked = rank(RANKING)
    assert list(ranked["trial_id"]) == [3, 5, 0, 1, 2]
    assert list(ranked["rank"]) == [1, 2, 3, 4, 5]
    assert "score" not in ranked


def test_penalised_score_charges_positive_gaps_only():
    scores = penalised_score(RANKING, penalty=1.0)
    assert list(scores.round(6)) == pytest.approx(
        [0.7, 0.78, 0.75, 0.6, math.nan, 0.78, 0.95], nan_ok=True
    )
    assert penalised_score(RANKING, penalty=2.0)[2] == pytest.approx(0.75)


def test_penalised_ranking_with_the_same_tie_breaks():
    ranked = rank(RANKING, by="penalised", penalty=1.0)
    assert list(ranked["trial_id"]) == [5, 1, 2, 0, 3]
    assert list(ranked["score"]) == pytest.approx([0.78, 0.78, 0.75, 0.7, 0.6])
    assert list(rank(RANKING, by="penalised", penalty=0.0)["trial_id"]) == [3, 5, 0, 1, 2]


def test_unknown_ranking_is_refused():
    with pytest.raises(ValueError, match="penalised"):
        rank(RANKING, by="test_accuracy")


def test_analysis_fills_what_trials_csv_lacks_from_the_epochs():
    trials = pd.DataFrame(
        {
            "trial_id": pd.array([0, 1, 2], dtype="Int64"),
            "status": ["complete", "failed", "failed"],
            "best_epoch": pd.array([5, None, None], dtype="Int64"),
            "val_accuracy": [0.7, None, None],
            "val_loss": [0.7, None, None],
            "train_accuracy_fit": [0.9, None, None],
            "gap_fit": [0.2, None, None],
            "error": [None, "nan_loss", "oom: out of memory"],
        }
    )
    epochs = pd.concat([OVERFITTING, VALIDATION_AHEAD.assign(trial_id=1)])
    table = analyse_trials(trials, epochs).set_index("trial_id")
    # The complete trial is read at its stored best epoch, the failed one at its lowest val loss.
    assert table.loc[0, "best_epoch"] == 5
    assert table.loc[0, "gap_last"] == pytest.approx(0.25)
    assert table.loc[1, "best_epoch"] == 2
    assert table.loc[1, "gap"] == pytest.approx(-0.1)
    assert table.loc[1, "verdict"] == "underfit"
    # A trial that never trained has no measures.
    assert pd.isna(table.loc[2, "best_epoch"])
    assert pd.isna(table.loc[2, "verdict"])
    assert table.loc[2, "error"] == "oom: out of memory"


def test_hyperparameters_leave_out_tuner_bookkeeping_and_baseline_names():
    trials = pd.DataFrame(
        columns=["trial_id", "hp_lr", "hp_tuner/epochs", "hp_baseline", "hp_pooling", "gap"]
    )
    assert hyperparameter_columns(trials) == ["hp_lr", "hp_pooling"]


def test_baseline_column_only_when_a_trial_names_one():
    assert baseline_column(pd.DataFrame({"trial_id": [0]})) is None
    assert baseline_column(pd.DataFrame({"hp_baseline": [None, None]})) is None
    assert baseline_column(pd.DataFrame({"hp_baseline": [None, "tf_tutorial"]})) == "hp_baseline"
    assert baseline_column(pd.DataFrame({"baseline": ["keras_io"]})) == "baseline"


def test_best_so_far_counts_time_spent_in_failed_trials():
    trials = pd.DataFrame(
        {
            "trial_id": [2, 0, 1, 3],
            "status": ["complete", "complete", "failed", "complete"],
            "val_accuracy": [0.55, 0.6, None, 0.7],
            "duration_s": [30.0, 10.0, 20.0, None],
        }
    )
    history = best_so_far(trials)
    assert list(history["trial_id"]) == [0, 2, 3]
    assert list(history["elapsed_s"]) == [10.0, 60.0, 60.0]
    assert list(history["best_so_far"]) == [0.6, 0.6, 0.7]


HP_TRIALS = pd.DataFrame(
    {
        "trial_id": range(6),
        "status": ["complete"] * 5 + ["failed"],
        "hp_learning_rate": [1e-4, 1e-3, 1e-2, 3e-3, 5e-4, 1e-3],
        "hp_pooling": ["avg", "max", "avg", "max", "avg", "avg"],
        "hp_blocks": [1, 2, 3, 4, 2, 1],
        "hp_dense_dropout": [0.1, None, 0.3, None, 0.2, 0.1],  # conditional
        "hp_seed": [7] * 6,  # never varies: no importance to measure
        "hp_tuner/epochs": [2, 2, 4, 4, 2, 2],
        "val_accuracy": [0.6, 0.9, 0.65, 0.88, 0.62, None],
    }
)


def test_importance_study_holds_the_complete_trials_with_their_active_hyperparameters():
    study = importance_study(HP_TRIALS)
    assert [t.value for t in study.trials] == [0.6, 0.9, 0.65, 0.88, 0.62]
    first, second = study.trials[0], study.trials[1]
    assert first.params == {
        "learning_rate": 1e-4,
        "pooling": "avg",
        "blocks": 1,
        "dense_dropout": 0.1,
    }
    assert "dense_dropout" not in second.params
    assert first.distributions["learning_rate"] == optuna.distributions.FloatDistribution(
        1e-4, 1e-2, log=True
    )
    assert first.distributions["blocks"] == optuna.distributions.IntDistribution(1, 4)
    assert first.distributions["pooling"] == optuna.distributions.CategoricalDistribution(
        ["avg", "max"]
    )


def test_importance_names_the_varying_hyperparameters_every_trial_used():
    importance = hyperparameter_importance(HP_TRIALS)
    assert set(importance.index) == {"learning_rate", "pooling", "blocks"}
    assert importance.sum() == pytest.approx(1.0)
    assert list(importance) == sorted(importance, reverse=True)
    assert conditional_hyperparameters(HP_TRIALS) == ["dense_dropout"]


def test_importance_finds_the_one_hyperparameter_that_matters():
    # Pooling decides accuracy; the learning rate takes every value with either pooling.
    trials = pd.DataFrame(
        {
            "trial_id": range(16),
            "status": "complete",
            "hp_pooling": ["avg", "max"] * 8,
            "hp_learning_rate": [1e-4, 1e-4, 1e-3, 1e-3, 1e-2, 1e-2, 3e-3, 3e-3] * 2,
            "val_accuracy": [0.6, 0.9] * 8,
        }
    )
    importance = hyperparameter_importance(trials)
    assert importance.index[0] == "pooling"
    assert importance["pooling"] > 0.9


def test_importance_is_empty_with_nothing_to_compare():
    assert hyperparameter_importance(HP_TRIALS.iloc[:1]).empty
    assert hyperparameter_importance(HP_TRIALS.iloc[:0]).empty
    only_conditional = HP_TRIALS[["trial_id", "status", "hp_dense_dropout", "val_accuracy"]]
    assert hyperparameter_importance(only_conditional).empty
    assert hyperparameter_importance(HP_TRIALS.assign(val_accuracy=0.5)).empty
