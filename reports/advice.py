"""What the report advises next, and why each trial got its verdict: pure functions of the
analysed table (`analysis.analyse_trials`), the leaderboard and run.json, so every line can cite
the stored figures it rests on. The option names are the command line's (search/cli.py)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pandas as pd

from reports.analysis import (
    OVERFIT_GAP,
    UNDERFIT_TRAIN_ACCURACY,
    hyperparameter_columns,
    is_numeric,
)
from search.schema import HP_PREFIX, TrialStatus
from search.stats import TIE_P

# The best trials the rules look at: the first ranked few.
LEADERS = 3
# The range-edge rule needs this many complete trials, so that "the best few sit at one end"
# is not just what a handful of trials gives by chance; the leaders then lie in the outer
# EDGE_SHARE of the span tried (on a log scale for learning rates).
EDGE_MIN_TRIALS = 6
EDGE_SHARE = 0.25
# Random start-up trials of each sampler when --startup-trials is not given (search/cli.py's
# help): Optuna's TPE and GP 10, CMA-ES 1; Keras Tuner's bayesian 3 per hyperparameter.
OPTUNA_STARTUP = {"tpe": 10, "gp": 10, "cmaes": 1}
BAYESIAN_STARTUP_PER_HP = 3
# Words that name the regularising hyperparameters of the built-in spaces.
REGULARISERS = ("dropout", "augment", "flip", "rotation", "zoom", "contrast", "translation")


@dataclass(frozen=True)
class Advice:
    """One line of the panel: the rule that fired, what to do, and the figures behind it."""

    rule: str
    action: str
    evidence: str


def _gap_name(basis: object) -> str:
    return "fit-time gap" if basis == "fit" else "clean gap"


def verdict_reason(row: Mapping, epoch_limit: int | None = None) -> str:
    """The verdict of one analysed trial with the rule that gave it and its numbers, e.g.
    "underfit: validation loss still falling at epoch 2 of 2"; empty without a verdict."""
    verdict = row.get("verdict")
    if not isinstance(verdict, str):
        return ""
    gap, basis = row.get("gap"), row.get("gap_basis")
    clean = basis != "fit"
    train = row.get("train_accuracy_clean" if clean else "train_accuracy_fit")
    train_name = "clean training accuracy" if clean else "fit-time training accuracy"
    if verdict == "overfit":
        return f"overfit: {_gap_name(basis)} {gap:+.3f} > {OVERFIT_GAP}"
    best, last = int(row["best_epoch"]), int(row["epochs"])
    limit = epoch_limit if epoch_limit and epoch_limit >= last else last
    falling = f"validation loss still falling at epoch {last} of {limit}"
    if verdict == "underfit":
        low = f"{train_name} {train:.3f} < {UNDERFIT_TRAIN_ACCURACY}"
        parts = ([falling] if best == last else []) + (
            [low] if train < UNDERFIT_TRAIN_ACCURACY else []
        )
        return "underfit: " + "; ".join(parts)
    return (
        f"fit: {_gap_name(basis)} {gap:+.3f} \u2264 {OVERFIT_GAP}, {train_name} {train:.3f}, "
        f"lowest validation loss at epoch {best} of {last}"
    )


def _names(rows: pd.DataFrame) -> str:
    """ "trial 3 (rank 1), trial 0 (rank 2)" for ranked rows."""
    return ", ".join(f"trial {r.trial_id} (rank {r.rank})" for r in rows.itertuples())


def still_improving(board: pd.DataFrame, info: Mapping) -> Advice | None:
    """The leaders had their lowest validation loss at the last epoch they were allowed."""
    limit = info.get("epochs")
    leaders = board.head(LEADERS)
    cut = leaders[(leaders["best_epoch"] == leaders["epochs"]) & (leaders["epochs"] >= limit)]
    if not limit or cut.empty:
        return None
    return Advice(
        "epochs",
        f"Train longer: raise --epochs (now {limit}); early stopping (--patience "
        f"{info.get('patience')}) still ends the trials that stop improving.",
        f"{_names(cut)} had the lowest validation loss at the last epoch allowed, "
        f"{limit} of --epochs {limit}: still improving when stopped.",
    )


def tied_leaders(board: pd.DataFrame, info: Mapping) -> Advice | None:
    """Trials the validation images cannot tell from the best (McNemar), not yet confirmed."""
    if info.get("confirm") or len(board) < 2:
        return None
    others = board.iloc[1:]
    tied = others[others["tied_with_best"].fillna(False).astype(bool)]
    if tied.empty:
        return None
    best = board.iloc[0]
    p_values = ", ".join(f"{p:.2f}" for p in tied["p_vs_best"])
    shown = tied.head(LEADERS)
    return Advice(
        "confirm",
        f"Retrain the leaders with fresh seeds: --confirm-top {len(shown) + 1} ranks them on "
        "the mean validation accuracy of their runs.",
        f"{len(tied)} trial{'s' if len(tied) != 1 else ''} tied with the best, trial "
        f"{best.trial_id} (val accuracy {best.val_accuracy:.4f}), by McNemar's exact test "
        f"(p = {p_values} \u2265 {TIE_P}): {_names(shown)}, val accuracy "
        + ", ".join(f"{v:.4f}" for v in shown["val_accuracy"])
        + ".",
    )


def _position(values: pd.Series, column: str) -> pd.Series:
    """Where each value lies in the span tried, 0 (lowest) to 1, on a log scale for positive
    learning rates."""
    numbers = values.astype(float)
    if column.endswith("learning_rate") and (numbers > 0).all():
        numbers = numbers.map(math.log10)
    low, high = numbers.min(), numbers.max()
    return (numbers - low) / (high - low)


def range_edge(board: pd.DataFrame, info: Mapping) -> Advice | None:
    """A numeric hyperparameter whose leaders all lie at one end of the values tried."""
    if len(board) < EDGE_MIN_TRIALS:
        return None
    leaders = board.head(LEADERS)
    for column in hyperparameter_columns(board):
        values = board[column]
        if not is_numeric(values) or values.isna().any() or values.nunique() < 3:
            continue
        at = _position(values, column).loc[leaders.index]
        for end, near in (("lowest", at <= EDGE_SHARE), ("highest", at >= 1 - EDGE_SHARE)):
            if near.all():
                name = column.removeprefix(HP_PREFIX)
                tried = f"{values.min():.4g}\u2013{values.max():.4g}"
                return Advice(
                    "range",
                    f"Widen {name}'s range past its {end} values (a space of your own: "
                    "--space my_space.py:build_model), or --fix it there.",
                    f"the {len(leaders)} best trials ({_names(leaders)}) all have {name} in the "
                    f"{end} quarter of the {len(values)} values tried ({tried}): "
                    + ", ".join(f"{v:.4g}" for v in leaders[column])
                    + ".",
                )
    return None


def large_gap(board: pd.DataFrame, info: Mapping) -> Advice | None:
    """The best trial overfits on its clean gap."""
    best = board.iloc[0] if len(board) else None
    if best is None or best["gap_basis"] != "clean" or not best["gap"] > OVERFIT_GAP:
        return None
    knobs = [c for c in hyperparameter_columns(board) if any(w in c.lower() for w in REGULARISERS)]
    values = ", ".join(
        f"{c.removeprefix(HP_PREFIX)} = {best[c]:.3g}" for c in knobs if pd.notna(best[c])
    )
    return Advice(
        "regularise",
        "Regularise more: stronger augmentation or more dropout"
        + (f" than the best trial's ({values})" if values else "")
        + ", or more training images.",
        f"the best trial, trial {best.trial_id}, has a clean gap of {best['gap']:+.3f} "
        f"(clean training accuracy {best['train_accuracy_clean']:.3f}, val accuracy "
        f"{best['val_accuracy']:.3f}) > {OVERFIT_GAP}.",
    )


def startup_count(info: Mapping, n_hyperparameters: int) -> tuple[str, int] | None:
    """The model-based sampler that proposed the trials and its random start-up trials; None
    for a search that is random throughout (or a grid)."""
    given = info.get("startup_trials")
    if info.get("backend") == "optuna":
        sampler = info.get("sampler", "tpe")
        if sampler == "auto" and len(info.get("objectives") or []) <= 1:
            sampler = "tpe"  # what Optuna creates for one objective
        default = OPTUNA_STARTUP.get(sampler)
        return None if default is None else (f"Optuna's {sampler} sampler", given or default)
    if info.get("algorithm") == "bayesian":
        count = given or BAYESIAN_STARTUP_PER_HP * n_hyperparameters
        return "Keras Tuner's bayesian oracle", count
    return None


def inside_startup(board: pd.DataFrame, info: Mapping, trials: pd.DataFrame) -> Advice | None:
    """The budget ended before the sampler modelled any result."""
    found = startup_count(info, len(hyperparameter_columns(trials)))
    if found is None:
        return None
    sampler, startup = found
    counted = int(trials["status"].isin([TrialStatus.COMPLETE, TrialStatus.PRUNED]).sum())
    if counted > startup:
        return None
    return Advice(
        "startup",
        f"Give the sampler trials to model: raise --max-trials (now {info.get('max_trials')}) "
        f"past {startup}, or lower --startup-trials.",
        f"all {counted} complete or pruned trials were within the {startup} random start-up "
        f"trials of {sampler}: no trial was proposed from the results.",
    )


RULES: tuple[Callable[[pd.DataFrame, Mapping], Advice | None], ...] = (
    still_improving,
    tied_leaders,
    range_edge,
    large_gap,
)


def what_next(board: pd.DataFrame, info: Mapping, trials: pd.DataFrame) -> list[Advice]:
    """Every rule's advice for the run, in the panel's order; empty when none applies.

    `board` is the leaderboard (complete trials ranked, with the analysed measures and ties),
    `trials` the whole of trials.csv (pruned trials count in the start-up)."""
    if board.empty:
        return []
    advice = [rule(board, info) for rule in RULES] + [inside_startup(board, info, trials)]
    return [a for a in advice if a is not None]
