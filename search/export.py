"""Export a run's model as .keras, TF SavedModel or TFLite, for inference.

An export is the inference model (`inference_model`) of the best trial, or of a trial whose
model the run kept (`--trial N`: a Pareto-front trial): the random augmentation layers are left
out and every other layer keeps its trained weights. `best_model.keras` in the run directory
stays the trained model, which is what resumes and fine-tunes. Beside the model go MODEL_CARD.md
and labels.json (class names and the model's own image size), which `predict` reads wherever the
export is put. A TFLite export can be quantized (`--quantize`, QUANTIZE): then search.quantize
measures it against the float32 conversion on the test split, and quantized.json beside the
model holds both models' figures, which the card shows side by side.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import keras
import numpy as np

from search.console import quiet_stderr
from search.errors import UsageError, first_line
from search.store import RunStore

FORMATS = {"keras": "model.keras", "savedmodel": "saved_model", "tflite": "model.tflite"}
QUANTIZE = ("dynamic", "float16", "int8")  # TFLite post-training quantizations (_quantized)
LABELS_NAME = "labels.json"
QUANTIZED_NAME = "quantized.json"  # a quantized export's figures, beside the model
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
    document: Callable[..., object] | None = None,
    trial: int | None = None,
    quantize: str | None = None,
) -> Path:
    """Write the model of `trial` (the best trial's when None) in `fmt` for inference (default
    place: runs/<name>/export/), with labels.json beside it, and return its path. `quantize`
    (QUANTIZE, TFLite only) converts it quantized and writes quantized.json with its figures.
    `document(run_dir, folder, trial_id=, image_size=, quantized=)` writes what else ships with
    the model (the command line passes reports.model_card.write_model_card)."""
    store = RunStore(run_dir)
    model_path = store.model_path(trial)
    _check_format(fmt, quantize)
    output = Path(output) if output else store.run_dir / "export" / FORMATS[fmt]
    if fmt == "keras" and output.suffix != ".keras":
        raise UsageError(f"--output {output}: a Keras model file must end in .keras")
    trial_id = store.read_best_hparams()["trial_id"] if trial is None else trial
    model = inference_model(keras.saving.load_model(model_path, safe_mode=True))
    figures = None
    if quantize:
        # Imported here: search.quantize reaches this module through search.deploy.
        from search.quantize import quantize_and_measure

        flat, figures = quantize_and_measure(model, store, quantize)
        figures = {"trial_id": trial_id, **figures}
    # The model's own size: a run that searches the image size has one per trial.
    size = int(model.input_shape[1])
    output.parent.mkdir(parents=True, exist_ok=True)
    if document is not None:
        document(
            store.run_dir, output.parent, trial_id=trial_id, image_size=size, quantized=figures
        )
    labels = {"class_names": store.read_run_info()["class_names"], "image_size": size}
    (output.parent / LABELS_NAME).write_text(json.dumps(labels, indent=2), encoding="utf-8")
    _write_figures(output.parent / QUANTIZED_NAME, figures)
    if fmt == "keras":
        model.save(output)
    elif fmt == "savedmodel":
        model.export(str(output), format="tf_saved_model", verbose=False)
    else:
        output.write_bytes(flat if quantize else tflite_bytes(model))
    return output


def _check_format(fmt: str, quantize: str | None) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZE:
        raise UsageError(f"unknown quantization {quantize!r}; choose one of {', '.join(QUANTIZE)}")
    if quantize and fmt != "tflite":
        raise UsageError(
            f"--quantize {quantize} quantizes a TFLite model: add --format tflite "
            f"(.keras and SavedModel exports stay float32)"
        )


def _write_figures(path: Path, figures: dict | None) -> None:
    """quantized.json, for a benchmark to read; an earlier export's is removed, so the folder
    never holds figures of another model than the card describes."""
    if figures is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(json.dumps(figures, indent=2), encoding="utf-8")


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


def tflite_bytes(
    model: keras.Model, *, quantize: str | None = None, calibration: np.ndarray | None = None
) -> bytes:
    """The TFLite flatbuffer of `model`, float32 or quantized (QUANTIZE; int8 calibrates on the
    float32 images `calibration`), or a one-line UsageError naming the ops it lacks."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as saved, quiet_stderr():
        model.export(saved, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        if quantize:
            _quantized(converter, quantize, calibration)
        try:
            return converter.convert()
        except Exception as error:  # the converter's ConverterError carries pages of MLIR
            raise UsageError(_conversion_failure(error)) from None


def _quantized(converter, quantize: str, calibration: np.ndarray | None) -> None:
    """dynamic: int8 weights, float activations; float16: float16 weights; int8: int8 weights
    and activations, calibrated on `calibration`. Input and output stay float32 (a quantize and
    a dequantize op at the ends), so the file takes raw pixels like every other export."""
    import tensorflow as tf

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        converter.representative_dataset = lambda: ([image[None]] for image in calibration)
        # Builtin int8 kernels only: conversion fails rather than leave an op in float.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]


def _conversion_failure(error: Exception) -> str:
    ops = {op.strip() for line in UNSUPPORTED_OPS.findall(str(error)) for op in line.split(",")}
    if ops:
        return (
            f"cannot convert the model to TFLite: no TFLite builtin op for {', '.join(sorted(ops))}"
            "; export --format savedmodel or keras instead"
        )
    return f"cannot convert the model to TFLite: {first_line(error)[:SHOWN_ERROR]}"
