"""The clean generalisation gap: training accuracy and loss measured in inference mode on a fixed
sample of training images, and the verdicts, onset and ranking that judge them (issue 18).

Hand-made curves have known answers; the trials are real Keras training on 32 px photos.
"""

from __future__ import annotations

import keras
import keras_tuner as kt
import numpy as np
import pandas as pd
import pytest
from conftest import REPO
from test_features import NO_AUGMENTATION

from reports.analysis import (
    analyse_trials,
    overfitting_onset,
    penalised_score,
    rank,
    trial_measures,
)
from search.clean_eval import clean_sample
from search.cli import main
from search.features import FeatureCache
from search.steps import SearchConfig
from search.store import RunStore, rank_trials
from search.trial import TrainSettings, TrialRunner
from search.trial_edge import TrialRequest
from search.workers import worker_argv
from spaces import get_space
from spaces.context import DEFAULT_BACKBONE, SpaceContext

# The strongest augmentation the augment space offers, dropout before the classifier and batch
# normalisation: all three act differently in training and in inference.
STRONG_AUGMENTATION = {
    "batch_norm": True,
    "flip": "horizontal_and_vertical",
    "rotation": 0.25,
    "zoom": 0.5,
    "translation": 0.2,
    "contrast": 0.3,
    "dense_units": 64,
    "dense_dropout": 0.5,
}


def curve(val_loss, val_accuracy, clean_loss=None, clean_accuracy=None, phase="train", **fit):
    """One trial's epochs.csv rows, epochs numbered from 1; the fit-time `loss` and `accuracy`
    default to a steadily falling loss and a constant accuracy."""
    n = len(val_loss)
    rows = {
        "trial_id": 0,
        "epoch": range(1, n + 1),
        "loss": fit.get("loss", [1.0 - 0.1 * i for i in range(n)]),
        "accuracy": fit.get("accuracy", [0.7] * n),
        "val_loss": val_loss,
        "val_accuracy": val_accuracy,
        "seconds": 1.0,
        "phase": phase,
    }
    if clean_loss is not None:
        rows |= {"train_loss_clean": clean_loss, "train_accuracy_clean": clean_accuracy}
    return pd.DataFrame(rows)


# An augmented trial: the fit-time accuracy (0.70 at the best epoch, 2) trails validation (0.80)
# while the clean one leads it.
def augmented(clean_at_best: float) -> pd.DataFrame:
    return curve(
        val_loss=[0.6, 0.5, 0.55, 0.6],
        val_accuracy=[0.75, 0.8, 0.8, 0.8],
        clean_loss=[0.5, 0.2, 0.1, 0.05],
        clean_accuracy=[0.8, clean_at_best, 0.97, 0.99],
    )


@pytest.mark.parametrize(
    ("clean_at_best", "verdict"), [(0.95, "overfit"), (0.83, "fit"), (0.78, "underfit")]
)
def test_verdicts_judge_the_clean_gap(clean_at_best, verdict):
    m = trial_measures(augmented(clean_at_best))
    assert m["best_epoch"] == 2
    assert m["gap_clean"] == pytest.approx(clean_at_best - 0.8)
    assert m["gap_fit"] == pytest.approx(-0.1)
    assert (m["gap"], m["gap_basis"]) == (pytest.approx(clean_at_best - 0.8), "clean")
    assert m["loss_gap"] == pytest.approx(0.5 - 0.2)  # val_loss - clean training loss
    assert m["verdict"] == verdict


def test_a_run_without_clean_figures_is_judged_on_the_fit_time_gap_and_says_so():
    old = augmented(0.95).drop(columns=["train_loss_clean", "train_accuracy_clean"])
    m = trial_measures(old)
    assert (m["gap"], m["gap_basis"]) == (pytest.approx(-0.1), "fit")
    assert pd.isna(m["gap_clean"])
    assert m["verdict"] == "underfit"  # fit-time training accuracy 0.70 < 0.80


def test_clean_figures_only_trials_csv_has_are_judged():
    """--clean-train-eval best: epochs.csv has no clean figures, trials.csv has them."""
    epochs = augmented(0.95).assign(train_loss_clean=np.nan, train_accuracy_clean=np.nan)
    trials = pd.DataFrame(
        {
            "trial_id": pd.array([0], dtype="Int64"),
            "status": ["complete"],
            "best_epoch": pd.array([2], dtype="Int64"),
            "val_accuracy": [0.8],
            "val_loss": [0.5],
            "train_accuracy_clean": [0.95],
            "train_loss_clean": [0.2],
            "gap_clean": [0.15],
            "train_accuracy_fit": [0.7],
            "gap_fit": [-0.1],
        }
    )
    row = analyse_trials(trials, epochs).iloc[0]
    assert (row["gap"], row["gap_basis"], row["verdict"]) == (
        pytest.approx(0.15),
        "clean",
        "overfit",
    )


def test_onset_skips_the_warm_up():
    # val_loss rises at epochs 2 and 3 (warm-up), then is lowest at 5 and rises at 6 and 7.
    epochs = curve(
        val_loss=[1.0, 1.2, 1.4, 0.8, 0.7, 0.75, 0.8],
        val_accuracy=[0.5] * 7,
        clean_loss=[1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
        clean_accuracy=[0.5] * 7,
    )
    assert overfitting_onset(epochs, k=2) == 1
    assert overfitting_onset(epochs, k=2, warmup_epochs=3) == 5
    m = trial_measures(epochs, k=2, warmup_epochs=3)
    assert (m["best_epoch"], m["onset_epoch"], m["wasted_epochs"]) == (5, 5, 2)


def test_onset_starts_again_at_the_fine_tune_phase():
    # One rise at the end of the first phase (epoch 4) and one at the first fine-tune epoch
    # (5), then two in a row at epochs 7 and 8.
    epochs = curve(
        val_loss=[1.0, 0.8, 0.7, 0.75, 0.8, 0.6, 0.65, 0.7],
        val_accuracy=[0.5] * 8,
        clean_loss=[1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3],
        clean_accuracy=[0.5] * 8,
        phase=["train"] * 4 + ["fine_tune"] * 4,
    )
    assert overfitting_onset(epochs, k=2) == 6
    assert overfitting_onset(epochs.assign(phase="train"), k=2) == 3  # across the boundary


def test_onset_reads_the_clean_training_loss():
    # The fit-time loss rises (stronger augmentation would do it) while the clean loss falls.
    epochs = curve(
        val_loss=[0.6, 0.5, 0.55, 0.6],
        val_accuracy=[0.5] * 4,
        clean_loss=[0.5, 0.4, 0.3, 0.2],
        clean_accuracy=[0.5] * 4,
        loss=[0.9, 0.9, 0.95, 1.0],
    )
    assert overfitting_onset(epochs, k=2) == 2
    assert overfitting_onset(epochs.drop(columns=["train_loss_clean"]), k=2) is None


def test_ties_are_broken_by_val_loss_never_by_a_signed_gap():
    trials = pd.DataFrame(
        {
            "trial_id": [0, 1, 2],
            "status": ["complete"] * 3,
            "val_accuracy": [0.9, 0.9, 0.8],
            "val_loss": [0.4, 0.3, 0.2],
            "gap_clean": [-0.1, 0.05, None],  # trial 2 is from a run without clean figures
            "gap_fit": [0.2, -0.08, 0.3],
        }
    )
    assert list(rank_trials(trials)["trial_id"]) == [1, 0, 2]
    assert list(rank(trials, by="penalised", penalty=0.0)["trial_id"]) == [1, 0, 2]
    # The penalty charges max(gap_clean, 0), or max(gap_fit, 0) where gap_clean is missing.
    assert list(penalised_score(trials)) == pytest.approx([0.9, 0.85, 0.5])
    assert list(rank(trials, by="penalised")["trial_id"]) == [0, 1, 2]


def test_stores_written_before_the_rename_read_under_the_new_names(tmp_path):
    store = RunStore(tmp_path)
    old = "trial_id,status,best_epoch,val_accuracy,val_loss,train_accuracy,gap\n"
    store.trials_csv.write_text(old + "0,complete,2,0.8,0.5,0.7,-0.1\n", encoding="utf-8")
    row = store.trials().iloc[0]
    assert (row["train_accuracy_fit"], row["gap_fit"]) == (0.7, -0.1)
    assert pd.isna(row["gap_clean"]) and "gap" not in row and "train_accuracy" not in row
    for committed in (REPO / "bench" / "results").rglob("trials.csv"):
        trials = RunStore(committed.parent).trials()
        done = trials[trials["status"] == "complete"]
        assert done["gap_fit"].notna().all() and "gap" not in trials, committed


def hp_of(values: dict) -> kt.HyperParameters:
    hp = kt.HyperParameters()
    hp.values.update(values)
    return hp


def test_an_augmented_trial_measures_training_accuracy_without_augmentation(tiny_data, tmp_path):
    store = RunStore(tmp_path / "run")
    store.create()
    settings = TrainSettings(epochs=3, patience=3, batch_size=16)
    runner = TrialRunner(
        get_space("augment"), SpaceContext(32, 2), tiny_data, store=store, settings=settings
    )
    result, _ = runner.run(TrialRequest(0, hp_of(STRONG_AUGMENTATION)))
    assert result.status == "complete"
    epochs = store.epochs()
    assert epochs[["train_accuracy_clean", "train_loss_clean"]].notna().all().all()
    best = epochs[epochs["epoch"] == result.best_epoch].iloc[0]
    row = store.trials().iloc[0]
    assert row["train_accuracy_clean"] == best["train_accuracy_clean"]
    assert row["gap_clean"] == pytest.approx(row["train_accuracy_clean"] - row["val_accuracy"])
    assert row["gap_fit"] == pytest.approx(best["accuracy"] - best["val_accuracy"])
    # The stored best model, in inference mode, on the same sample of training images.
    sample = clean_sample(len(tiny_data.train), len(tiny_data.validation), settings.seed)
    assert len(sample) == len(tiny_data.validation) < len(tiny_data.train)
    model = keras.saving.load_model(store.best_model_path, safe_mode=True)
    x, y = tiny_data.train.x[sample], tiny_data.train.y[sample]
    loss, accuracy = model.evaluate(x, y, verbose=0)
    assert accuracy == pytest.approx(row["train_accuracy_clean"], abs=1e-6)
    assert loss == pytest.approx(row["train_loss_clean"], rel=1e-5)
    # Keras's running figure, with augmentation and dropout on, is another number.
    assert abs(best["loss"] - row["train_loss_clean"]) > 1e-2
    # The kept model's validation predictions are stored, one per image.
    stored = store.predictions(0, "validation")
    assert stored.dtype == np.float32 and stored.shape == (len(tiny_data.validation),)
    predicted = model.predict(tiny_data.validation.x, verbose=0)[:, 0]
    np.testing.assert_allclose(stored, predicted, atol=1e-6)


def test_a_frozen_feature_trial_measures_it_on_its_cached_features(
    tiny_data, tmp_path, weights_file
):
    store = RunStore(tmp_path / "run")
    store.create()
    ctx = SpaceContext(32, 2, DEFAULT_BACKBONE.with_weights(str(weights_file)))
    settings = TrainSettings(epochs=2, patience=2, batch_size=16)
    cache = FeatureCache(tiny_data, tmp_path / "cache")
    runner = TrialRunner(
        get_space("transfer"), ctx, tiny_data, store=store, settings=settings, features=cache
    )
    result, model = runner.run(TrialRequest(0, hp_of(NO_AUGMENTATION | {"dropout": 0.5})))
    assert (result.status, result.features) == ("complete", "computed")
    assert store.epochs()["train_accuracy_clean"].notna().all()
    # The head on the sample's features measures what the full model does on its images.
    sample = clean_sample(len(tiny_data.train), len(tiny_data.validation), settings.seed)
    loss, accuracy = model.evaluate(tiny_data.train.x[sample], tiny_data.train.y[sample], verbose=0)
    assert accuracy == pytest.approx(result.train_accuracy_clean, abs=1e-6)
    assert loss == pytest.approx(result.train_loss_clean, rel=1e-4)
    assert store.predictions(0, "validation").shape == (len(tiny_data.validation),)


def test_clean_train_eval_every_best_and_off_through_a_run(tiny_folder, tmp_path, capsys):
    for mode in ("every", "best", "off"):
        argv = ["--space", "scratch", "--data", str(tiny_folder), "--image-size", "32"]
        argv += ["--max-trials", "1", "--epochs", "2", "--batch-size", "16"]
        argv += ["--runs-dir", str(tmp_path), "--name", mode, "--clean-train-eval", mode]
        assert main(argv) == 0
        store = RunStore(tmp_path / mode)
        assert store.read_run_info()["clean_train_eval"] == mode
        epochs, row = store.epochs(), store.trials().iloc[0]
        per_epoch = epochs[["train_accuracy_clean", "train_loss_clean"]]
        at_best = row[["train_accuracy_clean", "train_loss_clean", "gap_clean"]]
        assert per_epoch.notna().all().all() if mode == "every" else per_epoch.isna().all().all()
        assert at_best.isna().all() if mode == "off" else at_best.notna().all()
        assert pd.notna(row["gap_fit"])
        shown = "gap_fit=" if mode == "off" else "gap_clean="
        assert shown in capsys.readouterr().out
        # --workers processes are started with the same setting.
        argv = worker_argv(SearchConfig(clean_train_eval=mode), 0)
        assert argv[argv.index("--clean-train-eval") + 1] == mode
