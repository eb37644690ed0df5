"""Export the best model of a run as .keras, TF SavedModel or TFLite, for inference.

An export is the inference model (`inference_model`): the random augmentation layers are left
out and every other layer keeps its trained weights. `best_model.keras` in the run directory
stays the trained model, which is what resumes and fine-tunes. Beside the model go MODEL_CARD.md
and labels.json (class names and image size), which `predict` reads wherever the export is put.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import keras

from search.console import quiet_stderr
from search.errors import UsageError, first_line
from search.store import RunStore

FORMATS = {"keras": "model.keras", "savedmodel": "saved_model", "tflite": "model.tflite"}
LABELS_NAME = "labels.json"
# Keras 3.15's image augmentation layers that return their input unchanged unless training.
# RandomCrop is not one of them: its output has the crop's size, so it cannot be dropped.
TRAINING_ONLY = (
    keras.layers.AugMix,
    keras.layers.CutMix,
    keras.layers.MixUp,
    keras.layers.RandAugment,
    keras.layers.RandomBrightness,
    keras.layers.RandomColorDegeneration,
    keras.layers.RandomColorJitter,
    keras.layers.RandomContrast,
    keras.layers.RandomElasticTransform,
    keras.layers.RandomErasing,
    keras.layers.RandomFlip,
    keras.layers.RandomGaussianBlur,
    keras.layers.RandomGrayscale,
    keras.layers.RandomHue,
    keras.layers.RandomInvert,
    keras.layers.RandomPerspective,
    keras.layers.RandomPosterization,
    keras.layers.RandomRotation,
    keras.layers.RandomSaturation,
    keras.layers.RandomSharpness,
    keras.layers.RandomShear,
    keras.layers.RandomTranslation,
    keras.layers.RandomZoom,
    keras.layers.Solarization,
)
# How the TFLite converter names the ops its builtins lack.
UNSUPPORTED_OPS = re.compile(r"^(?:TF Select|Flex|Custom) ops: (.+)$", re.MULTILINE)
SHOWN_ERROR = 300  # characters of any other converter error: its first line runs on into MLIR


def export_best(
    run_dir: Path,
    fmt: str,
    output: Path | None = None,
    *,
    document: Callable[[Path, Path], object] | None = None,
) -> Path:
    """Write the run's best model in `fmt` for inference (default place: runs/<name>/export/),
    with labels.json beside it, and return its path. `document(run_dir, folder)` writes what
    else ships with the model (the command line passes reports.model_card.write_model_card)."""
    store = RunStore(run_dir)
    if not store.best_model_path.exists():
        raise UsageError(f"{run_dir} has no best_model.keras: no trial of it has completed")
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    output = Path(output) if output else store.run_dir / "export" / FORMATS[fmt]
    if fmt == "keras" and output.suffix != ".keras":
        raise UsageError(f"--output {output}: a Keras model file must end in .keras")
    output.parent.mkdir(parents=True, exist_ok=True)
    if document is not None:
        document(store.run_dir, output.parent)  # the model ships with what it is
    info = store.read_run_info()
    labels = {"class_names": info["class_names"], "image_size": info["image_size"]}
    (output.parent / LABELS_NAME).write_text(json.dumps(labels, indent=2), encoding="utf-8")
    model = inference_model(keras.saving.load_model(store.best_model_path, safe_mode=True))
    if fmt == "keras":
        model.save(output)
    elif fmt == "savedmodel":
        model.export(str(output), format="tf_saved_model", verbose=False)
    else:
        output.write_bytes(tflite_bytes(model))
    return output


def inference_model(model: keras.Model) -> keras.Model:
    """`model` without its training-only augmentation layers, sharing its other layers.

    Augmentation layers pass images through unchanged at inference, but they still put their
    random-number and image-transform ops into an exported graph, and TFLite has no kernels for
    those (StatelessRandomUniformV2, ImageProjectiveTransformV3), so an augmented model would not
    convert. Each such layer becomes an Identity of the same name; every other layer is the same
    object, with its trained weights, called with the same arguments (the transfer space's
    backbone keeps `training=False`). Nested models are rebuilt the same way.
    """
    if not any(isinstance(layer, TRAINING_ONLY) for layer in _all_layers(model)):
        return model

    def replace(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, TRAINING_ONLY):
            return keras.layers.Identity(name=layer.name, dtype=layer.dtype_policy.name)
        if isinstance(layer, keras.Model):
            return inference_model(layer)
        return layer

    return keras.models.clone_model(model, clone_function=replace)


def _all_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def tflite_bytes(model: keras.Model) -> bytes:
    """The TFLite flatbuffer of `model`, or a one-line UsageError naming the ops it lacks."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as saved, quiet_stderr():
        model.export(saved, format="tf_saved_model", verbose=False)
        try:
            return tf.lite.TFLiteConverter.from_saved_model(saved).convert()
        except Exception as error:  # the converter's ConverterError carries pages of MLIR
            raise UsageError(_conversion_failure(error)) from None


def _conversion_failure(error: Exception) -> str:
    ops = {op.strip() for line in UNSUPPORTED_OPS.findall(str(error)) for op in line.split(",")}
    if ops:
        return (
            f"cannot convert the model to TFLite: no TFLite builtin op for {', '.join(sorted(ops))}"
            "; export --format savedmodel or keras instead"
        )
    return f"cannot convert the model to TFLite: {first_line(error)[:SHOWN_ERROR]}"
