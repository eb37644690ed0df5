"""Keras Tuner searches write a complete, honest store, resume without loss, record failures."""

from __future__ import annotations

import json
import re

import keras
import keras_tuner as kt
import numpy as np
import pandas as pd
import pytest
from conftest import KERAS_HOME, error_lines, run_cli

from search.errors import UsageError
from search.schema import EPOCH_COLUMNS, TRIAL_COLUMNS
from search.steps import SearchConfig, run_search
from search.store import RunStore
from search.trial import TrainSettings, TrialRunner
from search.trial_edge import TrialRequest
from spaces import get_space
from spaces.context import DEFAULT_BACKBONE, SpaceContext


def test_transfer_search_on_the_default_data_from_the_cli(tmp_path, weights_file):
    """The issue's "done" command, at 32 px: default data through the Keras cache, offline."""
    result = run_cli(
        "--space",
        "transfer",
        "--max-trials",
        "3",
        "--epochs",
        "2",
        "--image-size",
        "32",
        "--weights",
        str(weights_file),
        "--runs-dir",
        str(tmp_path),
        "--name",
        "done",
    )
    assert result.returncode == 0, error_lines(result)
    lines = re.findall(
        r"^trial (\d) \((\d)/3\) complete val_acc=(0\.\d{3}) gap_clean=[+-]\d\.\d{3} "
        r"best=0\.\d{3} \(\d+\.\ds\)$",
        result.stdout,
        flags=re.M,
    )
    assert [(trial, count) for trial, count, _ in lines] == [("0", "1"), ("1", "2"), ("2", "3")]
    store = RunStore(tmp_path / "done")
    trials = store.trials().set_index("trial_id")
    assert list(trials["status"]) == ["complete"] * 3
    # The result line names the best trial by the number its progress line used.
    best_id, best_acc = re.search(
        r"^best trial (\d): val_acc=(0\.\d{4}) ", result.stdout, re.M
    ).groups()
    assert best_acc == f"{trials['val_accuracy'].max():.4f}"
    assert f"{trials.loc[int(best_id), 'val_accuracy']:.4f}" == best_acc
    shown = {trial: acc for trial, _, acc in lines}
    assert shown[best_id] == f"{trials.loc[int(best_id), 'val_accuracy']:.3f}"
    info = store.read_run_info()
    assert info["data"].startswith(str(KERAS_HOME))
    assert info["counts"]["train"] == {"cats": 1000, "dogs": 1000}
    assert info["counts"]["validation"] == {"cats": 400, "dogs": 400}
    assert info["counts"]["test"] == {"cats": 100, "dogs": 100}
    assert info["alpha"] == 1.0 and info["status"] == "finished"
    model = keras.saving.load_model(store.best_model_path)
    assert model.get_layer("backbone") is not None
    assert (tmp_path / "done" / "report.html").exists()


def test_two_trial_search_writes_a_complete_store(tiny_run, tiny_data):
    _, store = tiny_run
    trials, epochs = store.trials(), store.epochs()
    assert list(trials.columns[:2]) == ["trial_id", "status"]
    assert set(TRIAL_COLUMNS) <= set(trials.columns)
    assert {"hp_conv_blocks", "hp_learning_rate", "hp_kernel_size"} <= set(trials.columns)
    assert list(epochs.columns) == EPOCH_COLUMNS
    assert list(trials["status"]) == ["complete", "complete"]
    for trial in trials.itertuples():
        history = epochs[epochs["trial_id"] == trial.trial_id]
        assert list(history["epoch"]) == list(range(1, len(history) + 1))
        best = history.loc[history["val_loss"].idxmin()]
        assert trial.best_epoch == best["epoch"]
        assert trial.val_accuracy == pytest.approx(best["val_accuracy"])
        assert trial.gap_fit == pytest.approx(best["accuracy"] - best["val_accuracy"])
        assert trial.gap_clean == pytest.approx(best["train_accuracy_clean"] - trial.val_accuracy)
        assert trial.n_params > 0 and trial.duration_s > 0
    info = store.read_run_info()
    assert info["space"] == "scratch" and info["class_names"] == ["cats", "dogs"]
    assert info["versions"]["keras-tuner"] == "1.4.8"
    for name in (
        "run.json",
        "trials.csv",
        "epochs.csv",
        "best_model.keras",
        "best_hparams.json",
        "report.html",
        "leaderboard.csv",
    ):
        assert (store.run_dir / name).exists(), name


def test_best_model_is_the_best_trial_at_its_best_epoch(tiny_run, tiny_data):
    """The saved model reproduces the stored validation accuracy and the test score."""
    _, store = tiny_run
    best = store.best_trial()
    assert store.read_best_hparams()["trial_id"] == best["trial_id"]
    model = keras.saving.load_model(store.best_model_path)
    _, val_accuracy = model.evaluate(tiny_data.validation.x, tiny_data.validation.y, verbose=0)
    assert val_accuracy == pytest.approx(best["val_accuracy"], abs=1e-6)
    _, test_accuracy = model.evaluate(tiny_data.test.x, tiny_data.test.y, verbose=0)
    assert best["test_accuracy"] == pytest.approx(test_accuracy, abs=1e-6)
    others = store.trials().query("trial_id != @best.trial_id")
    assert others["test_accuracy"].isna().all(), "the test split scores the best trial only"
    reloaded = keras.saving.load_model(store.best_model_path)
    np.testing.assert_allclose(
        model.predict(tiny_data.test.x, verbose=0),
        reloaded.predict(tiny_data.test.x, verbose=0),
        rtol=1e-6,
    )


@pytest.mark.failure
def test_rerunning_a_run_resumes_it(tiny_folder, tmp_path):
    config = SearchConfig(
        space="scratch",
        data=str(tiny_folder),
        max_trials=1,
        epochs=1,
        image_size=32,
        batch_size=16,
        name="resumed",
        runs_dir=str(tmp_path),
    )
    first = run_search(config).trials()
    store = run_search(SearchConfig(**{**config.__dict__, "max_trials": 2, "resume": True}))
    trials = store.trials()
    assert list(trials["trial_id"]) == [0, 1]
    # Only the best has a test score (and its interval).
    kept = [c for c in first.columns if not c.startswith("test_accuracy")]
    pd.testing.assert_frame_equal(trials.iloc[:1][kept], first[kept], check_dtype=False)
    assert trials["test_accuracy"].notna().sum() == 1
    assert len(store.epochs().query("trial_id == 0")) == 1
    with pytest.raises(UsageError, match="space: stored 'scratch', asked 'augment'"):
        run_search(SearchConfig(**{**config.__dict__, "space": "augment"}))
    # A run started by a version without --fix resumes (and is stored with it), unless a value
    # is pinned now.
    info = store.read_run_info()
    del info["fix"]
    store.write_run_info(info)
    resumed = SearchConfig(**{**config.__dict__, "max_trials": 2, "resume": True})
    assert len(run_search(resumed).trials()) == 2
    # The same folder by another path (a checkout moved, a link) is the same run's data.
    alias = tmp_path / "alias"
    alias.symlink_to(tiny_folder)
    assert len(run_search(SearchConfig(**{**resumed.__dict__, "data": str(alias)})).trials()) == 2
    with pytest.raises(UsageError, match=r"fix: stored \[\], asked \['dense_units=0'\]"):
        run_search(SearchConfig(**{**resumed.__dict__, "fix": ("dense_units=0",)}))


def test_resume_takes_the_stored_settings_from_the_cli(tiny_run):
    """`--resume --name X` needs no other option: the stored ones are used."""
    config, store = tiny_run
    result = run_cli("--resume", "--name", "tiny", "--runs-dir", config.runs_dir)
    assert result.returncode == 0, error_lines(result)
    assert not re.search(r"^trial ", result.stdout, flags=re.M)
    assert len(RunStore(store.run_dir).trials()) == 2, "a finished run runs no more trials"


def runner_for(space: str, ctx: SpaceContext, data, tmp_path) -> TrialRunner:
    store = RunStore(tmp_path / "run")
    store.create()
    return TrialRunner(
        get_space(space), ctx, data, store=store, settings=TrainSettings(epochs=2, batch_size=16)
    )


@pytest.mark.failure
def test_diverging_trial_fails_with_nan_loss(tiny_data, tmp_path):
    runner = runner_for("scratch", SpaceContext(32, 2), tiny_data, tmp_path)
    hp = kt.HyperParameters()
    hp.Fixed("learning_rate", 1e30)
    result, model = runner.run(TrialRequest(0, hp))
    assert (result.status, result.error, model) == ("failed", "nan_loss", None)
    row = runner.store.trials().iloc[0]
    assert row["status"] == "failed" and row["error"] == "nan_loss"


@pytest.mark.failure
def test_trial_that_raises_is_recorded_and_the_search_goes_on(tiny_data, tmp_path):
    bad = SpaceContext(32, 2, DEFAULT_BACKBONE.with_weights(str(tmp_path / "missing.weights.h5")))
    runner = runner_for("transfer", bad, tiny_data, tmp_path)
    result, _ = runner.run(TrialRequest(0, kt.HyperParameters()))
    assert result.status == "failed" and result.error
    assert "\n" not in result.error
    good = runner_for("scratch", SpaceContext(32, 2), tiny_data, tmp_path / "next")
    assert good.run(TrialRequest(1, kt.HyperParameters()))[0].status == "complete"


def test_fine_tune_trial_records_both_phases(tiny_data, tmp_path, weights_file):
    ctx = SpaceContext(32, 2, DEFAULT_BACKBONE.with_weights(str(weights_file)))
    runner = runner_for("transfer", ctx, tiny_data, tmp_path)
    hp = kt.HyperParameters()
    hp.Fixed("mode", "fine_tune")
    result, _ = runner.run(TrialRequest(0, hp))
    assert result.status == "complete"
    epochs = runner.store.epochs()
    phases = list(epochs["phase"])
    assert "fine_tune" in phases and phases[0] == "train"
    assert list(epochs["epoch"]) == list(range(1, len(epochs) + 1))
    assert (
        json.loads(runner.store.best_hparams_path.read_text())["hyperparameters"]["mode"]
        == "fine_tune"
    )


@pytest.mark.failure
def test_search_stops_after_consecutive_failures_and_names_the_error(tiny_data, tmp_path):
    from search.backends import keras_tuner as backend
    from search.errors import SearchStopped

    bad = SpaceContext(32, 2, DEFAULT_BACKBONE.with_weights(str(tmp_path / "missing.weights.h5")))
    runner = runner_for("scratch", SpaceContext(32, 2), tiny_data, tmp_path)
    runner.ctx = bad
    runner.space = get_space("transfer")
    with pytest.raises(SearchStopped, match="stopped after 2 failed trials in a row") as stop:
        backend.run_tuner(
            runner, algorithm="random", max_trials=5, seed=1, max_consecutive_failures=2
        )
    assert "missing.weights.h5" in str(stop.value) and "\n" not in str(stop.value)
    trials = runner.store.trials()
    assert list(trials["status"]) == ["failed", "failed"]


def test_tensorboard_logs_carry_hparams(tiny_folder, tmp_path):
    import tensorflow as tf

    config = SearchConfig(
        space="scratch",
        data=str(tiny_folder),
        max_trials=1,
        epochs=1,
        image_size=32,
        name="tb",
        runs_dir=str(tmp_path),
        tensorboard=True,
    )
    store = run_search(config)
    events = list((store.run_dir / "tb" / "trial_0").rglob("events.out.tfevents.*"))
    plugins = {
        value.metadata.plugin_data.plugin_name
        for path in events
        for event in tf.compat.v1.train.summary_iterator(str(path))
        for value in event.summary.value
    }
    assert "hparams" in plugins
    assert (store.run_dir / "tb" / "trial_0" / "validation").is_dir()


def test_with_baselines_runs_the_spaces_presets_first_under_keras_tuner(tiny_folder, tmp_path):
    from spaces.baselines import for_space, preset_of

    presets = for_space("scratch")
    config = SearchConfig(
        space="scratch",
        data=str(tiny_folder),
        max_trials=len(presets) + 1,
        epochs=1,
        image_size=32,
        batch_size=16,
        name="kt-baselines",
        runs_dir=str(tmp_path),
        with_baselines=True,
    )
    trials = run_search(config).trials()
    hp_columns = [c for c in trials.columns if c.startswith("hp_")]
    names = [
        preset_of("scratch", {c[3:]: v for c, v in row.items() if pd.notna(v)})
        for _, row in trials[hp_columns].iterrows()
    ]
    assert names[: len(presets)] == [preset_of("scratch", p) for p in presets]
    assert None not in names[: len(presets)]
    assert names[-1] is None, "after the presets, the oracle proposes its own points"
