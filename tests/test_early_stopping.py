"""Early stopping with a warm-up (--warmup-epochs): the first epochs are neither judged nor kept."""

from __future__ import annotations

import json

import keras
import keras_tuner as kt
import optuna
import pytest
from conftest import error_lines, link_images, run_cli

from search.backends import optuna as backend
from search.data import load_image_data
from search.judge import best_row
from search.store import RunStore
from search.trial import TrainSettings, TrialRunner
from search.trial_edge import TrialRequest
from spaces import Space
from spaces.context import SpaceContext


def prior_only_space() -> Space:
    """A model that sees no pixels (they are scaled to 0) and learns the training classes' prior
    through its bias alone. Training is mostly cats and validation mostly dogs, so every epoch
    predicts "cat" more confidently and the validation loss rises from the first epoch on."""

    def build(hp, ctx):
        inputs = keras.Input(ctx.input_shape)
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(0.0)(inputs))
        model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
        model.compile(keras.optimizers.Adam(0.05), "binary_crossentropy", metrics=["accuracy"])
        return model

    return Space(name="prior_only", build=build)


@pytest.fixture(scope="module")
def opposite_folder(tmp_path_factory):
    """Training mostly cats, validation mostly dogs."""
    folder = tmp_path_factory.mktemp("opposite")
    link_images(folder, {"train": 20, "validation": 5}, ("cats",))
    link_images(folder, {"train": 4, "validation": 15}, ("dogs",))
    return folder


@pytest.fixture(scope="module")
def opposite_priors(opposite_folder):
    return load_image_data(opposite_folder, 32)


def train_one(data, run_dir, warmup_epochs: int):
    store = RunStore(run_dir)
    store.create()
    settings = TrainSettings(epochs=5, patience=1, batch_size=8, warmup_epochs=warmup_epochs)
    runner = TrialRunner(
        prior_only_space(), SpaceContext(32, 2), data, store=store, settings=settings
    )
    result, model = runner.run(TrialRequest(0, kt.HyperParameters()))
    return result, model, store.epochs()


def test_without_warmup_the_first_epoch_is_kept_and_training_stops_at_once(
    opposite_priors, tmp_path
):
    result, _, epochs = train_one(opposite_priors, tmp_path / "run", warmup_epochs=0)
    assert result.status == "complete"
    assert list(epochs["epoch"]) == [1, 2]
    assert result.best_epoch == 1


def test_warmup_epochs_are_neither_judged_nor_kept(opposite_priors, tmp_path):
    result, model, epochs = train_one(opposite_priors, tmp_path / "run", warmup_epochs=2)
    # Epochs 1 and 2 are warm-up; epoch 3 is the first judged, epoch 4 is worse: patience 1 stops.
    assert list(epochs["epoch"]) == [1, 2, 3, 4]
    assert result.best_epoch == 3
    kept = epochs.set_index("epoch").loc[3]
    assert result.val_loss == pytest.approx(kept["val_loss"])
    # The model holds epoch 3's weights, restored by EarlyStopping, not the last epoch's.
    val = opposite_priors.validation
    loss, _ = model.evaluate(val.x, val.y, verbose=0)
    assert loss == pytest.approx(kept["val_loss"], rel=1e-4)


def test_best_row_skips_the_warmup_and_keeps_the_last_epoch_when_all_are_warmup():
    rows = [{"epoch": e, "val_loss": loss} for e, loss in [(1, 0.5), (2, 0.9), (3, 0.7), (4, 0.8)]]
    assert best_row(rows)["epoch"] == 1
    assert best_row(rows, warmup_epochs=1)["epoch"] == 3
    assert best_row(rows, warmup_epochs=4)["epoch"] == 4


@pytest.mark.parametrize("name", ["median", "hyperband", "successive-halving"])
def test_pruners_judge_no_step_of_the_warmup(name, tmp_path):
    """Optuna steps are 0-based epochs: with 3 warm-up epochs, steps 0-2 are never pruned even
    when a trial is far behind the others, and step 3, the first judged, prunes it."""
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        study_name="warmup",  # Hyperband assigns brackets from the study's name: keep it fixed
        direction="maximize",
        pruner=backend.make_pruner(name, epochs=9, warmup_epochs=3),
        sampler=optuna.samplers.RandomSampler(seed=0),
    )

    def pruned_steps(value: float) -> list[bool]:
        trial, judged = study.ask(), []
        for step in range(9):
            trial.report(value, step)
            judged.append(trial.should_prune())
        study.tell(trial, value)
        return judged

    for _ in range(8):
        pruned_steps(0.9)
    # Hyperband splits trials among brackets, and only the first bracket judges step 3.
    laggards = [pruned_steps(0.1) for _ in range(4)]
    assert all(judged[:3] == [False, False, False] for judged in laggards)
    assert any(judged[3] for judged in laggards)


def test_a_warmup_as_long_as_the_training_is_refused_in_one_line(tiny_folder, tmp_path):
    result = run_cli(
        *("--space", "scratch", "--data", str(tiny_folder), "--image-size", "32"),
        *("--epochs", "3", "--warmup-epochs", "3", "--runs-dir", str(tmp_path)),
    )
    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1
    assert "--warmup-epochs 3 leaves no epoch of --epochs 3 to judge" in lines[0]
    assert not any(tmp_path.iterdir()), "nothing was created"


def test_a_search_with_a_warmup_keeps_a_judged_epoch_and_shows_the_setting(
    opposite_folder, tmp_path
):
    """End to end through the CLI: patience 0 stops at the first epoch that is no better, so
    only the warm-up lets this run reach epoch 3, the first judged, and keep it."""
    result = run_cli(
        *("--space", "scratch", "--data", str(opposite_folder), "--image-size", "32"),
        *("--epochs", "3", "--warmup-epochs", "2", "--patience", "0", "--batch-size", "8"),
        *("--max-trials", "1", "--name", "warm", "--runs-dir", str(tmp_path)),
    )
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "warm"
    store = RunStore(run_dir)
    assert list(store.epochs()["epoch"]) == [1, 2, 3]
    assert list(store.trials()["best_epoch"]) == [3]
    assert json.loads((run_dir / "run.json").read_text())["warmup_epochs"] == 2
    report = (run_dir / "report.html").read_text(encoding="utf-8")
    assert '<th class="text">warmup_epochs</th><td class="text">2</td>' in report
