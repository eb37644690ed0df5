"""A quantized TFLite export, measured beside the float32 conversion of the same model.

`export --format tflite --quantize MODE` converts the inference model with TFLite's
post-training quantization (QUANTIZE). int8 calibrates its activations on a seeded
sample of the run's training images: run.json keeps the data folder, split seed and labels file,
so search.data lists the same training split again, and the sample is drawn with the run's seed.
Both models, float32 and quantized, are then run on the run's test split (the files and labels
in predictions/test-images.json) through search.predict, as `predict` runs them, and timed as
search.deploy times a trial: one thread, batch 1, the median of its runs after a warm-up, with
the interquartile range. The figures are this machine's CPU's, with the TFLite interpreter.
"""

from __future__ import annotations

import platform
import tempfile
from pathlib import Path

import keras
import numpy as np
from PIL import Image

from search.data import decode_image, list_labelled, list_splits
from search.deploy import LATENCY_RUNS, WARMUP_RUNS, file_figures
from search.errors import UsageError
from search.predict import predict_files
from search.runtime import get_runtime
from search.stats import accuracy_interval
from search.store import RunStore

QUANTIZE = ("dynamic", "float16", "int8")  # TFLite post-training quantizations
CALIBRATION_IMAGES = 100  # training images int8 calibrates on, at most
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def quantize_and_measure(model: keras.Model, store: RunStore, mode: str) -> tuple[bytes, dict]:
    """`model` (an inference model) converted with quantization `mode`, and the figures of it
    and of its float32 conversion: test accuracy with its 95% interval, size and latency."""
    info = store.read_run_info()
    test = store.split_images("test")
    if test is None:
        raise UsageError(
            f"{store.run_dir} has no predictions/test-images.json to measure the quantized model "
            f"on: a run writes it when it finishes; resume the run to finish it"
        )
    size = int(model.input_shape[1])
    calibration = calibration_images(info, size) if mode == "int8" else None
    runtime = get_runtime()
    quantized = runtime.tflite_bytes(model, quantize=mode, calibration=calibration)
    measured = {
        name: _measure(flat, test=test, class_names=info["class_names"], image_size=size)
        for name, flat in (("float32", runtime.tflite_bytes(model)), (mode, quantized))
    }
    figures = {
        "quantize": mode,
        "image_size": size,
        "test_images": len(test[0]),
        "calibration_images": None if calibration is None else len(calibration),
        "calibration_seed": None if calibration is None else info["seed"],
        "latency": {
            "interpreter": "TFLite",
            "machine": platform.machine(),
            "threads": 1,
            "batch": 1,
            "runs": LATENCY_RUNS,
            "warmup_runs": WARMUP_RUNS,
        },
        "models": measured,
    }
    return quantized, figures


def calibration_images(info: dict, image_size: int, count: int = CALIBRATION_IMAGES) -> np.ndarray:
    """Up to `count` of the run's training images, drawn with the run's seed, decoded as
    training decoded them: float32 (n, size, size, 3) raw pixels."""
    files = _training_files(info)
    images = []
    for index in np.random.default_rng(info["seed"]).permutation(len(files)):
        try:
            images.append(decode_image(files[index], image_size))
        except UNREADABLE:  # the run skipped it too
            continue
        if len(images) == count:
            break
    if not images:
        raise UsageError(f"--quantize int8: no readable training image in {info['data']}")
    return np.stack(images).astype(np.float32)


def _training_files(info: dict) -> list[Path]:
    """The run's training split, listed again from its folder, split seed and labels file."""
    root = Path(info["data"])
    if not root.is_dir():
        raise UsageError(
            f"--quantize int8 calibrates on the run's training images, but its data folder "
            f"{root} is gone; put it back, or use --quantize dynamic or float16"
        )
    if info.get("labels"):
        _, _, files, _ = list_labelled(root, Path(info["labels"]), info["split_seed"])
    else:
        _, _, files = list_splits(root, info["split_seed"])
    return [path for path, _ in files["train"]]


def _measure(
    flat: bytes, *, test: tuple[list[str], np.ndarray], class_names: list[str], image_size: int
) -> dict:
    """One TFLite model's test accuracy (with its Wilson interval), size and latency."""
    files, labels = test
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.tflite"
        path.write_bytes(flat)
        predictions = predict_files(path, files, class_names)
    predicted = [class_names.index(p["class"]) for p in predictions if "error" not in p]
    if len(predicted) != len(files):
        raise UsageError(f"{len(files) - len(predicted)} test image(s) can no longer be read")
    correct = int(np.sum(np.asarray(predicted) == labels))
    accuracy = correct / len(files) if files else None
    low, high = accuracy_interval(accuracy, len(files))
    return file_figures(flat, image_size) | {
        "test_accuracy": accuracy,
        "test_accuracy_low": low,
        "test_accuracy_high": high,
        "test_correct": correct,
    }
