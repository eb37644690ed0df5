"""Overfitting measures, rankings and search summaries: pure functions from run-store tables.

Every measure is read from `epochs.csv` (one row per epoch, `accuracy` and `loss` measured while
training, `val_*` on the validation split) at a trial's best epoch, the lowest validation loss,
which is the epoch whose weights EarlyStopping restores. Gaps are train minus validation and are
kept signed: validation can beat training because dropout and augmentation are active while the
training accuracy is measured.
"""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd

from search.store import HP_PREFIX, rank_trials

# Overfitting onset: validation loss rises for ONSET_K epochs in a row while training loss falls.
ONSET_K = 2
# Verdict thresholds, read at the best epoch (see `verdict`).
OVERFIT_GAP = 0.05
UNDERFIT_TRAIN_ACCURACY = 0.80
# Penalised ranking: val_accuracy - PENALTY * max(gap, 0).
DEFAULT_PENALTY = 1.0
RANK_BY = ("val_accuracy", "penalised")

AT_BEST_COLUMNS = ["best_epoch", "val_accuracy", "val_loss", "train_accuracy", "gap"]
MEASURE_COLUMNS = [
    *AT_BEST_COLUMNS,
    "epochs",
    "gap_last",
    "max_gap",
    "loss_gap",
    "onset_epoch",
    "wasted_epochs",
    "verdict",
]
# Keras Tuner's Hyperband bookkeeping (tuner/epochs, tuner/bracket...) is not a hyperparameter.
BOOKKEEPING_PREFIX = f"{HP_PREFIX}tuner/"
BASELINE_COLUMNS = (f"{HP_PREFIX}baseline", "baseline")


def accuracy_gap(curve: pd.DataFrame) -> pd.Series:
    """Train minus validation accuracy per epoch, signed."""
    return curve["accuracy"] - curve["val_accuracy"]


def overfitting_onset(curve: pd.DataFrame, k: int = ONSET_K) -> int | None:
    """The first epoch after which val_loss rises for `k` epochs in a row while loss falls.

    `curve` is one trial's epochs. None when that never happens.
    """
    curve = curve.sort_values("epoch")
    worsening = (curve["val_loss"].diff() > 0) & (curve["loss"].diff() < 0)
    # A full window at position i means epochs i-k+1..i all worsened; the onset is epoch i-k.
    full_windows = np.flatnonzero(worsening.rolling(k).sum().to_numpy() == k)
    if full_windows.size == 0:
        return None
    return int(curve["epoch"].iloc[full_windows[0] - k])


def lowest_val_loss_epoch(curve: pd.DataFrame) -> int | None:
    """The store's best epoch: the first epoch with the lowest validation loss."""
    scored = curve.dropna(subset=["val_loss"]).sort_values("epoch")
    if scored.empty:
        return None
    return int(scored.loc[scored["val_loss"].idxmin(), "epoch"])


def wasted_epochs(last_epoch: int, onset_epoch: int | None, best_epoch: int | None) -> int:
    """Epochs trained after the onset that did not lead to the kept model.

    A rise of val_loss that is followed by a new lowest one is not counted against the trial.
    """
    if onset_epoch is None:
        return 0
    return last_epoch - max(onset_epoch, best_epoch or onset_epoch)


def verdict(gap: float, train_accuracy: float, still_improving: bool) -> str | None:
    """overfit, underfit or fit, for the model kept at the best epoch.

    - overfit: training accuracy beats validation accuracy by more than OVERFIT_GAP;
    - underfit: otherwise, if validation loss was still falling at the last epoch (the best
      epoch is the last one) or training accuracy is below UNDERFIT_TRAIN_ACCURACY;
    - fit: neither.
    """
    if pd.isna(gap) or pd.isna(train_accuracy):
        return None
    if gap > OVERFIT_GAP:
        return "overfit"
    if still_improving or train_accuracy < UNDERFIT_TRAIN_ACCURACY:
        return "underfit"
    return "fit"


def trial_measures(
    curve: pd.DataFrame, best_epoch: int | None = None, k: int = ONSET_K
) -> dict[str, object]:
    """MEASURE_COLUMNS for one trial's epochs, read at `best_epoch` (default: lowest val_loss)."""
    curve = curve.sort_values("epoch")
    last = curve.iloc[-1]
    if best_epoch is None or best_epoch not in set(curve["epoch"]):
        best_epoch = lowest_val_loss_epoch(curve)
    onset = overfitting_onset(curve, k)
    measures: dict[str, object] = {
        "best_epoch": best_epoch,
        "epochs": int(last["epoch"]),
        "gap_last": last["accuracy"] - last["val_accuracy"],
        "max_gap": accuracy_gap(curve).max(),
        "onset_epoch": onset,
        "wasted_epochs": wasted_epochs(int(last["epoch"]), onset, best_epoch),
    }
    if best_epoch is None:
        return measures | dict.fromkeys(["val_accuracy", "val_loss", "train_accuracy", "gap"])
    best = curve[curve["epoch"] == best_epoch].iloc[0]
    gap = best["accuracy"] - best["val_accuracy"]
    return measures | {
        "val_accuracy": best["val_accuracy"],
        "val_loss": best["val_loss"],
        "train_accuracy": best["accuracy"],
        "gap": gap,
        "loss_gap": best["val_loss"] - best["loss"],
        "verdict": verdict(gap, best["accuracy"], still_improving=best_epoch == last["epoch"]),
    }


def measure_trials(trials: pd.DataFrame, epochs: pd.DataFrame, k: int = ONSET_K) -> pd.DataFrame:
    """MEASURE_COLUMNS per trial that has epochs, indexed by trial_id.

    A trial's best epoch is the one trials.csv records when it has one, so the numbers describe
    the model the store kept.
    """
    recorded = trials.set_index("trial_id")["best_epoch"].dropna().astype(int).to_dict()
    rows = {
        int(trial_id): trial_measures(curve, recorded.get(trial_id), k)
        for trial_id, curve in epochs.groupby("trial_id")
    }
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=MEASURE_COLUMNS)
    frame.index.name = "trial_id"
    return frame.astype({"best_epoch": "Int64", "onset_epoch": "Int64", "epochs": "Int64"})


def analyse_trials(trials: pd.DataFrame, epochs: pd.DataFrame, k: int = ONSET_K) -> pd.DataFrame:
    """trials.csv with the overfitting measures added.

    Values trials.csv lacks (a failed or pruned trial's metrics) are read from its epochs.
    """
    measures = measure_trials(trials, epochs, k)
    table = trials.set_index("trial_id")
    for column in AT_BEST_COLUMNS:
        table[column] = table[column].astype(measures[column].dtype).fillna(measures[column])
    added = [c for c in MEASURE_COLUMNS if c not in AT_BEST_COLUMNS]
    return table.join(measures[added]).reset_index()


def penalised_score(table: pd.DataFrame, penalty: float = DEFAULT_PENALTY) -> pd.Series:
    """val_accuracy - penalty * max(gap, 0): overfitting costs, a negative gap earns nothing."""
    return table["val_accuracy"] - penalty * table["gap"].clip(lower=0)


def rank(
    table: pd.DataFrame, by: str = "val_accuracy", penalty: float = DEFAULT_PENALTY
) -> pd.DataFrame:
    """Complete trials, best first, numbered from 1 in a `rank` column.

    by="val_accuracy" is the store's ranking (val accuracy, then smaller gap, then lower val
    loss); by="penalised" sorts on `penalised_score`, kept in a `score` column, with the same
    tie-breaks.
    """
    if by == "val_accuracy":
        ranked = rank_trials(table)
    elif by == "penalised":
        done = table[table["status"] == "complete"]
        ranked = done.assign(score=penalised_score(done, penalty)).sort_values(
            ["score", "gap", "val_loss", "trial_id"],
            ascending=[False, True, True, True],
            kind="stable",
        )
    else:
        raise ValueError(f"rank by {by!r}: choose one of {', '.join(RANK_BY)}")
    ranked = ranked.reset_index(drop=True)
    ranked.insert(0, "rank", range(1, len(ranked) + 1))
    return ranked


def hyperparameter_columns(trials: pd.DataFrame) -> list[str]:
    """The searched hyperparameters: hp_ columns without tuner bookkeeping or baseline names."""
    return [
        c
        for c in trials.columns
        if c.startswith(HP_PREFIX)
        and not c.startswith(BOOKKEEPING_PREFIX)
        and c not in BASELINE_COLUMNS
    ]


def baseline_column(trials: pd.DataFrame) -> str | None:
    """The column naming a document's baseline model, when the run has baselines."""
    for column in BASELINE_COLUMNS:
        if column in trials.columns and trials[column].notna().any():
            return column
    return None


def is_numeric(values: pd.Series) -> bool:
    """True when every value given is a number (booleans are choices, not numbers)."""
    given = values.dropna()
    return not given.empty and all(
        isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_))
        for v in given
    )


def best_so_far(trials: pd.DataFrame) -> pd.DataFrame:
    """Complete trials in trial order with the best val accuracy so far and the time spent.

    Time is the cumulative duration of all trials up to each one, failed ones included.
    """
    ordered = trials.sort_values("trial_id")
    elapsed = ordered["duration_s"].astype(float).fillna(0).cumsum()
    history = ordered.assign(elapsed_s=elapsed)[ordered["status"] == "complete"]
    history = history[["trial_id", "val_accuracy", "elapsed_s"]].astype({"trial_id": int})
    return history.assign(best_so_far=history["val_accuracy"].cummax())


def _distribution(values: pd.Series) -> optuna.distributions.BaseDistribution:
    """The narrowest Optuna distribution holding the values seen (the space's bounds are not
    stored). Spans of two decades or more are treated as log-scaled, like learning rates."""
    if not is_numeric(values):
        return optuna.distributions.CategoricalDistribution(sorted(set(values.astype(str))))
    low, high = float(values.min()), float(values.max())
    if all(float(v).is_integer() for v in values):
        return optuna.distributions.IntDistribution(int(low), int(high))
    return optuna.distributions.FloatDistribution(low, high, log=low > 0 and high >= 100 * low)


def _optuna_value(value: object, distribution: optuna.distributions.BaseDistribution) -> object:
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return str(value)
    if isinstance(distribution, optuna.distributions.IntDistribution):
        return int(value)
    return float(value)


def importance_study(trials: pd.DataFrame) -> optuna.Study:
    """An in-memory Optuna study of the complete trials, maximising val accuracy.

    A hyperparameter inactive in a trial is left out of that trial's params, which is how Optuna
    records a conditional parameter.
    """
    done = trials[trials["status"] == "complete"]
    varying = [c for c in hyperparameter_columns(done) if done[c].dropna().nunique() > 1]
    distributions = {c.removeprefix(HP_PREFIX): _distribution(done[c].dropna()) for c in varying}
    frozen = []
    for _, row in done.iterrows():
        active = {n: d for n, d in distributions.items() if pd.notna(row[HP_PREFIX + n])}
        params = {n: _optuna_value(row[HP_PREFIX + n], d) for n, d in active.items()}
        frozen.append(
            optuna.trial.create_trial(
                value=float(row["val_accuracy"]), params=params, distributions=active
            )
        )
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" line mid-search
    try:
        study = optuna.create_study(direction="maximize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    study.add_trials(frozen)
    return study


def conditional_hyperparameters(trials: pd.DataFrame) -> list[str]:
    """Hyperparameters some complete trials did not use (inactive), named without hp_."""
    done = trials[trials["status"] == "complete"]
    return [
        c.removeprefix(HP_PREFIX)
        for c in hyperparameter_columns(done)
        if done[c].isna().any() and done[c].notna().any()
    ]


def hyperparameter_importance(trials: pd.DataFrame) -> pd.Series:
    """Optuna's fANOVA importance of each hyperparameter for val accuracy, largest first, named
    without the hp_ prefix.

    fANOVA fits a random forest, which copes with the handful of trials a search often has
    (Optuna's default, PED-ANOVA, compares the top 10% of trials: one trial out of ten). It
    leaves out the conditional hyperparameters, which not every trial has. Empty when there is
    nothing to compare: no two complete trials differ in val accuracy, or no hyperparameter
    every trial used varies.
    """
    study = importance_study(trials)
    values_differ = len({t.value for t in study.trials}) > 1
    if not values_differ or not optuna.search_space.intersection_search_space(study.trials):
        return pd.Series(dtype=float)
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # the same figure every time
    importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return pd.Series(importances, dtype=float).sort_values(ascending=False)
