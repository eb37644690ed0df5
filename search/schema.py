"""The run store's schema: trial statuses, the columns of trials.csv and epochs.csv, and the
prefixes of hyperparameter names. Everything that reads or writes a run spells them from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class TrialStatus(StrEnum):
    """A trial's status in trials.csv (like Keras Tuner's `TrialStatus` and Optuna's
    `TrialState`); a `str`, so it compares equal to the text stored in the CSV."""

    COMPLETE = "complete"
    FAILED = "failed"
    PRUNED = "pruned"
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    INFEASIBLE = "infeasible"  # trained, but over a --max-latency-ms/--max-size-kb/--max-params


FINISHED_STATUSES = (  # judged
    TrialStatus.COMPLETE,
    TrialStatus.FAILED,
    TrialStatus.PRUNED,
    TrialStatus.INFEASIBLE,
)
STATUSES = tuple(TrialStatus)
# The error of a trial whose worker died: Optuna fails it and retries it, and, like an
# interrupted trial, it does not count toward --max-trials.
LOST_WORKER = "worker stopped (no heartbeat)"

HP_PREFIX = "hp_"  # trials.csv: one hp_<name> column per hyperparameter
# Keras Tuner's Hyperband bookkeeping values (tuner/epochs, tuner/trial_id, ...): not part of a
# model's configuration.
TUNER_PREFIX = "tuner/"
# Where a trial names the documents' model it reproduces: the baselines space's hyperparameter,
# or the column --with-baselines adds.
BASELINE_COLUMNS = (f"{HP_PREFIX}baseline", "baseline")

# --objective: what ranks trials, prunes them and picks the exported model, with its direction.
# The best epoch of a trial stays its lowest validation loss (the weights it keeps);
# val_auc (one-vs-rest, macro over classes) and val_f1 (macro) are measured from the
# validation predictions after each epoch when one of them is the objective.
OBJECTIVES = {"val_accuracy": "max", "val_loss": "min", "val_auc": "max", "val_f1": "max"}
PREDICTION_SCORES = ("val_auc", "val_f1")
# --objectives may also name what the model costs where it ships (search/deploy.py; n_params
# is counted for every trial): all lower-is-better.
DEPLOY_OBJECTIVES = {"latency_ms": "min", "tflite_kb": "min", "n_params": "min"}
ALL_OBJECTIVES = OBJECTIVES | DEPLOY_OBJECTIVES


def maximised(objective: str) -> bool:
    return ALL_OBJECTIVES[objective] == "max"


# A trial's figures at its best epoch (the kept weights): "_clean" ones in inference mode on a
# fixed training sample, "_fit" ones Keras's running figures during fit (search/trial.py).
AT_BEST_COLUMNS = [
    "best_epoch",
    "val_accuracy",
    "val_loss",
    "val_auc",
    "val_f1",
    "train_accuracy_clean",
    "train_loss_clean",
    "gap_clean",
    "train_accuracy_fit",
    "gap_fit",
]
TRIAL_COLUMNS = [
    "trial_id",
    "status",
    *AT_BEST_COLUMNS,
    "test_accuracy",
    "duration_s",
    "n_params",
    "error",
]
EPOCH_COLUMNS = [
    "trial_id",
    "epoch",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "val_auc",
    "val_f1",
    "train_loss_clean",
    "train_accuracy_clean",
    "seconds",
    "phase",
]
# trials.csv columns renamed since runs were first stored: older runs read under the new names.
RENAMED_COLUMNS = {"train_accuracy": "train_accuracy_fit", "gap": "gap_fit"}
# --measure-deploy (search/deploy.py): the float32 TFLite file's size, its median latency and
# interquartile range on this CPU (one thread, batch 1), and the seconds the measuring took; the
# ONNX file's in onnxruntime where TensorFlow is not installed (the deploy_format column).
DEPLOY_COLUMNS = ("tflite_kb", "latency_ms", "latency_iqr_ms", "deploy_s")
# The deployment limits (--max-latency-ms, --max-size-kb, --max-params), by the column each bounds.
LIMITS = {"max_latency_ms": "latency_ms", "max_size_kb": "tflite_kb", "max_params": "n_params"}
# --objectives: whether a trial is on the Pareto front of the complete (feasible) trials.
PARETO_COLUMN = "pareto"
INTEGER_COLUMNS = ("trial_id", "best_epoch", "n_params")
# Accuracies that get Wilson 95% interval columns (<name>_low, <name>_high), by the split whose
# image count (run.json's counts) they were measured on.
INTERVAL_SPLITS = {"val_accuracy": "validation", "test_accuracy": "test"}
# A finalist's figures over its --confirm-top runs (search/confirm.py).
CONFIRM_COLUMNS = ("confirm_mean", "confirm_sd", "confirm_val_loss", "confirm_runs")


def trial_hyperparameters(row: Mapping[str, object]) -> dict:
    """A trials.csv row's active hyperparameters, by name (hp_ columns with a value; Keras
    Tuner's tuner/... bookkeeping left out)."""
    import pandas as pd

    return {
        name.removeprefix(HP_PREFIX): value
        for name, value in row.items()
        if name.startswith(HP_PREFIX)
        and not name.startswith(f"{HP_PREFIX}{TUNER_PREFIX}")
        and not pd.isna(value)
    }
