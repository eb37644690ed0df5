"""Report figures: seaborn on matplotlib Figures drawn by the Agg canvas, returned as PNG data URIs.

Figures are built as `matplotlib.figure.Figure` objects, never through pyplot, so nothing is
registered globally, no GUI backend is touched, and each figure is freed when it goes out of
scope, which matters because the report is redrawn after every trial.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from reports.analysis import OVERFIT_GAP, accuracy_gap, is_numeric
from search.schema import HP_PREFIX, TrialStatus

DPI = 96
PANEL_WIDTH = 3.1
PANEL_HEIGHT = 2.4
# Whole-number hyperparameters with at most this many distinct values are drawn as choices.
MAX_CHOICES = 6
# Hyperparameters drawn on a log axis whatever their spread: every log-sampled one of the
# built-in spaces is a learning rate, and a few trials can span less than the two decades that
# mark other log-sampled values (`_log_scaled`). The declared sampling is not stored in a run.
LOG_SAMPLED_SUFFIX = "learning_rate"


@contextmanager
def _style() -> Iterator[None]:
    with (
        sns.axes_style("whitegrid"),
        sns.plotting_context("paper"),
        sns.color_palette("colorblind"),
    ):
        yield


def _figure(rows: int, columns: int) -> tuple[Figure, np.ndarray]:
    figure = Figure(
        figsize=(PANEL_WIDTH * columns, PANEL_HEIGHT * rows), dpi=DPI, layout="constrained"
    )
    axes = figure.subplots(rows, columns, squeeze=False)
    return figure, axes


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _train_vs_validation(curve: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per epoch and split, for seaborn's hue: the fit-time training figure, the clean
    one where it was measured, and the validation one."""
    names = {metric: "train (fit-time)", f"val_{metric}": "validation"}
    clean = f"train_{metric}_clean"
    if clean in curve and curve[clean].notna().any():
        names = {clean: "train (clean)"} | names
    long = curve.melt(id_vars="epoch", value_vars=list(names), var_name="split")
    long = long.dropna(subset=["value"])  # --clean-train-eval best: the best epoch only
    return long.assign(split=long["split"].map(names)).rename(columns={"value": metric})


def _mark_epochs(
    ax: Axes, curve: pd.DataFrame, *, best_epoch: int | None, onset_epoch: int | None, k: int
) -> None:
    fine_tune = curve.loc[curve["phase"] == "fine_tune", "epoch"]
    if not fine_tune.empty:
        ax.axvspan(fine_tune.min() - 0.5, fine_tune.max() + 0.5, alpha=0.08, label="fine-tune")
    if best_epoch is not None:
        ax.axvline(best_epoch, color="black", linestyle=":", label="best epoch")
    if onset_epoch is not None:
        ax.axvline(onset_epoch, color="tab:red", linestyle="--", label=f"onset (k={k})")


def learning_curves(
    curve: pd.DataFrame, title: str, *, best_epoch: int | None, onset_epoch: int | None, k: int
) -> str:
    """Train vs validation accuracy and loss of one trial, best epoch and onset marked."""
    with _style():
        figure, axes = _figure(1, 2)
        for ax, metric in zip(axes[0], ("accuracy", "loss"), strict=True):
            sns.lineplot(
                data=_train_vs_validation(curve, metric),
                x="epoch",
                y=metric,
                hue="split",
                marker="o",
                estimator=None,
                ax=ax,
            )
            _mark_epochs(ax, curve, best_epoch=best_epoch, onset_epoch=onset_epoch, k=k)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend(fontsize="x-small")
        axes[0, 1].get_legend().remove()
        figure.suptitle(title, fontsize="medium")
        return _png(figure)


# Axis words for the gap a figure draws, by which gaps it holds.
GAP_WORDS = {frozenset({"clean"}): "clean gap", frozenset({"fit"}): "fit-time gap"}
MIXED_GAPS = "gap, clean or fit-time,"
BASIS_WORDS = {"clean": "clean", "fit": "fit-time"}


def _gap_words(bases: set[str]) -> str:
    return GAP_WORDS.get(frozenset(bases), MIXED_GAPS)


def gap_vs_accuracy(table: pd.DataFrame, labelled: list[int]) -> str:
    """Every trial with a best epoch: its judged gap (`gap`: clean, or fit-time where it has no
    clean figures, as `gap_basis` says) against val accuracy, coloured by status."""
    scored = table.dropna(subset=["gap", "val_accuracy"])
    with _style():
        figure, axes = _figure(1, 1)
        ax = axes[0, 0]
        sns.scatterplot(
            data=scored, x="gap", y="val_accuracy", hue="status", style="verdict", ax=ax
        )
        ax.axvline(0, color="grey", linewidth=0.8)
        ax.axvline(OVERFIT_GAP, color="tab:red", linestyle="--", linewidth=0.8)
        for row in scored[scored["trial_id"].isin(labelled)].itertuples():
            ax.annotate(str(row.trial_id), (row.gap, row.val_accuracy), fontsize="small")
        words = _gap_words(set(scored["gap_basis"].dropna()))
        ax.set(xlabel=f"{words} at the best epoch (train - val accuracy)", ylabel="val accuracy")
        ax.legend(fontsize="x-small")
        figure.set_figwidth(PANEL_WIDTH * 1.6)
        return _png(figure)


def gap_bases_per_trial(epochs: pd.DataFrame, trial_ids: list[int]) -> dict[int, str]:
    """Per trial, the training accuracy its per-epoch gap is drawn from: "clean" when every
    epoch has the clean figure (--clean-train-eval every), else "fit" for all of its epochs,
    so one line never mixes the two, whose levels differ."""
    clean = (
        epochs["train_accuracy_clean"].notna()
        if "train_accuracy_clean" in epochs
        else pd.Series(False, index=epochs.index)
    )
    every = clean.groupby(epochs["trial_id"]).all()
    return {t: "clean" if every.get(t, False) else "fit" for t in trial_ids}


def gap_per_epoch(epochs: pd.DataFrame, trial_ids: list[int]) -> str:
    """Train minus validation accuracy per epoch for the given trials: clean where the trial
    measured it every epoch, else fit-time (`gap_bases_per_trial`), named in the legend when
    the trials differ."""
    bases = gap_bases_per_trial(epochs, trial_ids)
    shown = epochs[epochs["trial_id"].isin(trial_ids)]
    fit = shown.drop(columns="train_accuracy_clean", errors="ignore")
    clean = shown["trial_id"].map(bases) == "clean"
    gaps = accuracy_gap(shown).where(clean, accuracy_gap(fit))
    mixed = len(set(bases.values())) > 1
    names = {t: f"trial {t}" + (f" ({BASIS_WORDS[bases[t]]})" if mixed else "") for t in trial_ids}
    shown = shown.assign(gap=gaps, trial=shown["trial_id"].map(names))
    with _style():
        figure, axes = _figure(1, 1)
        ax = axes[0, 0]
        order = [names[t] for t in trial_ids]
        sns.lineplot(
            data=shown, x="epoch", y="gap", hue="trial", hue_order=order, marker="o", ax=ax
        )
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.axhline(OVERFIT_GAP, color="tab:red", linestyle="--", linewidth=0.8)
        # Mixed, the legend names each trial's basis.
        words = "gap" if mixed else _gap_words(set(bases.values()))
        ax.set(ylabel=f"{words} (train - val)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize="x-small")
        figure.set_figwidth(PANEL_WIDTH * 1.6)
        return _png(figure)


def _label(value: object) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


def _choice_labels(values: pd.Series) -> tuple[pd.Series, list[str]]:
    """Values as labels, inactive ones named, in numeric order when the values are numbers."""
    given = values.dropna().unique()
    ordered = sorted(given) if is_numeric(values) else sorted(given, key=str)
    order = [_label(v) for v in ordered] + (["(inactive)"] if values.isna().any() else [])
    return values.map(_label, na_action="ignore").fillna("(inactive)"), order


def _is_continuous(values: pd.Series) -> bool:
    """Fractions, or whole numbers with too many values to draw as choices."""
    given = values.dropna()
    return is_numeric(values) and (
        not all(float(v).is_integer() for v in given) or given.nunique() > MAX_CHOICES
    )


def _log_scaled(column: str, values: pd.Series) -> bool:
    """Positive values that are a learning rate or span two decades or more."""
    low, high = values.min(), values.max()
    return low > 0 and (column.endswith(LOG_SAMPLED_SUFFIX) or high >= 100 * low)


def _hyperparameter_panel(ax: Axes, done: pd.DataFrame, column: str) -> None:
    values = done[column]
    if _is_continuous(values):
        sns.scatterplot(x=values.astype(float), y=done["val_accuracy"], ax=ax)
        if _log_scaled(column, values):
            ax.set_xscale("log")
    else:
        labels, order = _choice_labels(values)
        sns.stripplot(x=labels, y=done["val_accuracy"], order=order, ax=ax)
        if sum(len(label) for label in order) > 24:  # long names would overlap
            ax.tick_params(axis="x", labelrotation=30)
    ax.set(xlabel=column.removeprefix(HP_PREFIX), ylabel="val accuracy")


def hyperparameter_effects(trials: pd.DataFrame, columns: list[str]) -> str | None:
    """Val accuracy of complete trials against each hyperparameter, one panel each."""
    done = trials[trials["status"] == TrialStatus.COMPLETE]
    if done.empty or not columns:
        return None
    grid = min(3, len(columns))
    with _style():
        figure, axes = _figure(math.ceil(len(columns) / grid), grid)
        for ax, column in zip(axes.flat, columns, strict=False):
            _hyperparameter_panel(ax, done, column)
        for ax in axes.flat[len(columns) :]:
            ax.set_visible(False)
        return _png(figure)


def importance_bars(importance: pd.Series) -> str:
    """Horizontal bars of hyperparameter importance, largest first."""
    with _style():
        figure, axes = _figure(1, 1)
        ax = axes[0, 0]
        sns.barplot(x=importance.to_numpy(), y=importance.index, orient="h", ax=ax)
        ax.set(xlabel="importance for val accuracy", ylabel="")
        figure.set_figheight(max(PANEL_HEIGHT, 0.3 * len(importance) + 0.8))
        figure.set_figwidth(PANEL_WIDTH * 1.6)
        return _png(figure)


def optimization_history(history: pd.DataFrame) -> str:
    """Val accuracy and best so far, against trial number and against time spent."""
    with _style():
        figure, axes = _figure(1, 2)
        for ax, x, label in zip(
            axes[0],
            ("trial_id", "elapsed_s"),
            ("trial", "time spent in trials (s)"),
            strict=True,
        ):
            sns.scatterplot(data=history, x=x, y="val_accuracy", label="trial", ax=ax)
            ax.step(history[x], history["best_so_far"], where="post", label="best so far")
            ax.set(xlabel=label, ylabel="val accuracy")
            ax.legend(fontsize="x-small")
        return _png(figure)


# The deployment trade-off (--measure-deploy, --objectives): each trial is one SVG group with a
# <title>, which a browser shows on hover; inline SVG needs no script and fetches nothing.
SVG_NAMESPACE = "http://www.w3.org/2000/svg"
LOG_SPREAD = 20  # a cost axis spanning a wider ratio is drawn on a log scale
COST_LABELS = {
    "latency_ms": "latency (ms, 1 thread, batch 1)",  # the file the note names: TFLite or ONNX
    "tflite_kb": "float32 file size (KB)",
    "n_params": "parameters",
}


def deployment_tradeoff(
    trials: pd.DataFrame,
    *,
    objective: str,
    costs: list[str],
    fronts: dict[str, set[int]],
    limits: dict[str, float],
) -> str:
    """An inline SVG: `objective` against each of `costs`, one panel each, for complete and
    infeasible trials; a panel's Pareto front (`fronts[cost]`, trial ids) is joined and
    highlighted, each `limits[cost]` drawn as a line, and hovering a point names its trial."""
    shown = trials[trials["status"].isin([TrialStatus.COMPLETE, TrialStatus.INFEASIBLE])]
    tips = {}
    with _style():
        figure, axes = _figure(1, len(costs))
        for ax, cost in zip(axes[0], costs, strict=True):
            points = shown.dropna(subset=[objective, cost])
            front = fronts.get(cost, set())
            tips |= _tradeoff_panel(ax, points, objective=objective, cost=cost, front=front)
            if cost in limits:
                ax.axvline(limits[cost], color="tab:red", linestyle="--", linewidth=0.8)
                ax.annotate(
                    f"limit {limits[cost]:g}",
                    (limits[cost], 1),
                    xycoords=("data", "axes fraction"),
                    fontsize="x-small",
                    color="tab:red",
                    va="top",
                )
        figure.set_figwidth(PANEL_WIDTH * 1.5 * len(costs))
        return _svg_with_titles(figure, tips)


def _tradeoff_panel(
    ax: Axes, points: pd.DataFrame, *, objective: str, cost: str, front: set[int]
) -> dict[str, str]:
    """Draw one panel; return each point's SVG id and hover text."""
    tips = {}
    for row in points.to_dict("records"):
        trial_id, on_front = int(row["trial_id"]), int(row["trial_id"]) in front
        infeasible = row["status"] == TrialStatus.INFEASIBLE
        style = {"marker": "x", "color": "tab:red"} if infeasible else {"marker": "o"}
        if not infeasible:
            style["color"] = "tab:blue" if on_front else "0.6"
        gid = f"trial-{trial_id}-{cost}"
        ax.plot([row[cost]], [row[objective]], linestyle="none", markersize=6, gid=gid, **style)
        marks = " (Pareto front)" if on_front else " (over a limit)" if infeasible else ""
        tips[gid] = f"trial {trial_id}: {objective} {row[objective]:.4g}, {cost} {row[cost]:.4g}"
        tips[gid] += marks
    line = points[points["trial_id"].isin(front)].sort_values(cost)
    if len(line) > 1:
        ax.step(
            line[cost], line[objective], where="post", color="tab:blue", linewidth=0.8, zorder=1.5
        )
    ax.set(xlabel=COST_LABELS.get(cost, cost), ylabel=objective.replace("_", " "))
    values = points[cost].astype(float)
    if len(values) and values.min() > 0 and values.max() / values.min() > LOG_SPREAD:
        ax.set_xscale("log")
    return tips


def _svg_with_titles(figure: Figure, tips: dict[str, str]) -> str:
    """The figure as SVG markup, each group named in `tips` given a <title> (its tooltip)."""
    import xml.etree.ElementTree as ET

    from matplotlib.backends.backend_svg import FigureCanvasSVG

    buffer = io.StringIO()
    FigureCanvasSVG(figure).print_svg(buffer)
    ET.register_namespace("", SVG_NAMESPACE)
    ET.register_namespace("xlink", "http://www.w3.org/1999/xlink")
    root = ET.fromstring(buffer.getvalue())
    for group in root.iter(f"{{{SVG_NAMESPACE}}}g"):
        if group.get("id") in tips:
            title = ET.Element(f"{{{SVG_NAMESPACE}}}title")
            title.text = tips[group.get("id")]
            group.insert(0, title)
    return ET.tostring(root, encoding="unicode")
