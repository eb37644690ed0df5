"""The TensorFlow runtime: tf.data pipelines, TensorFlow's device set-up and error classes, the
TFLite converter and interpreter, SavedModel export and loading, ONNX through Keras's export
(tf2onnx) and TensorBoard's HParams plugin.

This is the one module of search/ that imports TensorFlow (search.runtime says why).
"""

from __future__ import annotations

import importlib.util
import os
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from search import compat
from search.errors import UsageError, first_line
from search.runtime.onnx_export import keras_onnx_bytes
from search.runtime.quiet import quiet_stderr

if TYPE_CHECKING:
    import keras_tuner as kt

KEPT_TENSORS = 6  # images and labels of train and validation, or cached features
_TENSORS: dict[int, tuple[np.ndarray, tf.Tensor]] = {}
# cuDNN and cuBLAS report a failed allocation as an internal or unknown error, not as
# ResourceExhaustedError; these words in its text say it was memory.
_OUT_OF_MEMORY = re.compile(
    r"out of memory|\bOOM\b|CUDNN_STATUS_ALLOC_FAILED|CUBLAS_STATUS_ALLOC_FAILED", re.IGNORECASE
)
# How the TFLite converter names the ops its builtins lack.
UNSUPPORTED_OPS = re.compile(r"^(?:TF Select|Flex|Custom) ops: (.+)$", re.MULTILINE)
SHOWN_ERROR = 300  # characters of any other converter error: its first line runs on into MLIR


class TensorFlowRuntime:
    """search.runtime.Runtime on TensorFlow."""

    name = "tensorflow"
    runs_steps_per_execution = True
    compiler = "XLA"

    def start(self) -> None:
        tf.config.list_physical_devices("GPU")

    def configure_devices(
        self, memory_limit_mb: int | None, *, warn: Callable[[str], None]
    ) -> list[str]:
        """Must run before anything starts TensorFlow's runtime (building a model, creating a
        tensor): growth and limits can only be set before, and a process whose growth was not
        set reserves nearly all of a GPU's memory. Also silences TensorFlow's retracing
        warnings, which every new trial model triggers."""
        tf.get_logger().setLevel("ERROR")
        gpus = tf.config.list_physical_devices("GPU")
        for gpu in gpus:
            _before_start(
                f"memory growth is not on for {gpu.name}: this process may reserve the whole GPU",
                tf.config.experimental.set_memory_growth,
                gpu,
                True,
                warn=warn,
            )
            if memory_limit_mb:
                _before_start(
                    f"--gpu-memory-mb {memory_limit_mb} is not applied to {gpu.name}",
                    tf.config.set_logical_device_configuration,
                    gpu,
                    [tf.config.LogicalDeviceConfiguration(memory_limit=memory_limit_mb)],
                    warn=warn,
                )
        return [_details(gpu).get("device_name", gpu.name) for gpu in gpus]

    def gpu_compute_capabilities(self) -> list[tuple[int, int]]:
        gpus = tf.config.list_physical_devices("GPU")
        found = (_details(gpu).get("compute_capability") for gpu in gpus)
        return [tuple(capability) for capability in found if capability]

    def is_out_of_memory(self, error: BaseException) -> bool:
        if isinstance(error, tf.errors.ResourceExhaustedError):
            return True
        if isinstance(error, tf.errors.InternalError | tf.errors.UnknownError):
            return bool(_OUT_OF_MEMORY.search(str(error)))
        return False

    def training_dataset(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        *,
        seed: int,
        limit: int,
        drop_remainder: bool,
    ) -> tf.data.Dataset:
        order = tf.data.Dataset.range(len(y))
        order = order.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
        return _batches(x, y, order.batch(batch_size, drop_remainder=drop_remainder), limit=limit)

    def evaluation_dataset(
        self, x: np.ndarray, y: np.ndarray, batch_size: int, *, limit: int
    ) -> tf.data.Dataset:
        return _batches(x, y, tf.data.Dataset.range(len(y)).batch(batch_size), limit=limit)

    def subset_dataset(
        self, x: np.ndarray, y: np.ndarray, indices: np.ndarray, *, batch_size: int, limit: int
    ) -> tf.data.Dataset:
        order = tf.data.Dataset.from_tensor_slices(indices).batch(batch_size)
        return _batches(x, y, order, limit=limit)

    def tflite_bytes(
        self,
        model: keras.Model,
        *,
        quantize: str | None = None,
        calibration: np.ndarray | None = None,
    ) -> bytes:
        with tempfile.TemporaryDirectory() as saved, quiet_stderr():
            model.export(saved, format="tf_saved_model", verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(saved)
            if quantize:
                _quantized(converter, quantize, calibration)
            try:
                return converter.convert()
            except Exception as error:  # the converter's ConverterError carries pages of MLIR
                raise UsageError(_conversion_failure(error)) from None

    def tflite_interpreter(
        self,
        *,
        model_path: Path | None = None,
        model_content: bytes | None = None,
        num_threads: int | None = None,
    ) -> tf.lite.Interpreter:
        """Without the interpreter's deprecation notice (LiteRT), no concern of a user's, and
        the XNNPACK delegate announcement of its first allocation."""
        path = None if model_path is None else os.fspath(model_path)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r"\s*Warning: tf.lite.Interpreter is deprecated")
            interpreter = tf.lite.Interpreter(
                model_path=path, model_content=model_content, num_threads=num_threads
            )
        with quiet_stderr():
            interpreter.allocate_tensors()
        return interpreter

    def export_saved_model(self, model: keras.Model, path: Path) -> None:
        model.export(str(path), format="tf_saved_model", verbose=False)

    def onnx_bytes(self, model: keras.Model) -> bytes:
        if importlib.util.find_spec("tf2onnx") is None:
            raise UsageError(
                "an ONNX export on the TensorFlow backend needs tf2onnx, which is not "
                'installed: pip install -e "." (or use KERAS_BACKEND=torch)'
            )
        with quiet_stderr():  # tf2onnx's graph rewriting logs through TensorFlow's C++ code
            return keras_onnx_bytes(model)

    def load_saved_model(self, path: Path) -> tuple[int, Callable[[np.ndarray], np.ndarray]]:
        loaded = tf.saved_model.load(str(path))
        if not hasattr(loaded, "serve"):
            raise UsageError(
                f"{path}: this SavedModel has no serve endpoint, "
                f"as `export --format savedmodel` writes"
            )
        # The closure keeps `loaded` alive: `serve` reads its variables.
        size = loaded.serve.input_signature[0].shape[1]
        return size, lambda images: loaded.serve(tf.constant(images)).numpy()

    def tensorboard_callbacks(
        self, hp: kt.HyperParameters, log_dir: Path, trial_id: int
    ) -> list[keras.callbacks.Callback]:
        from tensorboard.plugins.hparams import api as hparams_api

        hparams = compat.tensorboard_hparams(hp, hparams_api)
        return [
            keras.callbacks.TensorBoard(log_dir=str(log_dir)),
            hparams_api.KerasCallback(writer=str(log_dir), hparams=hparams, trial_id=str(trial_id)),
        ]


def _details(gpu: tf.config.PhysicalDevice) -> dict:
    return tf.config.experimental.get_device_details(gpu)


def _before_start(
    consequence: str, setting: Callable[..., None], *args: object, warn: Callable[[str], None]
) -> None:
    """Apply a device setting; TensorFlow refuses it (RuntimeError) once its runtime has
    started, which only a bug in the order of start-up causes: say what that costs."""
    try:
        setting(*args)
    except RuntimeError as error:
        warn(f"warning: {consequence} (TensorFlow's runtime had already started: {error})")


def _tensor(x: np.ndarray) -> tf.Tensor:
    """`x` as a tensor, made once per array and kept for later trials: a fresh copy for every
    fit grew the process by the copy's size each trial (TensorFlow keeps what a dataset
    captured), and the same arrays serve every trial of a run. It is held in host memory:
    tf.data gathers batches on the CPU anyway, and GPU memory is for the models."""
    key = id(x)
    if key not in _TENSORS:
        if len(_TENSORS) >= KEPT_TENSORS:
            _TENSORS.pop(next(iter(_TENSORS)))
        with tf.device("/CPU:0"):
            _TENSORS[key] = (x, tf.constant(x))  # x kept, so its id is not reused
    return _TENSORS[key][1]


def _gather(x: np.ndarray, limit: int) -> Callable[[tf.Tensor], tf.Tensor]:
    """A function from a batch of indices to those rows of `x`, as a tensor."""
    if x.nbytes <= limit:
        rows = _tensor(x)
        return lambda batch: tf.gather(rows, batch)

    def read(batch: np.ndarray) -> np.ndarray:
        order = np.argsort(batch)  # ascending reads from the map, then back in batch order
        out = np.empty((len(batch), *x.shape[1:]), x.dtype)
        out[order] = x[batch[order]]
        return out

    def gather(batch: tf.Tensor) -> tf.Tensor:
        rows = tf.numpy_function(read, [batch], tf.as_dtype(x.dtype), stateful=False)
        return tf.ensure_shape(rows, (None, *x.shape[1:]))

    return gather


def _batches(
    x: np.ndarray, y: np.ndarray, indices: tf.data.Dataset, *, limit: int
) -> tf.data.Dataset:
    """Each batch of indices gathered in a parallel map, prefetched, so the model never waits
    on Python slicing."""
    gather_x = _gather(x, limit)
    labels = _tensor(y)
    return indices.map(
        lambda batch: (gather_x(batch), tf.gather(labels, batch)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    ).prefetch(tf.data.AUTOTUNE)


def _quantized(converter: tf.lite.TFLiteConverter, quantize: str, calibration) -> None:
    """dynamic: int8 weights, float activations; float16: float16 weights; int8: int8 weights
    and activations, calibrated on `calibration`. Input and output stay float32 (a quantize and
    a dequantize op at the ends), so the file takes raw pixels like every other export."""
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
