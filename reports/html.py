"""The run report: one self-contained HTML file, and leaderboard.csv, from the run store alone."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from reports import plots
from reports.analysis import (
    DEFAULT_PENALTY,
    MEASURE_COLUMNS,
    ONSET_K,
    OVERFIT_GAP,
    UNDERFIT_TRAIN_ACCURACY,
    analyse_trials,
    baseline_column,
    best_so_far,
    conditional_hyperparameters,
    hyperparameter_columns,
    hyperparameter_importance,
    rank,
)
from reports.environment import keras_backend_text
from reports.mistakes import GALLERY_CAP, best_model_outcomes
from reports.model_card import refit_epochs
from search.atomic import atomic_write
from search.pareto import front_ids
from search.schema import (
    HP_PREFIX,
    INTERVAL_SPLITS,
    LIMITS,
    PREDICTION_SCORES,
    STATUSES,
    TrialStatus,
)
from search.stats import TIE_P, mcnemar_exact, predicted_classes
from search.store import RunStore

# A finalist's validation accuracy over its --confirm-top runs (trials.csv, search/confirm.py):
# kept apart in leaderboard.csv, shown as one "mean ± sd (n runs)" column on the page.
CONFIRM_SHOWN = ("confirm_mean", "confirm_sd", "confirm_runs")
CONFIRM_COLUMNS = (*CONFIRM_SHOWN, "confirm_val_loss")
# On the page the judged gap is not repeated: gap_basis names which of gap_clean and gap_fit
# it is (leaderboard.csv keeps all of them).
PAGE_HIDDEN = ("gap",)

# Learning curves and per-epoch gaps are drawn for this many of the best trials (and every
# baseline): a figure per trial for 200 trials would make the per-trial redraw slow.
TOP_TRIALS = 5
# Sorts the leaderboard; inlined into the page, which allows no other script.
SCRIPT = "sort_tables.js"
# The gaps side by side: the judged one (`gap`), which it is, and both measured ones.
GAP_COLUMNS = ("gap", "gap_basis", "gap_clean", "gap_fit")
LEADERBOARD_COLUMNS = [
    "rank",
    "trial_id",
    "baseline",
    "val_accuracy",
    "val_accuracy_low",
    "val_accuracy_high",
    *CONFIRM_COLUMNS,
    "tied_with_best",
    "p_vs_best",
    *GAP_COLUMNS,
    "score",
    *[c for c in MEASURE_COLUMNS if c != "val_accuracy" and c not in GAP_COLUMNS],
    "test_accuracy",
    "test_accuracy_low",
    "test_accuracy_high",
    "duration_s",
    "n_params",
    "pareto",
    "latency_ms",
    "latency_iqr_ms",
    "tflite_kb",
]
# Header tooltips, so the table explains itself.
COLUMN_HELP = {
    "val_accuracy": "validation accuracy at the best epoch",
    "val_accuracy_ci": "Wilson 95% interval of val_accuracy, from the validation split's size",
    "tied_with_best": (
        f"yes: McNemar's exact test on the validation images finds no difference from the "
        f"first-ranked trial (p >= {TIE_P}); empty where predictions are not stored"
    ),
    "p_vs_best": "McNemar's exact p against the first-ranked trial's validation predictions",
    "confirm": "finalists of --confirm-top: mean \u00b1 sd of validation accuracy over the "
    "search's run and its confirmation runs (n runs); the ranking follows the mean",
    "confirm_mean": "mean validation accuracy over the finalist's runs; the ranking follows it",
    "confirm_sd": "standard deviation of validation accuracy over the finalist's runs",
    "confirm_runs": "complete runs of the finalist: the search's own and the confirmation runs",
    "gap": "the gap the verdict judges: gap_clean, or gap_fit where no clean one was measured",
    "gap_basis": "which gap the verdict and score judged: clean (gap_clean), or fit (gap_fit) "
    "when the trial has no clean figures (an older run, or --clean-train-eval off)",
    "gap_clean": "clean gap, the one judged: train_accuracy_clean - val_accuracy at the best "
    "epoch, both in inference mode",
    "gap_fit": "fit-time gap, for comparison: train_accuracy_fit - val_accuracy at the best "
    "epoch; augmentation, dropout and weights moving through the epoch push it down",
    "score": "val_accuracy - penalty x max(judged gap, 0)",
    "val_loss": "validation loss at the best epoch (the lowest)",
    "val_auc": "validation ROC AUC at the best epoch (one-vs-rest, macro): --objective val_auc",
    "val_f1": "validation macro F1 at the best epoch: --objective val_f1",
    "train_accuracy_clean": "training accuracy at the best epoch, in inference mode (no "
    "augmentation, no dropout) on a fixed sample of training images",
    "train_loss_clean": "training loss at the best epoch, measured as train_accuracy_clean",
    "train_accuracy_fit": "Keras's running training accuracy during the best epoch (with "
    "augmentation and dropout on)",
    "best_epoch": "epoch with the lowest validation loss, whose weights are kept",
    "epochs": "epochs trained",
    "gap_last": "train (clean where measured) - validation accuracy at the last epoch",
    "max_gap": "largest train (clean where measured) - validation accuracy over all epochs",
    "loss_gap": "validation loss - training loss (clean where measured) at the best epoch",
    "onset_epoch": "epoch after which validation loss rose while training loss (clean where "
    "measured) fell; warm-up epochs left out, counted afresh from the fine-tune phase",
    "wasted_epochs": "epochs trained after both the onset and the best epoch",
    "test_accuracy": "test accuracy, measured only for the exported best model",
    "test_accuracy_ci": "Wilson 95% interval of test_accuracy, from the test split's size",
    "duration_s": "seconds spent training the trial",
    "n_params": "model parameters",
    "pareto": "--objectives: yes when no other complete trial is as good on every objective "
    "and better on one (the Pareto front); its model is kept for export --trial N",
    "latency_ms": "median latency of the float32 TFLite model (ONNX in onnxruntime where "
    "TensorFlow was not installed: deploy_format) on this machine's CPU, one "
    "thread, batch 1, over 30 runs",
    "latency_iqr_ms": "interquartile range of those 30 latencies",
    "tflite_kb": "size of the float32 TFLite file (or ONNX file: deploy_format)",
}
# What --objective ranked by, in the best trial's card.
OBJECTIVE_NAMES = {
    "val_accuracy": "val accuracy",
    "val_loss": "val loss (lowest)",
    "val_auc": "val ROC AUC",
    "val_f1": "val macro F1",
}
SIGNED = {"gap", "gap_clean", "gap_fit", "gap_last", "max_gap", "loss_gap"}
FOUR_PLACES = {
    "val_accuracy",
    "val_loss",
    *PREDICTION_SCORES,
    "train_accuracy_clean",
    "train_loss_clean",
    "train_accuracy_fit",
    "test_accuracy",
    "score",
    "confirm_mean",
    "confirm_sd",
    "confirm_val_loss",
    *[f"{c}_{end}" for c in INTERVAL_SPLITS for end in ("low", "high")],
}
SETTINGS = (
    "space",
    "backend",
    "algorithm",
    "sampler",
    "pruner",
    "max_trials",
    "epochs",
    "patience",
    "warmup_epochs",
    "image_size",
    "batch_size",
    "seed",
    "split_seed",
    "weights",
    "alpha",
    "layout",
    "data",
)


def validation_correct(store: RunStore, trial_ids: list[int]) -> dict[int, np.ndarray]:
    """Per trial, whether it classified each validation image correctly, for the trials whose
    predictions are stored and match the stored labels (a run from before predictions were
    kept has neither; labels are stored when the search scores its best model)."""
    images = store.split_images("validation")
    if images is None:
        return {}
    labels = images[1]
    found = {t: store.predictions(t, "validation") for t in trial_ids}
    return {
        t: predicted_classes(p) == labels
        for t, p in found.items()
        if p is not None and len(p) == len(labels)
    }


def mark_ties(ranked: pd.DataFrame, correct: dict[int, np.ndarray]) -> pd.DataFrame:
    """p_vs_best: McNemar's exact p of each trial's validation predictions against the
    first-ranked trial's; tied_with_best: p >= TIE_P. Empty for a trial, or all trials, without
    stored predictions."""
    ids = [int(t) for t in ranked["trial_id"]]
    best = correct.get(ids[0]) if ids else None
    p_values = [
        mcnemar_exact(correct[t], best) if best is not None and t in correct else None for t in ids
    ]
    tied = [None if p is None else p >= TIE_P for p in p_values]
    return ranked.assign(p_vs_best=p_values, tied_with_best=tied)


def leaderboard(
    table: pd.DataFrame,
    *,
    rank_by: str = "val_accuracy",
    penalty: float = DEFAULT_PENALTY,
    correct: dict[int, np.ndarray] | None = None,
    objective: str = "val_accuracy",
) -> pd.DataFrame:
    """Complete trials ranked best first: measures (with ties marked from `correct`, each
    trial's per-image validation correctness), then every hp_ column."""
    ranked = mark_ties(rank(table, rank_by, penalty, objective=objective), correct or {})
    baseline = baseline_column(table)
    if baseline:
        ranked = ranked.assign(baseline=ranked[baseline])
    measures = [c for c in LEADERBOARD_COLUMNS if c in ranked.columns]
    hp = [c for c in ranked.columns if c.startswith(HP_PREFIX) and c != baseline]
    return ranked[measures + hp]


def format_value(column: str, value: object) -> str:
    """A cell's text: empty when missing, signed gaps, fixed places for rates and losses."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if column in ("tied_with_best", "pareto"):
        return "yes" if value else "no"
    if isinstance(value, bool):
        return str(value)
    if column in SIGNED:
        return f"{value:+.4f}"
    if column in FOUR_PLACES:
        return f"{value:.4f}"
    if column == "duration_s":
        return f"{value:.1f}"
    if column == "n_params":
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _sort_key(value: object) -> str:
    """What the table's script sorts on: the exact number, or the text; missing is empty."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    return str(value)


def _cell_class(column: str, value: object) -> str:
    if column == "verdict":
        return f"text verdict-{value}"
    return "text" if isinstance(value, str) else ""


def _table_rows(
    frame: pd.DataFrame, sort_keys: dict[str, list] | None = None
) -> list[list[dict[str, str]]]:
    """Cells of `frame`; `sort_keys` gives, per column, the values it sorts on when they are
    not its text (a "mean \u00b1 sd" column sorts on the mean)."""
    keys = sort_keys or {}
    return [
        [
            {
                "text": format_value(c, v),
                "sort": _sort_key(keys[c][i] if c in keys else v),
                "class": _cell_class(c, v),
            }
            for c, v in row.items()
        ]
        for i, row in enumerate(frame.to_dict("records"))
    ]


def _headers(columns: list[str]) -> list[dict[str, str]]:
    return [{"name": c.removeprefix(HP_PREFIX), "help": COLUMN_HELP.get(c, "")} for c in columns]


def format_duration(seconds: float | None) -> str:
    if seconds is None or pd.isna(seconds):
        return "unknown"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _status_counts(trials: pd.DataFrame) -> dict[str, int]:
    counts = trials["status"].value_counts()
    return {status: int(counts[status]) for status in STATUSES if status in counts}


def _wall_seconds(info: dict) -> float | None:
    """Run time from run.json's timestamps, up to now while the run is still going."""
    if not info.get("started_at"):
        return None
    started = datetime.fromisoformat(info["started_at"])
    finished = info.get("finished_at")
    end = datetime.fromisoformat(finished) if finished else datetime.now(started.tzinfo)
    return (end - started).total_seconds()


def _class_counts(info: dict) -> pd.DataFrame:
    """Images per class (rows) and split (columns), with totals."""
    counts = pd.DataFrame(info.get("counts") or {}).fillna(0).astype(int)
    if counts.empty:
        return counts
    counts["total"] = counts.sum(axis=1)
    counts.loc["total"] = counts.sum()
    return counts


def _epoch(value: object) -> int | None:
    return None if pd.isna(value) else int(value)


def _curve_figures(
    table: pd.DataFrame, epochs: pd.DataFrame, shown: list[int], *, names: dict[int, str], k: int
) -> list[dict]:
    rows = table.set_index("trial_id")
    figures = []
    for trial_id in shown:
        curve = epochs[epochs["trial_id"] == trial_id]
        if curve.empty:
            continue
        row = rows.loc[trial_id]
        title = names.get(trial_id, f"trial {trial_id}")
        figures.append(
            {
                "trial_id": trial_id,
                "title": title,
                "png": plots.learning_curves(
                    curve,
                    title,
                    best_epoch=_epoch(row["best_epoch"]),
                    onset_epoch=_epoch(row["onset_epoch"]),
                    k=k,
                ),
            }
        )
    return figures


def _figure_names(board: pd.DataFrame, table: pd.DataFrame) -> dict[int, str]:
    """Titles for the curves: rank for the leaders, the document's model for baselines."""
    names = {int(r.trial_id): f"#{r.rank}: trial {r.trial_id}" for r in board.itertuples()}
    baseline = baseline_column(table)
    if baseline:
        for row in table.dropna(subset=[baseline]).itertuples():
            names[int(row.trial_id)] = f"baseline {getattr(row, baseline)}: trial {row.trial_id}"
    return names


def _baselines(table: pd.DataFrame) -> list[dict]:
    baseline = baseline_column(table)
    if not baseline:
        return []
    rows = table.dropna(subset=[baseline])
    return [
        {
            "name": row[baseline],
            "trial_id": row["trial_id"],
            "status": row["status"],
            "val_accuracy": format_value("val_accuracy", row["val_accuracy"]),
            "gap_clean": format_value("gap_clean", row["gap_clean"]),
            "gap_fit": format_value("gap_fit", row["gap_fit"]),
            "gap_basis": format_value("gap_basis", row["gap_basis"]),
            "verdict": format_value("verdict", row["verdict"]),
        }
        for row in rows.to_dict("records")
    ]


def _trial_details(table: pd.DataFrame, hp_columns: list[str], curves: set[int]) -> list[dict]:
    measures = [c for c in MEASURE_COLUMNS if c not in GAP_COLUMNS and c != "verdict"]
    # The gaps after the figures they come from, the judged one named by gap_basis.
    shown = ["status", *measures, "gap_clean", "gap_fit", "gap_basis", "verdict"]
    shown += [*CONFIRM_SHOWN, "duration_s", "n_params", "test_accuracy"]
    return [
        {
            "trial_id": row["trial_id"],
            "status": row["status"],
            "verdict": format_value("verdict", row["verdict"]),
            "error": format_value("error", row.get("error")),
            "has_curve": row["trial_id"] in curves,
            "measures": [
                (c, format_value(c, row[c]), COLUMN_HELP.get(c, ""))
                for c in shown
                if c in row and (c not in CONFIRM_SHOWN or pd.notna(row[c]))
            ],
            "hyperparameters": [
                (c.removeprefix(HP_PREFIX), format_value(c, row[c]) or "(inactive)")
                for c in hp_columns
            ],
        }
        for row in table.sort_values("trial_id").to_dict("records")
    ]


def _hyperparameter_section(trials: pd.DataFrame, hp_columns: list[str]) -> dict:
    importance = hyperparameter_importance(trials)
    return {
        "effects_png": plots.hyperparameter_effects(trials, hp_columns),
        "importance_png": None if importance.empty else plots.importance_bars(importance),
        "conditional": conditional_hyperparameters(trials),
    }


def search_method(info: dict) -> str:
    """How trials were proposed: Keras Tuner's oracle, or Optuna's sampler and pruner."""
    if info.get("backend") == "optuna":
        sampler, pruner = info.get("sampler", "tpe"), info.get("pruner", "median")
        return f"optuna ({sampler} sampler, {pruner} pruner)"
    return f"{info.get('backend')} ({info.get('algorithm')})"


def _settings_of(info: dict) -> tuple[str, ...]:
    """The settings that applied: Keras Tuner's algorithm, or Optuna's sampler and pruner."""
    unused = ("algorithm",) if info.get("backend") == "optuna" else ("sampler", "pruner")
    return tuple(key for key in SETTINGS if key not in unused)


def interval_range(column: str, low: object, high: object) -> str:
    """An accuracy's interval as "low-high" (with an en dash) in the accuracy's own format;
    empty when unknown."""
    if low is None or pd.isna(low) or high is None or pd.isna(high):
        return ""
    return f"{format_value(column, low)}\u2013{format_value(column, high)}"


def interval_note(row: dict, column: str, n: int | None) -> str:
    """ "95% CI low-high, n = N" for a row's accuracy, empty when the row has no interval."""
    shown = interval_range(column, row.get(f"{column}_low"), row.get(f"{column}_high"))
    return f"95% CI {shown}, n = {n}" if shown else ""


def _with_interval_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The page's leaderboard: each accuracy's _low and _high columns (kept apart in
    leaderboard.csv) shown as one <accuracy>_ci column of "low-high"."""
    for column in INTERVAL_SPLITS:
        low, high = f"{column}_low", f"{column}_high"
        if low not in frame.columns:
            continue
        pairs = zip(frame[low], frame[high], strict=True)
        ranges = [interval_range(column, a, b) for a, b in pairs]
        frame = frame.assign(**{low: ranges}).rename(columns={low: f"{column}_ci"})
        frame = frame.drop(columns=high)
    return frame


def confirm_text(mean: object, sd: object, runs: object) -> str:
    """A finalist's "mean \u00b1 sd (n runs)"; empty for a trial that was not confirmed."""
    if mean is None or pd.isna(mean):
        return ""
    spread = "" if sd is None or pd.isna(sd) else f" \u00b1 {sd:.4f}"
    count = "" if runs is None or pd.isna(runs) else f" ({int(runs)} runs)"
    return f"{mean:.4f}{spread}{count}"


def _with_confirm_column(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, list]]:
    """The page's leaderboard: a confirmed run's confirm_mean, _sd and _runs (kept apart in
    leaderboard.csv) shown as one "confirm" column in their place, sorting on the mean."""
    if "confirm_mean" not in frame.columns or frame["confirm_mean"].isna().all():
        return frame.drop(columns=[c for c in CONFIRM_COLUMNS if c in frame.columns]), {}
    values = frame.reindex(columns=list(CONFIRM_SHOWN)).to_dict("records")
    texts = [confirm_text(*(v[c] for c in CONFIRM_SHOWN)) for v in values]
    frame = frame.assign(confirm_mean=texts).rename(columns={"confirm_mean": "confirm"})
    frame = frame.drop(columns=[c for c in CONFIRM_COLUMNS if c in frame.columns])
    return frame, {"confirm": [v["confirm_mean"] for v in values]}


def _tie_summary(board: pd.DataFrame) -> dict[str, int]:
    """How many ranked trials were compared with the first and how many are tied with it (the
    first itself not counted), and how many have no mark."""
    compared = board["tied_with_best"].iloc[1:].dropna()
    unmarked = int(board["tied_with_best"].isna().sum())
    return {"compared": len(compared), "tied": int(compared.sum()), "unmarked": unmarked}


def test_card(store: RunStore, info: dict, best: dict | None) -> tuple[str, str]:
    """The test accuracy card's value and caption. The test split is scored once, for the best
    model, when the search ends; a finished run can still lack the score, and says why."""
    scored = format_value("test_accuracy", best.get("test_accuracy")) if best else ""
    if scored:
        interval = interval_note(best, "test_accuracy", store.split_size("test"))
        return scored, "best model, on the test split" + (f" ({interval})" if interval else "")
    if info.get("status") != "finished":
        return "not yet", "best model, once the search ends"
    if not sum(info.get("counts", {}).get("test", {}).values()):
        return "not scored", "the data has no test images"
    if not store.best_model_path.exists():
        return "not scored", "no best_model.keras in the run directory"
    return "-", "scored only for the best model by val accuracy"


def refit_note(store: RunStore, info: dict) -> str:
    """What --refit's model scored on the test split, for the test card; empty without one."""
    refit = info.get("refit")
    if not isinstance(refit, dict):  # the --refit setting itself (True) until the refit ran
        return ""
    trained = (
        f"trial {refit.get('trial_id')} retrained on train + validation "
        f"({refit.get('train_images')} images) for {refit_epochs(refit)}"
    )
    scored = format_value("test_accuracy", refit.get("test_accuracy"))
    if not scored:
        return f"refit_model.keras, {trained}: not scored, the data has no test images"
    interval = interval_note(refit, "test_accuracy", store.split_size("test"))
    return f"refit_model.keras, {trained}: {scored}" + (f" ({interval})" if interval else "")


def confirm_note(info: dict, board: pd.DataFrame) -> dict | None:
    """--confirm-top's record (run.json) for the page, with the finalists' count; None when
    the run was not confirmed."""
    confirm = info.get("confirm")
    if not confirm:
        return None
    confirmed = board["confirm_mean"].notna().sum() if "confirm_mean" in board else 0
    return confirm | {"finalists": int(confirmed)}


def ranked_by(rank_by: str, best: dict | None, objective: str = "val_accuracy") -> str:
    """What put the best trial first, for its card."""
    if rank_by == "penalised":
        return "penalised score"
    if best and pd.notna(best.get("confirm_mean")):
        return "mean val accuracy of its runs"
    return OBJECTIVE_NAMES[objective]


def gap_bases(table: pd.DataFrame) -> dict:
    """Which gap the run's verdicts judged: the trials judged on the fit-time gap because they
    have no clean figures, and how many were judged on the clean one."""
    judged = table.dropna(subset=["gap"])
    fit = sorted(int(t) for t in judged.loc[judged["gap_basis"] == "fit", "trial_id"])
    return {"clean": int((judged["gap_basis"] == "clean").sum()), "fit": fit}


def report_context(
    store: RunStore,
    *,
    rank_by: str = "val_accuracy",
    penalty: float = DEFAULT_PENALTY,
    k: int = ONSET_K,
) -> dict:
    """Everything the template shows, read from the store."""
    info = store.read_run_info()
    trials, epochs = store.trials(), store.epochs()
    table = analyse_trials(trials, epochs, k=k, warmup_epochs=info.get("warmup_epochs", 0))
    complete = [int(t) for t in trials.loc[trials["status"] == TrialStatus.COMPLETE, "trial_id"]]
    board = leaderboard(
        table,
        rank_by=rank_by,
        penalty=penalty,
        correct=validation_correct(store, complete),
        objective=info.get("objective", "val_accuracy"),
    )
    best = None if board.empty else board.iloc[0].to_dict()
    top = [int(t) for t in board["trial_id"].head(TOP_TRIALS)]
    baseline = baseline_column(table)
    baseline_ids = (
        [] if not baseline else [int(t) for t in table.dropna(subset=[baseline])["trial_id"]]
    )
    shown = top + [t for t in baseline_ids if t not in top]
    return (
        _page_constants()
        | {"rank_by": rank_by, "penalty": penalty, "k": k, "leaderboard": board, "best": best}
        | _run_summary(store, info, trials, board=board, best=best, rank_by=rank_by)
        | _tables(board, table, trials, shown=shown)
        | _figures(table, epochs, trials, board=board, top=top, shown=shown, k=k)
        | {"tradeoff": tradeoff_section(trials, info)}
    )


def tradeoff_section(trials: pd.DataFrame, info: dict) -> dict | None:
    """The deployment trade-off: the ranking objective against each measured cost, with each
    panel's front when the search had several objectives; None when nothing was measured."""
    objectives = info.get("objectives") or []
    objective = info.get("objective", "val_accuracy")
    measured = [c for c in ("latency_ms", "tflite_kb") if c in trials and trials[c].notna().any()]
    wanted_params = "n_params" in objectives or info.get("max_params") is not None
    costs = measured + (["n_params"] if wanted_params else [])
    if not costs or objective not in trials or trials[objective].isna().all():
        return None
    multi = len(objectives) > 1
    fronts = {c: front_ids(trials, [objective, c]) for c in costs} if multi else {}
    limits = {column: info[option] for option, column in LIMITS.items() if info.get(option)}
    svg = plots.deployment_tradeoff(
        trials, objective=objective, costs=costs, fronts=fronts, limits=limits
    )
    formats = trials["deploy_format"].dropna() if "deploy_format" in trials else ()
    measured_as = "ONNX" if len(formats) and (formats == "onnx").all() else "TFLite"
    return {
        "svg": Markup(svg),
        "multi": multi,
        "objectives": objectives,
        "objective": objective,
        "format": measured_as,
    }


def _page_constants() -> dict:
    return {
        "tie_p": TIE_P,
        "gallery_cap": GALLERY_CAP,
        "format": format_value,
        "overfit_gap": OVERFIT_GAP,
        "help": COLUMN_HELP,
        "underfit_train_accuracy": UNDERFIT_TRAIN_ACCURACY,
    }


def _run_summary(
    store: RunStore,
    info: dict,
    trials: pd.DataFrame,
    *,
    board: pd.DataFrame,
    best: dict | None,
    rank_by: str,
) -> dict:
    """The page's head: the run, its best trial, its test score and its mistakes."""
    mistakes_trial, outcomes = best_model_outcomes(store, info)
    val_size = store.split_size("validation")
    return {
        "info": info,
        "method": search_method(info),
        "settings": [(key, info[key]) for key in _settings_of(info) if key in info],
        "keras_backend": keras_backend_text(info),
        "status_counts": _status_counts(trials),
        "test_card": test_card(store, info, best),
        "refit_note": refit_note(store, info),
        "ranked_by": ranked_by(rank_by, best, info.get("objective", "val_accuracy")),
        "best_confirm": confirm_text(*(best.get(c) for c in CONFIRM_SHOWN)) if best else "",
        "confirm": confirm_note(info, board),
        "val_interval": interval_note(best, "val_accuracy", val_size) if best else "",
        "ties": _tie_summary(board),
        "mistakes_trial": mistakes_trial,
        "outcomes": outcomes,
        "wall_time": format_duration(_wall_seconds(info)),
        "trial_time": format_duration(trials["duration_s"].astype(float).sum()),
        "class_counts": _class_counts(info),
    }


def _tables(
    board: pd.DataFrame, table: pd.DataFrame, trials: pd.DataFrame, *, shown: list[int]
) -> dict:
    """The leaderboard as the page shows it, the baselines, and every trial's details."""
    hp_columns = hyperparameter_columns(trials)
    page_columns = [
        c
        for c in board.columns
        if (c in LEADERBOARD_COLUMNS or c in hp_columns)
        and c not in PAGE_HIDDEN
        # val_auc and val_f1 are measured only when one is the objective
        and not (c in PREDICTION_SCORES and board[c].isna().all())
    ]
    shown_board, sort_keys = _with_confirm_column(_with_interval_columns(board[page_columns]))
    return {
        "gap_bases": gap_bases(table),
        "baselines": _baselines(table),
        "headers": _headers(list(shown_board.columns)),
        "rows": _table_rows(shown_board, sort_keys),
        "verdict_counts": table["verdict"].value_counts().to_dict(),
        "hyperparameters": _hyperparameter_section(trials, hp_columns),
        "trials": _trial_details(table, hp_columns, set(shown)),
        "failed": table[table["status"] == TrialStatus.FAILED].to_dict("records"),
    }


def _figures(
    table: pd.DataFrame,
    epochs: pd.DataFrame,
    trials: pd.DataFrame,
    *,
    board: pd.DataFrame,
    top: list[int],
    shown: list[int],
    k: int,
) -> dict:
    """The page's plots: the top trials', and the baselines' beside them."""
    history = best_so_far(trials)
    names = _figure_names(board, table)
    return {
        "epoch_bases": plots.gap_bases_per_trial(epochs, shown),
        "scatter_png": None if table["gap"].isna().all() else plots.gap_vs_accuracy(table, top),
        "gap_png": plots.gap_per_epoch(epochs, shown) if shown else None,
        "curves": _curve_figures(table, epochs, shown, names=names, k=k),
        "history_png": None if history.empty else plots.optimization_history(history),
    }


def _script(environment: Environment) -> dict:
    """The page's one script, trusted as it is, and its hash for the Content-Security-Policy."""
    script = environment.loader.get_source(environment, SCRIPT)[0]
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return {"script": Markup(script), "script_hash": f"sha256-{digest}"}


def _write_atomic(path: Path, text: str) -> None:
    """Write then rename, so a browser reloading mid-search never reads half a report; the
    temporary name is per process, as several search workers may write the report at once."""
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"), per_process=True)


def write_report(
    run_dir: Path,
    *,
    rank_by: str = "val_accuracy",
    penalty: float = DEFAULT_PENALTY,
    onset_k: int = ONSET_K,
) -> Path:
    """Write report.html and leaderboard.csv into `run_dir` and return the report's path.

    rank_by is "val_accuracy" (the store's ranking) or "penalised" (val_accuracy - penalty *
    max(gap, 0)); onset_k is the number of epochs of rising validation loss that mark the onset.
    """
    store = RunStore(run_dir)
    context = report_context(store, rank_by=rank_by, penalty=penalty, k=onset_k)
    _write_atomic(store.run_dir / "leaderboard.csv", context["leaderboard"].to_csv(index=False))
    environment = Environment(
        loader=PackageLoader("reports"), autoescape=select_autoescape(["html"])
    )
    html = environment.get_template("report.html").render(context | _script(environment))
    path = store.run_dir / "report.html"
    _write_atomic(path, html)
    return path
