"""MODEL_CARD.md for an exported model, written from the run store and the export's figures.

It reads run.json, trials.csv, epochs.csv and best_hparams.json (through `RunStore`) and says
what the model was trained on, how the data was split, which hyperparameters won, how well they
did on the validation and held-out test splits, how far training and validation accuracy drifted
apart (the clean gap the verdict judges, and the fit-time one beside it), and which of the
documents' baselines in the same run it beat. Where the run has them, it also reports the refit
model's test accuracy (`--refit`) and the finalists' means over their seeds (`--confirm-top`).
An export of another kept trial (`export --trial N`) gets that trial's card instead. Deployment
figures come from trials.csv (`--measure-deploy`) and, for a quantized TFLite export, from the
figures search.quantize measured (quantized.json), rendered here as given: nothing is measured.
Baseline trials are those with a `hp_baseline` (the `baselines` space) or `baseline` column
set, or whose hyperparameters are exactly a preset of the run's space (`--enqueue`d from
`spaces.baselines.for_space`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from reports.analysis import OVERFIT_GAP, analyse_trials
from reports.environment import keras_backend_text
from search.data import TEST_FRACTION, VALIDATION_FRACTION
from search.errors import UsageError
from search.schema import (
    BASELINE_COLUMNS,
    PREDICTION_SCORES,
    TUNER_PREFIX,
    TrialStatus,
    trial_hyperparameters,
)
from search.stats import accuracy_interval
from search.store import RunStore
from spaces.baselines import preset_of

CARD_NAME = "MODEL_CARD.md"
SHOWN_SKIPPED = 20  # skipped files listed by name; the rest are counted
# What --measure-deploy measured (trials.csv's deploy_format; runs before it measured TFLite).
DEPLOY_FORMATS = {"tflite": "TFLite", "onnx": "ONNX (onnxruntime)"}


def write_model_card(
    run_dir: Path,
    output_dir: Path,
    *,
    trial_id: int | None = None,
    image_size: int | None = None,
    quantized: dict | None = None,
) -> Path:
    """Write MODEL_CARD.md for the model of `trial_id` (the best trial's when None) into
    `output_dir` and return its path. `image_size` is the exported model's input size (else the
    trial's or the run's); `quantized` is a quantized export's figures (search.quantize), shown
    beside the float32 ones."""
    store = RunStore(run_dir)
    if not store.best_hparams_path.exists():
        raise UsageError(f"{run_dir} has no best_hparams.json: no trial of it has completed")
    path = Path(output_dir) / CARD_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    card = model_card(store, trial_id=trial_id, image_size=image_size, quantized=quantized)
    path.write_text(card, encoding="utf-8")
    return path


def model_card(
    store: RunStore,
    *,
    trial_id: int | None = None,
    image_size: int | None = None,
    quantized: dict | None = None,
) -> str:
    info = store.read_run_info()
    # The verdict and the gap it judged (gap_basis), as the report reads them.
    trials = analyse_trials(
        store.trials(), store.epochs(), warmup_epochs=info.get("warmup_epochs", 0)
    )
    best_hparams = store.read_best_hparams()
    best_id = best_hparams["trial_id"]
    shown = trials[trials["trial_id"] == (best_id if trial_id is None else trial_id)]
    if shown.empty:
        raise UsageError(f"{store.run_dir}: trial {trial_id} is not in trials.csv")
    trial = shown.iloc[0]
    is_best = int(trial["trial_id"]) == best_id
    hparams = best_hparams["hyperparameters"] if is_best else trial_hyperparameters(trial)
    deployment = _deployment(trial, quantized)
    sections = [
        _summary(info, trial, best_id=best_id, image_size=image_size or hparams.get("image_size")),
        _data(info),
        _split(info),
        _hyperparameters(hparams),
        _results(trial, info, is_best=is_best),
        *([deployment] if deployment else []),
        *([_confirmation(trials, info["confirm"])] if info.get("confirm") else []),
        _baselines(trials, trial, info["space"], is_best=is_best),
    ]
    return "\n\n".join(sections) + "\n"


def _number(value, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _with_interval(accuracy, n: int) -> str:
    """ "x% (95% CI a-b, n = N)" (an en dash), the Wilson interval for N images."""
    if accuracy is None or (isinstance(accuracy, float) and math.isnan(accuracy)):
        return "n/a"
    low, high = accuracy_interval(accuracy, n)
    if low is None:  # a split without images
        return f"{100 * accuracy:.2f}%"
    return f"{100 * accuracy:.2f}% (95% CI {100 * low:.1f}\u2013{100 * high:.1f}, n = {n})"


def _split_size(info: dict, split: str) -> int:
    return sum(info["counts"].get(split, {}).values())


def _table(header: tuple[str, ...], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _summary(info: dict, trial: pd.Series, *, best_id: int, image_size: int | None) -> str:
    status = info.get("status", "unknown")
    trial_id = int(trial["trial_id"])
    which = (
        f"Best trial {trial_id}"
        if trial_id == best_id
        else f"Trial {trial_id} (`export --trial {trial_id}`; the best trial is {best_id})"
    )
    size = image_size or info["image_size"]  # a searched image size is the trial's own
    return "\n".join(
        [
            f"# Model card: {info['name']}",
            "",
            f"{which} of a `{info['space']}` search "
            f"({_proposer(info)}; run status: {status}), "
            f"{_count_params(trial)} parameters, kept at epoch {_epoch(trial)}; trials ranked "
            f"by `{info.get('objective', 'val_accuracy')}`. Trained on the "
            f"{keras_backend_text(info)} backend of Keras.",
            "",
            f"Input: raw RGB pixels in [0, 255], float32 of shape (n, {size}, {size}, 3); "
            f"augmentation and scaling are layers inside the model.",
            f"Output: {_output(info['class_names'])}.",
        ]
    )


def _proposer(info: dict) -> str:
    if info["backend"] == "optuna":
        return f"Optuna, {info.get('sampler')} sampler, {info.get('pruner')} pruner"
    return f"Keras Tuner, {info.get('algorithm')} search"


def _count_params(best: pd.Series) -> str:
    return "n/a" if pd.isna(best.get("n_params")) else f"{int(best['n_params']):,}"


def _epoch(best: pd.Series) -> str:
    return "n/a" if pd.isna(best.get("best_epoch")) else str(int(best["best_epoch"]))


def _output(class_names: list[str]) -> str:
    if len(class_names) == 2:
        return f"one sigmoid unit, the probability of `{class_names[1]}` (vs `{class_names[0]}`)"
    return f"softmax over {len(class_names)} classes in this order: " + ", ".join(
        f"`{c}`" for c in class_names
    )


def _data(info: dict) -> str:
    counts = info["counts"]
    splits = list(counts)
    rows = [(f"`{c}`", *(counts[s].get(c, 0) for s in splits)) for c in info["class_names"]]
    rows.append(("**total**", *(sum(counts[s].values()) for s in splits)))
    skipped = info.get("skipped", [])
    lines = [
        "## Data",
        "",
        f"Folder: `{os.path.normpath(info['data'])}` (layout {info['layout']}), "
        f"{len(info['class_names'])} classes, decoded and resized to {info['image_size']} px.",
        "",
        _table(("class", *splits), rows),
        "",
        f"Skipped (unreadable) files: {len(skipped)}.",
    ]
    lines += [f"- `{s['path']}` ({s['split']}): {s['reason']}" for s in skipped[:SHOWN_SKIPPED]]
    if len(skipped) > SHOWN_SKIPPED:
        lines.append(f"- and {len(skipped) - SHOWN_SKIPPED} more, listed in run.json")
    return "\n".join(lines)


def _split(info: dict) -> str:
    seed = info["split_seed"]
    rules = {
        "train/validation/test": "train, validation and test are the folder's own splits.",
        "train/validation": (
            f"train is the train folder; a seeded {TEST_FRACTION:.0%} of each class's "
            f"validation files (split seed {seed}) is held out as the test split, as the "
            f"documents do with `validation.take(n // 5)` but by file, so every run of this "
            f"data gets the same split."
        ),
        "flat": (
            f"per class, a seeded {VALIDATION_FRACTION:.0%} of the files (split seed {seed}) "
            f"is validation and {TEST_FRACTION:.0%} of those is test."
        ),
    }
    return "\n".join(
        [
            "## Split",
            "",
            rules.get(info["layout"], f"layout {info['layout']}."),
            "The test split is never used to choose: only the best trial's model is scored on "
            "it, once, at the end. Trials are ranked by validation accuracy"
            + (" (a confirmed finalist's mean over its runs)" if info.get("confirm") else "")
            + ", then lower validation loss.",
        ]
    )


def _hyperparameters(hparams: dict) -> str:
    # Hyperband's tuner/... values are Keras Tuner's bookkeeping, not the model's.
    rows = [(f"`{k}`", f"`{v}`") for k, v in hparams.items() if not k.startswith(TUNER_PREFIX)]
    return "\n".join(["## Hyperparameters", "", _table(("name", "value"), rows)])


def refit_epochs(refit: dict) -> str:
    """The epochs a refit trained (run.json's `refit`): the first phase's, then the fine-tune
    phase's if any."""
    first, tuned = refit.get("first_epochs"), refit.get("fine_tune_epochs")
    text = f"{first} epoch{'' if first == 1 else 's'}"
    return f"{text}, then {tuned} fine-tuning" if tuned else text


def _refit(info: dict) -> tuple[str, str] | None:
    """--refit's model: its test accuracy, in the best model's format, and how it was trained;
    None when the run has no refit."""
    refit = info.get("refit")
    if not isinstance(refit, dict):  # the --refit setting itself (True) until the refit ran
        return None
    test = _with_interval(refit.get("test_accuracy"), _split_size(info, "test"))
    trained = (
        f"trial {refit.get('trial_id')}'s configuration trained again with its seed on the "
        f"training and validation images together ({refit.get('train_images')} images) for "
        f"{refit_epochs(refit)}, the epochs that reached its kept weights, with no early "
        f"stopping"
    )
    return test, trained


def _gap_basis(best: pd.Series) -> str:
    if best.get("gap_basis") == "clean":
        return (
            "The verdict judges the clean gap: training accuracy in inference mode (no "
            "augmentation, no dropout) on a fixed, seeded sample of training images the size of "
            "the validation split, minus validation accuracy. The fit-time figures, Keras's "
            "running accuracy during the epoch, are shown for comparison: augmentation, dropout "
            "and weights that move through the epoch hold them down, so their gap is often "
            "negative."
        )
    return (
        "This trial has no clean figures (stored before they were measured, or run with "
        "`--clean-train-eval off`), so its verdict judges the fit-time gap: Keras's running "
        "training accuracy, with augmentation and dropout on, minus validation accuracy. A "
        "negative fit-time gap says that training was made harder, not that the model "
        "generalises better than it fits."
    )


def _verdict_text(best: pd.Series) -> str:
    if pd.isna(best.get("verdict")):
        return "n/a"
    basis = "clean" if best.get("gap_basis") == "clean" else "fit-time"
    return f"{best['verdict']} (judged on the {basis} gap; overfit above {OVERFIT_GAP:+.2f})"


def _results(best: pd.Series, info: dict, *, is_best: bool = True) -> str:
    test = _with_interval(best["test_accuracy"], _split_size(info, "test"))
    refit = _refit(info) if is_best else None  # the refit is of the best configuration
    rows = [
        (
            "validation accuracy",
            _with_interval(best["val_accuracy"], _split_size(info, "validation")),
        ),
        ("validation loss", _number(best["val_loss"])),
        *[
            (f"validation {name.removeprefix('val_')} (the objective)", _number(best[name]))
            for name in PREDICTION_SCORES
            if info.get("objective") == name
        ],
        ("training accuracy, clean", _number(best.get("train_accuracy_clean"))),
        ("training accuracy, fit-time", _number(best["train_accuracy_fit"])),
        ("gap, clean (training - validation accuracy)", _number(best["gap_clean"], signed=True)),
        ("gap, fit-time (training - validation accuracy)", _number(best["gap_fit"], signed=True)),
        ("verdict", _verdict_text(best)),
        ("test accuracy", test),
        *([("test accuracy, refit model", refit[0])] if refit else []),
    ]
    lines = ["## Results", ""]
    if test != "n/a":
        lines.append(f"Test accuracy: {test}.")
    elif is_best:
        lines.append("Test accuracy: not scored.")
    else:
        lines.append("Test accuracy: not scored (only the best trial's model is scored).")
    if refit:
        lines += ["", f"Refit model, `refit_model.keras`: test accuracy {refit[0]}; {refit[1]}."]
    return "\n".join(
        [
            *lines,
            "",
            "Read at the kept epoch (the lowest validation loss). " + _gap_basis(best) + " "
            "Intervals are Wilson 95% intervals for the split's n images.",
            "",
            _table(("measure", "value"), rows),
        ]
    )


def _confirmation(trials: pd.DataFrame, confirm: dict) -> str:
    """--confirm-top: the ranking followed each finalist's mean over its runs; which run of the
    winner was exported."""
    confirmed = trials.reindex(columns=["confirm_mean"])["confirm_mean"].notna()
    finalists = trials[confirmed].sort_values(
        ["confirm_mean", "confirm_val_loss", "trial_id"], ascending=[False, True, True]
    )
    rows = [
        (
            int(row["trial_id"]),
            _int(row.get("confirm_runs")),
            f"{_number(row['confirm_mean'])} \u00b1 {_number(row.get('confirm_sd'))}",
            _number(row["val_accuracy"]),
        )
        for row in finalists.to_dict("records")
    ]
    run = confirm.get("exported_run")
    exported = "the search's own run" if run == 0 else f"confirmation run {run}"
    lines = [
        "## Confirmation",
        "",
        f"The ranking followed the mean validation accuracy of each finalist's runs: the "
        f"{confirm.get('top')} best trials were each trained {confirm.get('seeds')} more times "
        f"with fresh seeds (`--confirm-top {confirm.get('top')} --confirm-seeds "
        f"{confirm.get('seeds')}`). Trial {confirm.get('winner')} won; the exported model is its "
        f"run {run} ({exported}, seed {confirm.get('exported_seed')}).",
    ]
    if run != 0:
        lines.append(
            "The validation and training figures under Results are the search's own run of "
            "the trial; the test accuracy is the exported model's."
        )
    header = ("trial", "runs", "val accuracy, mean \u00b1 sd", "val accuracy, search's run")
    return "\n".join([*lines, "", _table(header, rows)])


def _int(value) -> str:
    return "n/a" if value is None or pd.isna(value) else str(int(value))


def baseline_name(row: dict, space: str) -> str | None:
    """The preset a trial ran: named by the baselines space or by the run, or else found by
    its values (a preset enqueued into its own space)."""
    for column in BASELINE_COLUMNS:
        if not pd.isna(row.get(column)):
            return row[column]
    return preset_of(space, trial_hyperparameters(row))


def _baselines(trials: pd.DataFrame, best: pd.Series, space: str, *, is_best: bool) -> str:
    """The run's baseline trials against the exported trial (`best`, the best one unless
    `export --trial` chose another)."""
    subject = "best" if is_best else "exported"
    rows = [
        (
            f"`{name}`",
            int(row["trial_id"]),
            row["status"],
            _number(row["val_accuracy"]),
            _number(row["gap_clean"], signed=True),
            _number(row["gap_fit"], signed=True),
            _verdict(row, best, subject),
        )
        for row in trials.to_dict("records")
        if (name := baseline_name(row, space)) is not None
    ]
    if not rows:
        return "## Baselines\n\nThis run has no baseline trials (the documents' models)."
    beaten = sum(r[-1] == "beaten" for r in rows)
    return "\n".join(
        [
            "## Baselines",
            "",
            f"The {subject} trial beat {beaten} of the run's {len(rows)} baseline trials on "
            f"validation accuracy.",
            "",
            _table(
                (
                    "baseline",
                    "trial",
                    "status",
                    "val accuracy",
                    "gap clean",
                    "gap fit-time",
                    "vs best",
                ),
                rows,
            ),
        ]
    )


def _verdict(row: dict, best: pd.Series, subject: str) -> str:
    if int(row["trial_id"]) == int(best["trial_id"]):
        return f"is the {subject} trial"
    if row["status"] != TrialStatus.COMPLETE:
        return "not complete"
    if row["val_accuracy"] < best["val_accuracy"]:
        return "beaten"
    return "tied on val accuracy, ranked lower on val loss"


def _deployment(trial: pd.Series, quantized: dict | None) -> str | None:
    """What the model costs where it ships: the search's float32 figures (--measure-deploy)
    and a quantized export's, measured on the test split; None when there are neither."""
    lines = []
    if not pd.isna(trial.get("tflite_kb", float("nan"))):
        measured = DEPLOY_FORMATS.get(trial.get("deploy_format"), DEPLOY_FORMATS["tflite"])
        lines += [
            f"Measured in the search (`--measure-deploy`): float32 {measured} "
            f"{trial['tflite_kb']:,.1f} KB, median latency {_ms(trial.get('latency_ms'))} "
            f"(IQR {_ms(trial.get('latency_iqr_ms'))}).",
        ]
    if quantized:
        lines += [*([""] if lines else []), *_quantized(quantized)]
    return "\n".join(["## Deployment", "", *lines]) if lines else None


def _ms(value) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.3f} ms"


def _quantized(figures: dict) -> list[str]:
    """Float32 and quantized side by side, as search.quantize measured them."""
    mode, n, timing = figures["quantize"], figures["test_images"], figures["latency"]
    rows = [
        (
            f"{name} (exported)" if name == mode else name,
            f"{model['tflite_kb']:,.1f} KB",
            _with_interval(model["test_accuracy"], n),
            f"{_ms(model['latency_ms'])} (IQR {_ms(model['latency_iqr_ms'])})",
        )
        for name, model in figures["models"].items()
    ]
    calibrated = (
        f", calibrated on {figures['calibration_images']} training images drawn with seed "
        f"{figures['calibration_seed']}"
        if figures.get("calibration_images")
        else ""
    )
    return [
        f"The exported file is the `{mode}` quantization (`--quantize {mode}`{calibrated}), "
        f"input and output float32. Both TFLite models were run on the test split "
        f"({n} images) at {figures['image_size']} px:",
        "",
        _table(("TFLite model", "size", "test accuracy", "median latency"), rows),
        "",
        f"Latencies are this machine's {timing['machine']} CPU figures with the "
        f"{timing['interpreter']} interpreter: {timing['threads']} thread, batch "
        f"{timing['batch']}, the median of {timing['runs']} runs after {timing['warmup_runs']} "
        f"warm-up runs, with the interquartile range. On this CPU {mode} buys size, not "
        f"necessarily speed; these figures say nothing of another device's.",
    ]
