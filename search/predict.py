"""Classify image files with a run's model or any export of it, as seed 004's last step does.

The target is a run directory (its best_model.keras), a `.keras` file, a SavedModel folder (its
`serve` endpoint), a `.tflite` file or a `.onnx` file (run in onnxruntime on the CPU, on any
Keras backend and without TensorFlow). Class names and image size come from the labels.json that
`export` writes beside the model, or else from the run's run.json beside it or one folder up (an
export in RUNDIR/export/). Images are decoded exactly as training decoded them
(`search.data.decode_image`: EXIF rotation, RGB, bilinear resize to the model's size) and fed as
raw [0, 255] float32 pixels, since scaling is a layer inside the model. Models are loaded with
`safe_mode=True`: a `.keras` file from elsewhere cannot run code while loading.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from search.data import decode_image
from search.errors import UsageError, first_line
from search.onnx_model import input_size, onnx_session, run
from search.runtime import get_runtime
from search.store import RunStore

LABELS_NAME = "labels.json"  # written beside an export by search.export: classes, image size
TOP_CLASSES = 3  # classes named in a sentence when there are more than two
BATCH = 32  # images per model call: a SavedModel, TFLite or ONNX call takes its whole input
SAVED_MODEL_FILE = "saved_model.pb"
TARGETS = "a run directory, a .keras or .tflite file, an .onnx file, or a SavedModel folder"
MODEL_FILES = (".keras", ".tflite", ".onnx")


@dataclass(frozen=True)
class Classifier:
    """A loaded model of any format: the image size it takes and batch -> outputs."""

    image_size: int
    run: Callable[[np.ndarray], np.ndarray]


def load_classifier(model_path: Path | str) -> Classifier:
    """A `.keras` file, a SavedModel folder, a `.tflite` or a `.onnx` file, ready to classify."""
    path = Path(model_path)
    try:
        if path.is_dir():
            return _saved_model(path)
        if path.suffix == ".tflite":
            return _tflite(path)
        if path.suffix == ".onnx":
            return _onnx(path)
        return _keras(path)
    except (OSError, ValueError) as error:
        raise UsageError(f"{path}: cannot load the model ({first_line(error)})") from None


def predict_files(
    model_path: Path,
    image_paths: Sequence[Path | str],
    class_names: Sequence[str],
    *,
    image_size: int | None = None,
) -> list[dict]:
    """One prediction per image, in order: its path, the predicted class and every class's
    probability; an unreadable image gets an `error` instead. `model_path` is any format
    `load_classifier` takes; `image_size` defaults to the model's input size and must match it."""
    classifier = load_classifier(model_path)
    size = _input_size(classifier, image_size)
    decoded = [_decode(Path(p), size) for p in image_paths]
    readable = [d for d in decoded if not isinstance(d, str)]
    probabilities = iter([])
    if readable:
        images = np.stack(readable).astype(np.float32)
        batches = [classifier.run(images[i : i + BATCH]) for i in range(0, len(images), BATCH)]
        probabilities = iter(class_probabilities(np.concatenate(batches), len(class_names)))
    return [
        {"path": str(path), "error": image}
        if isinstance(image, str)
        else _prediction(str(path), next(probabilities), class_names)
        for path, image in zip(image_paths, decoded, strict=True)
    ]


def predict_target(
    target: Path | str, image_paths: Sequence[Path | str], class_names: Sequence[str] | None = None
) -> list[dict]:
    """`run_search.py predict TARGET IMAGES...`: TARGET is a run directory or an export of any
    format; `class_names` names the classes of a model with no labels.json or run.json near it."""
    model_path, info = _locate(Path(target))
    names = class_names or info.get("class_names")
    if not names:
        raise UsageError(
            f"{target}: no {LABELS_NAME} beside it or run.json near it to name the classes"
        )
    return predict_files(model_path, image_paths, names, image_size=info.get("image_size"))


def describe(prediction: dict) -> str:
    """Seed 004's sentence: "This image is 94.30% cat and 5.70% dog." With more than two
    classes, the most likely ones, most likely first."""
    if "error" in prediction:
        return f"cannot read this image ({prediction['error']})"
    shares = list(prediction["probabilities"].items())
    if len(shares) > 2:
        shares = sorted(shares, key=lambda item: -item[1])[:TOP_CLASSES]
    parts = [f"{p:.2%} {name}" for name, p in shares]
    return f"This image is {', '.join(parts[:-1])} and {parts[-1]}."


def class_probabilities(outputs: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, n_classes) probabilities: one sigmoid unit is P(second class), softmax is as is."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if n_classes == 2 and outputs.shape[-1] == 1:
        return np.concatenate([1.0 - outputs, outputs], axis=-1)
    if outputs.shape[-1] != n_classes:
        raise UsageError(f"the model has {outputs.shape[-1]} outputs for {n_classes} classes")
    return outputs


def _prediction(path: str, probabilities: np.ndarray, class_names: Sequence[str]) -> dict:
    shares = zip(class_names, probabilities, strict=True)
    return {
        "path": path,
        "class": class_names[int(np.argmax(probabilities))],
        "probabilities": {name: float(p) for name, p in shares},
    }


def _decode(path: Path, size: int) -> np.ndarray | str:
    try:
        return decode_image(path, size)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        return f"{type(error).__name__}: {error}"


def _input_size(classifier: Classifier, image_size: int | None) -> int:
    size = classifier.image_size
    if image_size is not None and image_size != size:
        raise UsageError(f"the model takes {size} px images, not {image_size} px")
    return size


def _keras(path: Path) -> Classifier:
    import keras

    model = keras.saving.load_model(path, safe_mode=True)
    return Classifier(model.input_shape[1], lambda images: model.predict(images, verbose=0))


def _saved_model(path: Path) -> Classifier:
    return Classifier(*get_runtime().load_saved_model(path))


def _tflite(path: Path) -> Classifier:
    interpreter = get_runtime().tflite_interpreter(model_path=path)
    (source,), (result,) = interpreter.get_input_details(), interpreter.get_output_details()

    def run(images: np.ndarray) -> np.ndarray:
        interpreter.resize_tensor_input(source["index"], images.shape)  # the batch's length
        interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], images)
        interpreter.invoke()
        return interpreter.get_tensor(result["index"])

    return Classifier(int(source["shape"][1]), run)


def _onnx(path: Path) -> Classifier:
    session = onnx_session(model_path=path)
    return Classifier(input_size(session), lambda images: run(session, images))


def _locate(target: Path) -> tuple[Path, dict]:
    """The model and its labels: labels.json or run.json contents (empty when there is none)."""
    if target.is_dir() and not (target / SAVED_MODEL_FILE).exists():
        if not (target / "run.json").exists():
            raise UsageError(f"{target}: pass {TARGETS}")
        store = RunStore(target)
        if not store.best_model_path.exists():
            raise UsageError(f"{target} has no best_model.keras: no trial of it has completed")
        return store.best_model_path, _read_json(target / "run.json")
    if not target.is_dir() and (target.suffix not in MODEL_FILES or not target.is_file()):
        raise UsageError(f"{target}: pass {TARGETS}")
    if (target.parent / LABELS_NAME).exists():
        return target, _read_json(target.parent / LABELS_NAME)
    for folder in (target.parent, target.parent.parent):
        if (folder / "run.json").exists():
            return target, _read_json(folder / "run.json")
    return target, {}


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))
