"""Every export format is the inference model: it predicts like the trained one, augmented or not,
and `predict` reads every format; a TFLite conversion failure is one line."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import error_lines, run_cli

from reports.model_card import write_model_card
from search.deploy import TRAINING_ONLY
from search.errors import UsageError
from search.export import FORMATS, LABELS_NAME, export_best, inference_model
from search.onnx_model import onnx_session, run
from search.predict import describe, predict_target
from search.steps import SearchConfig, run_search
from search.store import RunStore

# Every augmentation layer the spaces have, so the best model certainly carries them all.
AUGMENTATION = ("flip=horizontal", "rotation=0.1", "zoom=0.1", "translation=0.1", "contrast=0.1")
TOLERANCE = {
    "keras": 1e-6,
    "savedmodel": 1e-6,
    "tflite": 1e-5,
    "onnx": 1e-5,
}  # TFLite has its own kernels
# What the layers that take no default strength are built with to be checked.
STRENGTHS = {
    "RandomBrightness": {"factor": 0.3},
    "RandomColorDegeneration": {"factor": 0.5},
    "RandomContrast": {"factor": 0.3},
    "RandomHue": {"factor": 0.5},
    "RandomPosterization": {"factor": (1, 4)},
    "RandomRotation": {"factor": 0.2},
    "RandomSaturation": {"factor": 0.5},
    "RandomSharpness": {"factor": 0.5},
    "RandomTranslation": {"height_factor": 0.2, "width_factor": 0.2},
    "RandomZoom": {"height_factor": 0.3},
}
SENTENCE = re.compile(r"(.+): This image is (\d+\.\d\d)% cats and (\d+\.\d\d)% dogs\.")


@pytest.fixture(scope="module")
def augmented_run(tiny_folder, weights_file, tmp_path_factory) -> RunStore:
    """The README's main job in small: a frozen transfer run whose model augments."""
    config = SearchConfig(
        space="transfer",
        data=str(tiny_folder),
        max_trials=1,
        epochs=1,
        image_size=32,
        batch_size=16,
        weights=str(weights_file),
        name="augmented",
        runs_dir=str(tmp_path_factory.mktemp("runs")),
        fix=(*AUGMENTATION, "mode=frozen"),
    )
    return run_search(config)


@pytest.fixture(scope="module")
def cli_tflite(augmented_run, tmp_path_factory):
    """`export --format tflite` of the augmented run through the CLI, to a folder of its own."""
    output = tmp_path_factory.mktemp("elsewhere") / "best.tflite"
    result = run_cli(
        "export", str(augmented_run.run_dir), "--format", "tflite", "--output", str(output)
    )
    return result, output


@pytest.fixture(scope="module")
def exports(augmented_run, cli_tflite) -> dict[str, Path]:
    """The augmented run in every format, each exported through the CLI: .keras and SavedModel
    in their default place, RUNDIR/export/, and the TFLite file written elsewhere."""
    paths = {}
    for fmt in ("keras", "savedmodel", "onnx"):
        result = run_cli("export", str(augmented_run.run_dir), "--format", fmt)
        assert result.returncode == 0, error_lines(result)
        paths[fmt] = Path(result.stdout.strip().splitlines()[-1])
        assert paths[fmt] == augmented_run.run_dir / "export" / FORMATS[fmt]
    return {**paths, "tflite": cli_tflite[1]}


def trained_predictions(store: RunStore, images: np.ndarray) -> np.ndarray:
    return keras.saving.load_model(store.best_model_path).predict(images, verbose=0)


def tflite_predictions(path: Path, images: np.ndarray) -> np.ndarray:
    interpreter = tf.lite.Interpreter(model_path=str(path))
    (source,), (result,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(source["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(source["index"], images)
    interpreter.invoke()
    return interpreter.get_tensor(result["index"])


def exported_predictions(path: Path, fmt: str, images: np.ndarray) -> np.ndarray:
    if fmt == "keras":
        return keras.saving.load_model(path).predict(images, verbose=0)
    if fmt == "savedmodel":
        loaded = tf.saved_model.load(str(path))  # keep a reference: serve() uses its variables
        return loaded.serve(tf.constant(images)).numpy()
    if fmt == "onnx":
        return run(onnx_session(model_path=path), images)
    return tflite_predictions(path, images)


def augmentation_layers(model: keras.Model) -> list[str]:
    return [layer.name for layer in model.layers if isinstance(layer, TRAINING_ONLY)]


def test_the_dropped_layers_are_every_one_that_is_identity_at_inference():
    """Every Random* layer of this Keras but RandomCrop (it changes the size) is dropped, and each
    dropped layer returns its input unchanged unless training."""
    names = {name for name in dir(keras.layers) if name.startswith("Random")} - {"RandomCrop"}
    assert names <= {kind.__name__ for kind in TRAINING_ONLY}
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    for kind in TRAINING_ONLY:
        layer = kind(**STRENGTHS.get(kind.__name__, {}))
        np.testing.assert_array_equal(layer(images, training=False), images, err_msg=kind.__name__)


def test_inference_model_drops_only_the_augmentation(augmented_run, tiny_run):
    trained = keras.saving.load_model(augmented_run.best_model_path)
    assert augmentation_layers(trained) == ["flip", "rotation", "zoom", "translation", "contrast"]
    model = inference_model(trained)
    assert augmentation_layers(model) == []
    for layer in trained.layers[1:]:  # past the input, which a clone always has its own of
        if not isinstance(layer, TRAINING_ONLY):  # the same layer object: its trained weights
            assert model.get_layer(layer.name) is layer
    plain = keras.saving.load_model(tiny_run[1].best_model_path)
    assert inference_model(plain) is plain


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("augmented", [False, True], ids=["plain", "augmented"])
def test_every_export_predicts_like_the_trained_model(augmented, fmt, request, tiny_data, tmp_path):
    if augmented:
        store = request.getfixturevalue("augmented_run")
        output = request.getfixturevalue("exports")[fmt]
    else:
        store = request.getfixturevalue("tiny_run")[1]
        output = export_best(store.run_dir, fmt, tmp_path / FORMATS[fmt], document=write_model_card)
    card = output.parent / "MODEL_CARD.md"
    assert card.read_text().count("val") > 0, "exported with its card"
    assert (output.parent / LABELS_NAME).exists()
    images = tiny_data.test.x.astype("float32")
    got = exported_predictions(output, fmt, images)
    np.testing.assert_allclose(got, trained_predictions(store, images), atol=TOLERANCE[fmt])
    if fmt == "keras":
        assert augmentation_layers(keras.saving.load_model(output)) == []


def test_the_main_job_exports_to_tflite_from_the_cli(cli_tflite):
    """Its predictions are checked with every other export's, above."""
    result, output = cli_tflite
    assert result.returncode == 0, error_lines(result)
    assert result.stdout.strip() == str(output)
    assert error_lines(result) == [], "the converter's logging stays off the terminal"


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_predict_reads_every_export_like_the_run(fmt, augmented_run, exports, tiny_data):
    images = tiny_data.test.files[:3]
    result = run_cli("predict", str(exports[fmt]), *images)
    assert result.returncode == 0, error_lines(result)
    assert error_lines(result) == []
    got = [SENTENCE.fullmatch(line).groups() for line in result.stdout.splitlines()]
    expected = [
        SENTENCE.fullmatch(f"{p['path']}: {describe(p)}").groups()
        for p in predict_target(augmented_run.run_dir, images)
    ]
    assert [path for path, *_ in got] == [path for path, *_ in expected]
    for (_, *shares), (_, *wanted) in zip(got, expected, strict=True):
        # the same percentages, but for a last digit that float differences round across
        assert np.allclose(np.float64(shares), np.float64(wanted), rtol=0, atol=0.01)


def test_an_export_without_labels_finds_run_json_one_folder_up(
    augmented_run, exports, tiny_data, tmp_path
):
    """As an export in RUNDIR/export/ made before export wrote labels.json."""
    (tmp_path / "export").mkdir()
    shutil.copy(augmented_run.run_json, tmp_path / "run.json")
    model = shutil.copy(exports["keras"], tmp_path / "export" / "model.keras")
    image = tiny_data.test.files[0]
    (got,) = predict_target(model, [image])
    (expected,) = predict_target(augmented_run.run_dir, [image])
    assert got["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)


def test_predict_refuses_what_is_no_model(tmp_path, tiny_data):
    image = tiny_data.test.files[0]
    for target in (tmp_path, tmp_path / "missing.keras", Path(image)):
        with pytest.raises(UsageError, match=r"pass a run directory, a \.keras or \.tflite file"):
            predict_target(target, [image])


def test_a_tflite_conversion_failure_is_one_line(tiny_run, tmp_path):
    """A best model with bicubic resizing, which TFLite's builtin ops lack, cannot convert."""
    store = tiny_run[1]
    run_dir = tmp_path / "bicubic"
    shutil.copytree(store.run_dir, run_dir, ignore=shutil.ignore_patterns("cache", "kt", "export"))
    trained = keras.saving.load_model(store.best_model_path)
    image = keras.Input(trained.input_shape[1:])
    resized = keras.layers.Resizing(32, 32, interpolation="bicubic")(image)
    keras.Model(image, trained(resized)).save(run_dir / "best_model.keras")
    result = run_cli("export", str(run_dir), "--format", "tflite")
    assert result.returncode == 2
    (line,) = error_lines(result)
    # The converter also names ops of branches it would have pruned (the nested model's dropout).
    assert re.fullmatch(
        r"run_search\.py: error: cannot convert the model to TFLite: no TFLite builtin op for "
        r"(\w+, )*ResizeBicubic(, \w+)*; export --format savedmodel or keras instead",
        line,
    )
    assert not (run_dir / "export" / "model.tflite").exists()
