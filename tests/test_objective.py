"""--objective: each ranks a hand-made store in its direction; val_auc and val_f1 are measured
after every epoch from the validation predictions, and a run through the real command line
ranks, prunes and picks its model by them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import error_lines, run_cli
from sklearn.metrics import f1_score, roc_auc_score

from search.stats import predicted_classes, prediction_scores
from search.store import RunStore, rank_trials

# Four complete trials and a failed one; each objective puts a different trial first.
HAND_MADE = pd.DataFrame(
    {
        "trial_id": [0, 1, 2, 3, 4],
        "status": ["complete"] * 4 + ["failed"],
        "val_accuracy": [0.90, 0.85, 0.80, 0.90, 0.99],
        "val_loss": [0.30, 0.20, 0.40, 0.35, 0.01],
        "val_auc": [0.91, 0.93, 0.97, 0.92, 0.99],
        "val_f1": [0.80, 0.84, 0.79, 0.86, 0.99],
    }
)


@pytest.mark.parametrize(
    ("objective", "order"),
    [
        ("val_accuracy", [0, 3, 1, 2]),  # a tie on accuracy goes to the lower loss
        ("val_loss", [1, 0, 3, 2]),
        ("val_auc", [2, 1, 3, 0]),
        ("val_f1", [3, 1, 0, 2]),
    ],
)
def test_each_objective_ranks_in_its_direction(objective, order):
    assert list(rank_trials(HAND_MADE, objective)["trial_id"]) == order


def test_prediction_scores_are_scikit_learns():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    softmax = rng.dirichlet(np.ones(3), 60)
    scores = prediction_scores(labels, softmax)
    assert scores["val_f1"] == pytest.approx(f1_score(labels, softmax.argmax(1), average="macro"))
    assert scores["val_auc"] == pytest.approx(roc_auc_score(labels, softmax, multi_class="ovr"))
    sigmoid = rng.random(40)
    binary = rng.integers(0, 2, 40)
    assert prediction_scores(binary, sigmoid)["val_auc"] == pytest.approx(
        roc_auc_score(binary, sigmoid)
    )


@pytest.mark.parametrize(
    ("objective", "backend"),
    [
        ("val_f1", "optuna"),
        ("val_auc", "keras-tuner"),
        ("val_loss", "optuna"),
        ("val_accuracy", "keras-tuner"),
    ],
)
def test_a_run_ranks_and_picks_by_its_objective(objective, backend, tiny_folder, tmp_path):
    argv = ["--space", "scratch", "--data", str(tiny_folder), "--objective", objective]
    argv += ["--backend", backend, "--max-trials", "3", "--epochs", "2", "--image-size", "32"]
    result = run_cli(*argv, "--runs-dir", str(tmp_path), "--name", "objective")
    assert result.returncode == 0, error_lines(result)[-5:]
    store = RunStore(tmp_path / "objective")
    trials = store.trials()
    done = trials[trials["status"] == "complete"]
    assert len(done) >= 2
    best = rank_trials(trials, objective).iloc[0]
    assert store.read_best_hparams()["trial_id"] == best["trial_id"], "the model follows it"
    if objective == "val_loss":
        assert best["val_loss"] == done["val_loss"].min()
    if objective in ("val_loss", "val_accuracy"):
        assert best["val_accuracy"] >= 0 and done["val_f1"].isna().all(), "not measured"
        return
    epochs = store.epochs()
    assert epochs[objective].notna().all(), "measured after every epoch"
    _, labels = store.split_images("validation")
    for row in done.itertuples():
        kept = store.predictions(row.trial_id, "validation")  # the kept epoch's weights
        expected = (
            f1_score(labels, predicted_classes(kept), average="macro")
            if objective == "val_f1"
            else roc_auc_score(labels, kept)
        )
        assert getattr(row, objective) == pytest.approx(expected, abs=1e-4)
    assert best[objective] == done[objective].max()
    page = (store.run_dir / "report.html").read_text(encoding="utf-8")
    assert {"val_f1": "val macro F1", "val_auc": "val ROC AUC"}[objective] in page
