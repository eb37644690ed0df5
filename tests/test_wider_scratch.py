"""The from-scratch spaces' hyperparameters beyond the documents (issue 22): residual blocks,
wider filters, AdamW, a cosine learning-rate decay and label smoothing, each defaulting to the
documents' choice, trained for real on photos and on scikit-learn's digits."""

from __future__ import annotations

import keras
import keras_tuner as kt
import numpy as np
import pytest
from conftest import error_lines, run_cli

from search.store import RunStore
from spaces import get_space
from spaces.context import SpaceContext

WIDER = {
    "residual": True,
    "optimizer": "adamw",
    "weight_decay": 1e-3,
    "lr_schedule": "cosine",
    "label_smoothing": 0.1,
    "conv_blocks": 2,
    "filters_2": 256,
}


def built(values: dict, ctx: SpaceContext, space: str = "scratch") -> keras.Model:
    hp = kt.HyperParameters()
    for name, value in values.items():
        hp.Fixed(name, value)
    return get_space(space).build(hp, ctx)


def test_the_defaults_are_still_the_documents_training():
    hp = kt.HyperParameters()
    model = get_space("scratch").build(hp, SpaceContext(64, 2, train_steps=100))
    assert type(model.optimizer) is keras.optimizers.Adam
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)
    assert model.loss.get_config()["label_smoothing"] == 0.0
    assert not any(isinstance(layer, keras.layers.Add) for layer in model.layers)
    assert hp.values["residual"] is False and hp.values["optimizer"] == "adam"
    assert hp.values["lr_schedule"] == "constant"


@pytest.mark.parametrize("space", ["scratch", "augment", "preprocess"])
def test_each_wider_choice_reaches_the_model(space):
    ctx = SpaceContext(32, 2, train_steps=120)
    model = built(WIDER, ctx, space)
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    assert [a.name for a in adds] == ["residual_1", "residual_2"]
    assert model.get_layer("conv_2b").filters == 256
    assert type(model.optimizer) is keras.optimizers.AdamW
    assert model.optimizer.weight_decay == pytest.approx(1e-3)
    schedule = model.optimizer.learning_rate
    assert isinstance(model.optimizer._learning_rate, keras.optimizers.schedules.CosineDecay)
    assert model.optimizer._learning_rate.decay_steps == 120
    assert float(schedule) == pytest.approx(1e-3)
    assert model.loss.get_config()["label_smoothing"] == pytest.approx(0.1)


def test_a_residual_block_with_valid_padding_crops_its_shortcut():
    """A "valid" first convolution shrinks the block by 2 pixels: the input added back is
    centre-cropped to match, so residual blocks combine with every padding the space offers."""
    model = built({"residual": True, "padding": "valid", "conv_blocks": 3}, SpaceContext(32, 2))
    assert model.get_layer("crop_1").output.shape[1:3] == (30, 30)
    assert (
        model.get_layer("residual_3").output.shape[1:3]
        == model.get_layer("conv_3b").output.shape[1:3]
    )


def test_the_widest_first_block_is_no_larger_than_before():
    """The first block stays at 128 filters at most: before any pooling a wider one would make
    a flattened 160 px model's dense layer grow past what the space allowed before."""
    declared = kt.HyperParameters()
    get_space("scratch").build(declared, SpaceContext(32, 2))
    maxima = {hp.name: hp.max_value for hp in declared.space if hp.name.startswith("filters_")}
    assert maxima == {"filters_1": 128, "filters_2": 256, "filters_3": 256, "filters_4": 256}


def test_a_cli_run_trains_the_wider_choices(tiny_folder, tmp_path):
    """Every wider choice at once, through the command line: the cosine decay spans the run's
    epochs x steps, and the trial trains and is scored."""
    argv = ["--space", "augment", "--data", str(tiny_folder), "--max-trials", "1"]
    argv += ["--epochs", "2", "--image-size", "32", "--runs-dir", str(tmp_path), "--name", "w"]
    for name, value in WIDER.items():
        argv += ["--fix", f"{name}={value}"]
    result = run_cli(*argv)
    assert result.returncode == 0, error_lines(result)[-5:]
    store = RunStore(tmp_path / "w")
    [row] = store.trials().to_dict("records")
    assert row["status"] == "complete" and row["hp_optimizer"] == "adamw"
    model = keras.saving.load_model(store.best_model_path, safe_mode=True)
    steps = -(-store.split_size("train") // 32) * 2  # ceil(images / batch) x epochs
    assert model.optimizer._learning_rate.decay_steps == steps
    assert not np.isnan(store.trials()["test_accuracy"]).any()


def test_label_smoothing_trains_several_classes_on_one_hot_labels(tmp_path):
    """With more than two classes label smoothing needs one-hot labels: the run feeds them."""
    from test_api import DIGITS, digits

    import search

    images, labels = digits(per_class=12)
    result = search.run(
        space="scratch",
        data=(images, labels),
        epochs=1,
        max_trials=1,
        image_size=32,
        runs_dir=str(tmp_path),
        name="smooth",
        class_names=DIGITS,
        fix=["label_smoothing=0.2", "conv_blocks=1"],
        quiet=True,
    )
    [row] = result.trials.to_dict("records")
    assert row["status"] == "complete", row["error"]
    model = result.best_model()
    assert model.loss.get_config()["label_smoothing"] == pytest.approx(0.2)
    assert model.output_shape == (None, 3)
