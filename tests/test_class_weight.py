"""--class-weight balanced on an imbalanced folder of real photos: a model that can only learn
the class prior (it sees no pixels) predicts the majority class without it and sits at 50/50
with it, so the weights reach the loss; and the option runs end to end through the CLI."""

from __future__ import annotations

import keras_tuner as kt
import numpy as np
import pytest
from conftest import error_lines, link_images, run_cli
from test_early_stopping import prior_only_space

from search.data import load_image_data
from search.fitting import class_weights
from search.store import RunStore
from search.trial import TrainSettings, TrialRunner
from search.trial_edge import TrialRequest
from spaces.context import SpaceContext


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory):
    folder = link_images(tmp_path_factory.mktemp("imb"), {"train": 8, "validation": 6}, ("cats",))
    return link_images(folder, {"train": 24, "validation": 6}, ("dogs",))


def test_balanced_weights_are_sklearns():
    weights = class_weights(np.array([0] * 8 + [1] * 24), "balanced")
    assert weights == pytest.approx({0: 2.0, 1: 32 / 48})
    assert class_weights(np.array([0, 1, 1]), "none") is None


@pytest.mark.parametrize(("mode", "mean"), [("none", 0.75), ("balanced", 0.5)])
def test_the_weights_reach_the_loss(mode, mean, imbalanced, tmp_path):
    data = load_image_data(imbalanced, 32)
    store = RunStore(tmp_path / "run")
    store.create()
    # Only the last epoch is judged and kept: validation is balanced, so any earlier epoch
    # nearer 50/50 would have the lower validation loss.
    settings = TrainSettings(
        epochs=40, patience=40, warmup_epochs=39, batch_size=32, class_weight=mode
    )
    runner = TrialRunner(
        prior_only_space(), SpaceContext(32, 2), data, store=store, settings=settings
    )
    result, _ = runner.run(TrialRequest(0, kt.HyperParameters()))
    assert result.status == "complete", result.error
    predicted = store.predictions(0, "validation")
    assert predicted.mean() == pytest.approx(mean, abs=0.05)


def test_class_weight_runs_from_the_command_line(imbalanced, tmp_path):
    for mode in ("none", "balanced"):
        result = run_cli(
            *("--space", "scratch", "--data", str(imbalanced), "--class-weight", mode),
            *("--image-size", "32", "--max-trials", "1", "--epochs", "1"),
            *("--runs-dir", str(tmp_path), "--name", mode),
        )
        assert result.returncode == 0, error_lines(result)[-5:]
        store = RunStore(tmp_path / mode)
        assert store.read_run_info()["class_weight"] == mode
        assert list(store.trials()["status"]) == ["complete"]
