"""Export a run's model as .keras, TF SavedModel, TFLite or ONNX, for inference.

An export is the inference model (`inference_model`) of the best trial, or of a trial whose
model the run kept (`--trial N`: a Pareto-front trial): the random augmentation layers are left
out and every other layer keeps its trained weights. `best_model.keras` in the run directory
stays the trained model, which is what resumes and fine-tunes. Beside the model go MODEL_CARD.md
and labels.json (class names and the model's own image size), which `predict` reads wherever the
export is put. A TFLite export can be quantized (`--quantize`, QUANTIZE): then search.quantize
measures it against the float32 conversion on the test split, and quantized.json beside the
model holds both models' figures, which the card shows side by side.

Every format is written on the run's Keras backend where it can be, else converted by the
backend's runtime (search.runtime: TFLite and SavedModel through a TensorFlow child process on
PyTorch and JAX, ONNX through a PyTorch one on JAX), or refused in one line saying what to
install. An ONNX export is checked against the model before it is written (search.onnx_model).
The model is written first, so a failed conversion leaves no card without a model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import keras

from search.deploy import inference_model
from search.errors import UsageError, write_faults_say
from search.onnx_model import onnx_bytes
from search.predict import LABELS_NAME
from search.quantize import QUANTIZE, quantize_and_measure
from search.runtime import get_runtime
from search.store import RunStore

FORMATS = {
    "keras": "model.keras",
    "savedmodel": "saved_model",
    "tflite": "model.tflite",
    "onnx": "model.onnx",
}
# What predict recognises a model file by, and its name in an error.
SUFFIXES = {"keras": (".keras", "a Keras model file"), "onnx": (".onnx", "an ONNX model file")}
QUANTIZED_NAME = "quantized.json"  # a quantized export's figures, beside the model


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
    suffix, kind = SUFFIXES.get(fmt, (output.suffix, ""))
    if output.suffix != suffix:
        raise UsageError(f"--output {output}: {kind} must end in {suffix}")
    trial_id = store.read_best_hparams()["trial_id"] if trial is None else trial
    model = inference_model(keras.saving.load_model(model_path, safe_mode=True))
    flat, figures = _convert(model, fmt, store, quantize=quantize)
    if figures is not None:
        figures = {"trial_id": trial_id, **figures}
    # The model's own size: a run that searches the image size has one per trial.
    size = int(model.input_shape[1])
    with write_faults_say("pass --output in a writable folder with room for the model"):
        output.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "keras":
            model.save(output)
        elif fmt == "savedmodel":
            get_runtime().export_saved_model(model, output)
        else:
            output.write_bytes(flat)
        if document is not None:
            document(
                store.run_dir, output.parent, trial_id=trial_id, image_size=size, quantized=figures
            )
        labels = {"class_names": store.read_run_info()["class_names"], "image_size": size}
        (output.parent / LABELS_NAME).write_text(json.dumps(labels, indent=2), encoding="utf-8")
        _write_figures(output.parent / QUANTIZED_NAME, figures)
    return output


def _convert(
    model: keras.Model, fmt: str, store: RunStore, *, quantize: str | None
) -> tuple[bytes | None, dict | None]:
    """The TFLite or ONNX file of `model` (None for the formats written in place), and a
    quantized export's figures."""
    if quantize:
        return quantize_and_measure(model, store, quantize)
    if fmt == "tflite":
        return get_runtime().tflite_bytes(model), None
    if fmt == "onnx":
        return onnx_bytes(model), None
    return None, None


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
