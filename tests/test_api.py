"""The Python API: `search.run(...)` with a name, a callable or a HyperModel, on a folder or on
NumPy arrays (real handwritten digits), called twice in one process; its result's tables,
model, export and predictions; bad options raise, never exit."""

from __future__ import annotations

import json

import keras
import keras_tuner as kt
import numpy as np
import pytest
from sklearn.datasets import load_digits

import search
from search.errors import UsageError

DIGITS = ["zero", "one", "two"]


def digits(per_class: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """The first three digits of scikit-learn's 8 x 8 scans, as 32 x 32 RGB uint8 pictures."""
    found = load_digits()
    keep = np.concatenate([np.flatnonzero(found.target == c)[:per_class] for c in range(3)])
    scans = np.kron(found.images[keep], np.ones((4, 4))) * (255 / 16)
    return np.repeat(scans[..., None], 3, axis=-1).astype(np.uint8), found.target[keep]


def dense_model(hp):
    """Keras Tuner's guide shape: Sequential, uncompiled (the run compiles it), softmax out."""
    return keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Flatten(),
            keras.layers.Dense(hp.Int("units", 8, 16, step=8), activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )


class DenseHyperModel(kt.HyperModel):
    def build(self, hp):
        return dense_model(hp)


@pytest.mark.parametrize("space", [dense_model, DenseHyperModel()], ids=["function", "instance"])
def test_a_user_model_searches_numpy_arrays(space, tmp_path):
    images, labels = digits()
    result = search.run(
        space=space,
        data=(images, labels),
        class_names=DIGITS,
        max_trials=2,
        epochs=3,
        image_size=32,
        batch_size=16,
        runs_dir=str(tmp_path),
        name="digits",
    )
    trials = result.trials
    assert list(trials["status"]) == ["complete", "complete"]
    # Class folders are read in sorted order, as Keras's image_dataset_from_directory does.
    assert result.store.read_run_info()["class_names"] == sorted(DIGITS)
    assert result.report_path.exists() and len(result.epochs) >= 2
    model = result.best_model()
    assert model.output_shape == (None, 3)
    # The arrays were written once into the run, as a folder of PNG files per class.
    pictures = sorted((result.run_dir / "images" / "two").glob("*.png"))
    assert len(pictures) == 30
    [prediction] = result.predict([pictures[0]])
    assert set(prediction["probabilities"]) == set(DIGITS)


def test_two_runs_in_one_process_then_export_and_predict(tiny_folder, tmp_path):
    common = {"space": "scratch", "data": str(tiny_folder), "epochs": 1, "image_size": 32}
    first = search.run(**common, max_trials=1, runs_dir=str(tmp_path), name="first")
    second = search.run(
        **common, max_trials=2, runs_dir=str(tmp_path), name="second", backend="optuna"
    )
    assert len(first.trials) == 1 and len(second.trials) == 2
    output = second.export("tflite", output=tmp_path / "model.tflite")
    assert output.exists() and (tmp_path / "MODEL_CARD.md").exists()
    best = int(second.store.best_trial()["trial_id"])
    folder = tmp_path / "quantized"
    second.export("tflite", output=folder / "model.tflite", trial=best, quantize="dynamic")
    figures = json.loads((folder / "quantized.json").read_text(encoding="utf-8"))
    assert figures["models"]["dynamic"]["tflite_kb"] < figures["models"]["float32"]["tflite_kb"]
    image = next((tiny_folder / "validation" / "cats").iterdir())
    [prediction] = second.predict([image])
    assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.bad_input
def test_bad_options_raise_instead_of_exiting(tiny_folder, tmp_path):
    with pytest.raises(UsageError, match="--epochs: must be a positive integer"):
        search.run(space="scratch", data=str(tiny_folder), epochs=0)
    with pytest.raises(TypeError, match=r"unknown options \['epoch'\]"):
        search.run(space="scratch", data=str(tiny_folder), epoch=3)

    def defined_here(hp):  # like a notebook's function: no module can import it again
        return dense_model(hp)

    with pytest.raises(UsageError, match="cannot be loaded by worker processes"):
        search.run(space=defined_here, data=str(tiny_folder), backend="optuna", workers=2)
    with pytest.raises(UsageError, match="class_names"):
        search.run(space=dense_model, data=digits(), runs_dir=str(tmp_path))


def test_list_options_reach_the_config_as_the_command_line_reads_them():
    """Comma-list options (objectives, image_sizes, backbones) get all their values, not the
    last; repeated ones (fix, weights as NAME=VALUE pairs) each of theirs."""
    from search.api import _config

    config = _config(
        "transfer",
        {
            "backend": "optuna",
            "objectives": ["val_accuracy", "latency_ms"],
            "measure_deploy": True,
            "image_sizes": [32, 48],
            "backbones": ["convnext_tiny", "mobilenet_v2"],
            "weights": {"convnext_tiny": "random"},
            "fix": ["mode=frozen", "pooling=avg"],
        },
    )
    assert config.objectives == ("val_accuracy", "latency_ms")
    assert config.image_sizes == (32, 48)
    assert config.backbones == ("convnext_tiny", "mobilenet_v2")
    assert config.backbone_weights == ("convnext_tiny=random",)
    assert config.fix == ("mode=frozen", "pooling=avg")
