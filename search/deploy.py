"""What a trial's model costs where it ships: its float32 file's size and its latency.

`--measure-deploy` measures every complete trial at its kept weights: the inference model
(`inference_model`, augmentation removed, which every export ships too) converted to TFLite,
then run by the TFLite interpreter on this machine's CPU with one thread and batch 1, the median
of LATENCY_RUNS timed runs after WARMUP_RUNS, with the interquartile range as its spread. The
conversion and the interpreter are the Keras backend's runtime's (search.runtime). Where
TensorFlow is not installed (a PyTorch or JAX search without it), TFLite is out of reach, so the
ONNX file is measured instead, in onnxruntime with one thread and batch 1, the same way; a
trial's `deploy_format` column says which file its figures are of (`deploy_format()`). This module
sits below search.export and search.quantize, which both use its model and its timing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import time
from collections.abc import Callable, Iterator

import keras
import numpy as np

from search import compat
from search.errors import UsageError
from search.onnx_model import onnx_bytes, onnx_session
from search.runtime import get_runtime
from search.schema import DEPLOY_COLUMNS

LATENCY_RUNS = 30
WARMUP_RUNS = 5
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
# Layers that pass their input through unchanged at inference (`inference_model` turns
# augmentation into Identity layers).
INFERENCE_IDENTITIES = (keras.layers.Dropout, keras.layers.Identity, keras.layers.InputLayer)


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


def violations(figures: dict, limits: dict[str, float]) -> dict[str, float]:
    """How far `figures` (a trial's row) exceed each limit (column -> figure - limit, positive
    when over it): Optuna's constraints, feasible when every value is at most 0. A figure that
    could not be measured counts as over its limit."""
    over = {}
    for column, limit in limits.items():
        value = figures.get(column)
        over[column] = float("inf") if value is None else float(value) - limit
    return over


class DeployCache:
    """The figures of each inference architecture measured in this process. Trials that
    differ only in what inference leaves out (learning rate, dropout rate, augmentation) build
    the same TFLite graph with weights of the same shapes: the same file size and the same
    work per image. Converting takes about 10 s at 160 px, so such a trial takes the figures
    of the first one measured (`deploy_same_as`) instead of converting again."""

    def __init__(self):
        self._measured: dict[str, dict] = {}

    def measure(self, model: keras.Model, *, trial_id: int, runs: int = LATENCY_RUNS) -> dict:
        start = time.perf_counter()
        inference = inference_model(model)
        signature = architecture_signature(inference)
        if signature in self._measured:
            seconds = round(time.perf_counter() - start, 2)
            return self._measured[signature] | {"deploy_s": seconds}
        figures = measure_deploy(inference, inference.input_shape[1], runs)
        if figures.get("tflite_kb") is not None:
            self._measured[signature] = figures | {"deploy_same_as": trial_id}
        return figures


def architecture_signature(model: keras.Model) -> str:
    """A digest of what the TFLite converter sees of `model` at inference: every layer's kind,
    its configuration without its name, and its weights' shapes and dtypes, in order. Layers
    that are identities at inference (dropout, removed augmentation) are left out. The input
    shape comes first: a convolution's weights are the same at any image size, its work not."""
    parts: list[object] = [list(model.input_shape)]
    for layer in compat.all_layers(model):
        if isinstance(layer, INFERENCE_IDENTITIES):
            continue
        config = {} if isinstance(layer, keras.Model) else layer.get_config()
        config = {k: v for k, v in config.items() if k not in ("name", "trainable", "seed")}
        weights = [(tuple(w.shape), str(w.dtype)) for w in layer.weights]
        parts.append((type(layer).__name__, config, weights))
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def deploy_format() -> str:
    """The file --measure-deploy measures: TFLite, which every backend converts to when
    TensorFlow is installed (search.runtime), else ONNX."""
    return "tflite" if importlib.util.find_spec("tensorflow") else "onnx"


def measure_deploy(model: keras.Model, image_size: int, runs: int = LATENCY_RUNS) -> dict:
    """DEPLOY_COLUMNS of `model` as `deploy_format()`, which names it; a model that does not
    convert gets None, with the reason."""
    start = time.perf_counter()
    fmt = deploy_format()
    inference = inference_model(model)
    try:
        flat = get_runtime().tflite_bytes(inference) if fmt == "tflite" else onnx_bytes(inference)
    except UsageError as error:
        return dict.fromkeys(DEPLOY_COLUMNS) | {"deploy_format": fmt, "deploy_error": str(error)}
    return file_figures(flat, image_size, runs, fmt=fmt) | {
        "deploy_format": fmt,
        "deploy_s": round(time.perf_counter() - start, 2),
    }


def file_figures(
    flat: bytes, image_size: int, runs: int = LATENCY_RUNS, *, fmt: str = "tflite"
) -> dict:
    """A TFLite (or, `fmt` "onnx", ONNX) file's size in KB and its median latency with the
    interquartile range, as the search and a quantized export both record them."""
    low, median, high = np.percentile(latencies(flat, image_size, runs, fmt=fmt), [25, 50, 75])
    return {
        "tflite_kb": round(len(flat) / 1024, 1),
        "latency_ms": round(float(median), 3),
        "latency_iqr_ms": round(float(high - low), 3),
    }


def latencies(
    flat: bytes, image_size: int, runs: int = LATENCY_RUNS, *, fmt: str = "tflite"
) -> np.ndarray:
    """Milliseconds per invocation of the TFLite (or ONNX) model on one image, one thread."""
    image = np.random.default_rng(0).integers(0, 256, (1, image_size, image_size, 3))
    if fmt == "onnx":
        session = onnx_session(model_content=flat, num_threads=1)
        feed = {session.get_inputs()[0].name: image.astype(np.float32)}
        return _timed(lambda: session.run(None, feed), runs)
    interpreter = get_runtime().tflite_interpreter(model_content=flat, num_threads=1)
    source = interpreter.get_input_details()[0]
    interpreter.set_tensor(source["index"], image.astype(source["dtype"]))
    return _timed(interpreter.invoke, runs)


def _timed(invoke: Callable[[], object], runs: int) -> np.ndarray:
    """Milliseconds of each of `runs` calls of `invoke`, after WARMUP_RUNS untimed ones."""
    for _ in range(WARMUP_RUNS):
        invoke()
    timings = []
    for _ in range(runs):
        begin = time.perf_counter()
        invoke()
        timings.append((time.perf_counter() - begin) * 1000)
    return np.array(timings)
