"""Overfitting measures, rankings and search summaries: pure functions from run-store tables.

Every measure is read from `epochs.csv` (one row per epoch: `accuracy` and `loss` are Keras's
running figures during `fit`, with dropout and augmentation on; `train_accuracy_clean` and
`train_loss_clean` the epoch's weights in inference mode on a fixed training sample; `val_*` on
the validation split) at a trial's best epoch, the lowest validation loss, which is the epoch
whose weights EarlyStopping restores. Gaps are train minus validation and are kept signed.

The verdicts, the onset and the penalised ranking judge the clean figures, which compare like
with like; the fit-time ones mostly measure how much harder augmentation and dropout make
training. Runs stored before the clean figures existed (or with --clean-train-eval off) are
judged on the fit-time ones, and `gap_basis` says so.
"""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd

from search.schema import AT_BEST_COLUMNS, BASELINE_COLUMNS, HP_PREFIX, TUNER_PREFIX, TrialStatus
from search.store import rank_trials

# Overfitting onset: validation loss rises for ONSET_K epochs in a row while training loss falls.
ONSET_K = 2
# Verdict thresholds, read at the best epoch (see `verdict`).
OVERFIT_GAP = 0.05
UNDERFIT_TRAIN_ACCURACY = 0.80
# Penalised ranking: val_accuracy - PENALTY * max(gap, 0), on the judged gap.
DEFAULT_PENALTY = 1.0
RANK_BY = ("val_accuracy", "penalised")

# AT_BEST_COLUMNS are read at the best epoch; trials.csv's values win over epochs.csv's.
MEASURE_COLUMNS = [
    *AT_BEST_COLUMNS,
    "gap",  # the gap judged: gap_clean, or gap_fit where it was not measured
    "gap_basis",  # "clean" or "fit": which of the two `gap` is
    "epochs",
    "gap_last",
    "max_gap",
    "loss_gap",
    "onset_epoch",
    "wasted_epochs",
    "verdict",
]
# Keras Tuner's Hyperband bookkeeping (tuner/epochs, tuner/bracket...) is not a hyperparameter.
BOOKKEEPING_PREFIX = f"{HP_PREFIX}{TUNER_PREFIX}"


def _column(curve: pd.DataFrame, name: str) -> pd.Series:
    """A column of `curve`, all missing when the table has none (runs stored before it)."""
    return curve[name] if name in curve else pd.Series(np.nan, index=curve.index, dtype=float)


def accuracy_gap(curve: pd.DataFrame) -> pd.Series:
    """Train minus validation accuracy per epoch, signed: the clean training accuracy where it
    was measured, else the fit-time one."""
    train = _column(curve, "train_accuracy_clean").fillna(curve["accuracy"])
    return train - curve["val_accuracy"]


def _segments(curve: pd.DataFrame, warmup_epochs: int) -> list[pd.DataFrame]:
    """The stretches of `curve` (sorted by epoch) that the onset is looked for in: the epochs
    after the warm-up, cut where the phase changes (a fine-tune phase starts afresh)."""
    curve = curve[curve["epoch"] > warmup_epochs]
    phase = _column(curve, "phase").fillna("train")
    starts = (phase != phase.shift()).cumsum()
    return [segment for _, segment in curve.groupby(starts, sort=True)]


def _training_loss(segment: pd.DataFrame) -> pd.Series:
    """The clean training loss where every epoch of `segment` has one; the fit-time loss,
    whose level differs, is never mixed in."""
    clean = _column(segment, "train_loss_clean")
    return clean if clean.notna().all() else segment["loss"]


def overfitting_onset(curve: pd.DataFrame, k: int = ONSET_K, warmup_epochs: int = 0) -> int | None:
    """The first epoch after which val_loss rises for `k` epochs in a row while the training
    loss (the clean one where measured) falls.

    `curve` is one trial's epochs. The warm-up epochs (1..`warmup_epochs`) are left out, and
    the count starts again where the fine-tune phase begins. None when that never happens.
    """
    for segment in _segments(curve.sort_values("epoch"), warmup_epochs):
        worsening = (segment["val_loss"].diff() > 0) & (_training_loss(segment).diff() < 0)
        # A full window at position i means epochs i-k+1..i all worsened; the onset is epoch i-k.
        full_windows = np.flatnonzero(worsening.rolling(k).sum().to_numpy() == k)
        if full_windows.size:
            return int(segment["epoch"].iloc[full_windows[0] - k])
    return None


def lowest_val_loss_epoch(curve: pd.DataFrame, warmup_epochs: int = 0) -> int | None:
    """The store's best epoch: the first epoch after the warm-up with the lowest validation
    loss; the last epoch when every epoch is warm-up (nothing is restored then)."""
    scored = curve.dropna(subset=["val_loss"]).sort_values("epoch")
    if scored.empty:
        return None
    judged = scored[scored["epoch"] > warmup_epochs]
    if judged.empty:
        return int(scored["epoch"].iloc[-1])
    return int(judged.loc[judged["val_loss"].idxmin(), "epoch"])


def wasted_epochs(last_epoch: int, onset_epoch: int | None, best_epoch: int | None) -> int:
    """Epochs trained after the onset that did not lead to the kept model.

    A rise of val_loss that is followed by a new lowest one is not counted against the trial.
    """
    if onset_epoch is None:
        return 0
    return last_epoch - max(onset_epoch, best_epoch or onset_epoch)


def verdict(gap: float, train_accuracy: float, still_improving: bool) -> str | None:
    """overfit, underfit or fit, for the model kept at the best epoch, given its judged gap and
    the training accuracy that gap was taken from (clean, or fit-time for older runs).

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
    curve: pd.DataFrame,
    best_epoch: int | None = None,
    *,
    k: int = ONSET_K,
    warmup_epochs: int = 0,
    recorded: dict | None = None,
) -> dict[str, object]:
    """MEASURE_COLUMNS for one trial's epochs, read at `best_epoch` (default: lowest val_loss
    after the warm-up). `recorded` (the trial's trials.csv row) gives the values at the best
    epoch that the epochs lack: with --clean-train-eval best, only trials.csv has clean ones."""
    curve = curve.sort_values("epoch")
    last = curve.iloc[-1]
    if best_epoch is None or best_epoch not in set(curve["epoch"]):
        best_epoch = lowest_val_loss_epoch(curve, warmup_epochs)
    onset = overfitting_onset(curve, k, warmup_epochs)
    gaps = accuracy_gap(curve)
    measures: dict[str, object] = {
        "best_epoch": best_epoch,
        "epochs": int(last["epoch"]),
        "gap_last": gaps.iloc[-1],
        "max_gap": gaps.max(),
        "onset_epoch": onset,
        "wasted_epochs": wasted_epochs(int(last["epoch"]), onset, best_epoch),
    }
    if best_epoch is None:
        return measures | dict.fromkeys([*AT_BEST_COLUMNS[1:], "gap", "gap_basis"])
    best = curve[curve["epoch"] == best_epoch].iloc[0]
    at_best = {
        "val_accuracy": best["val_accuracy"],
        "val_loss": best["val_loss"],
        "train_accuracy_clean": best.get("train_accuracy_clean"),
        "train_loss_clean": best.get("train_loss_clean"),
        "train_accuracy_fit": best["accuracy"],
    }
    at_best |= {c: v for c, v in (recorded or {}).items() if c in at_best and pd.notna(v)}
    clean = pd.notna(at_best["train_accuracy_clean"])
    train = at_best["train_accuracy_clean" if clean else "train_accuracy_fit"]
    train_loss = at_best["train_loss_clean"]
    gap = train - at_best["val_accuracy"]
    return (
        measures
        | at_best
        | {
            "gap_clean": gap if clean else None,
            "gap_fit": at_best["train_accuracy_fit"] - at_best["val_accuracy"],
            "gap": gap,
            "gap_basis": "clean" if clean else "fit",
            "loss_gap": at_best["val_loss"]
            - (train_loss if pd.notna(train_loss) else best["loss"]),
            "verdict": verdict(gap, train, still_improving=best_epoch == last["epoch"]),
        }
    )


def measure_trials(
    trials: pd.DataFrame, epochs: pd.DataFrame, *, k: int = ONSET_K, warmup_epochs: int = 0
) -> pd.DataFrame:
    """MEASURE_COLUMNS per trial that has epochs, indexed by trial_id.

    A trial's best epoch and the values at it are the ones trials.csv records when it has them,
    so the numbers describe the model the store kept.
    """
    recorded = trials.set_index("trial_id").to_dict("index")
    rows = {
        int(trial_id): trial_measures(
            curve,
            _best_epoch(recorded.get(trial_id)),
            k=k,
            warmup_epochs=warmup_epochs,
            recorded=recorded.get(trial_id),
        )
        for trial_id, curve in epochs.groupby("trial_id")
    }
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=MEASURE_COLUMNS)
    frame.index.name = "trial_id"
    # Floats even where every value is missing (a run without clean figures), so they compare.
    numbers = [*AT_BEST_COLUMNS[1:], "gap", "gap_last", "max_gap", "loss_gap"]
    integers = {"best_epoch": "Int64", "onset_epoch": "Int64", "epochs": "Int64"}
    return frame.astype(integers | dict.fromkeys(numbers, float))


def _best_epoch(row: dict | None) -> int | None:
    epoch = (row or {}).get("best_epoch")
    return None if pd.isna(epoch) else int(epoch)


def analyse_trials(
    trials: pd.DataFrame, epochs: pd.DataFrame, *, k: int = ONSET_K, warmup_epochs: int = 0
) -> pd.DataFrame:
    """trials.csv with the overfitting measures added; `warmup_epochs` is run.json's.

    Values trials.csv lacks (a failed or pruned trial's metrics) are read from its epochs.
    """
    measures = measure_trials(trials, epochs, k=k, warmup_epochs=warmup_epochs)
    table = trials.set_index("trial_id")
    for column in AT_BEST_COLUMNS:
        stored = table[column] if column in table else pd.Series(np.nan, index=table.index)
        table[column] = stored.astype(measures[column].dtype).fillna(measures[column])
    added = [c for c in MEASURE_COLUMNS if c not in AT_BEST_COLUMNS]
    return table.join(measures[added]).reset_index()


def judged_gap(table: pd.DataFrame) -> pd.Series:
    """Per trial, the gap its verdict judges: gap_clean, or gap_fit where none was measured."""
    return _column(table, "gap_clean").fillna(_column(table, "gap_fit"))


def penalised_score(table: pd.DataFrame, penalty: float = DEFAULT_PENALTY) -> pd.Series:
    """val_accuracy - penalty * max(judged gap, 0): overfitting costs, a negative gap earns
    nothing."""
    return table["val_accuracy"] - penalty * judged_gap(table).clip(lower=0)


def rank(
    table: pd.DataFrame,
    by: str = "val_accuracy",
    penalty: float = DEFAULT_PENALTY,
    *,
    objective: str = "val_accuracy",
) -> pd.DataFrame:
    """Complete trials, best first, numbered from 1 in a `rank` column.

    by="val_accuracy" is the store's ranking (the run's --objective, val accuracy unless it set
    another, then lower val loss); by="penalised"
    sorts on `penalised_score`, kept in a `score` column, with the same tie-breaks. No signed
    gap breaks a tie: a negative one would reward the trial augmentation holds back most.
    """
    if by == "val_accuracy":
        ranked = rank_trials(table, objective)
    elif by == "penalised":
        done = table[table["status"] == TrialStatus.COMPLETE]
        ranked = done.assign(score=penalised_score(done, penalty)).sort_values(
            ["score", "val_loss", "trial_id"], ascending=[False, True, True], kind="stable"
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
    history = ordered.assign(elapsed_s=elapsed)[ordered["status"] == TrialStatus.COMPLETE]
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
    done = trials[trials["status"] == TrialStatus.COMPLETE]
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
    done = trials[trials["status"] == TrialStatus.COMPLETE]
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
