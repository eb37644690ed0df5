"""The best model exports as .keras, SavedModel and TFLite, and each predicts like the original."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import error_lines, run_cli

from search.export import export_best


@pytest.fixture(scope="module")
def reference(tiny_run, tiny_data):
    _, store = tiny_run
    model = keras.saving.load_model(store.best_model_path)
    images = tiny_data.test.x.astype("float32")
    return store, images, model.predict(images, verbose=0)


def test_keras_export_round_trip(reference, tmp_path):
    store, images, expected = reference
    path = export_best(store.run_dir, "keras", tmp_path / "model.keras")
    assert (tmp_path / "MODEL_CARD.md").read_text().count("val") > 0, "exported with its card"
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), expected, rtol=1e-6)


def test_savedmodel_export_round_trip(reference):
    store, images, expected = reference
    path = export_best(store.run_dir, "savedmodel")
    assert path == store.run_dir / "export" / "saved_model"
    loaded = tf.saved_model.load(str(path))  # keep a reference: serve() uses its variables
    served = loaded.serve(tf.constant(images)).numpy()
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)


def test_tflite_export_round_trip_from_the_cli(reference, tmp_path):
    store, images, expected = reference
    output = tmp_path / "best.tflite"
    result = run_cli("export", str(store.run_dir), "--format", "tflite", "--output", str(output))
    assert result.returncode == 0, error_lines(result)
    interpreter = tf.lite.Interpreter(model_path=str(output))
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], images)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_predict_command_reads_like_seed_004(reference, tiny_data):
    store, _, _ = reference
    image = tiny_data.test.files[0]
    result = run_cli("predict", str(store.run_dir), image)
    assert result.returncode == 0, error_lines(result)
    assert re.fullmatch(
        rf"{re.escape(image)}: This image is \d+\.\d\d% cats and \d+\.\d\d% dogs\.",
        result.stdout.strip(),
    )
