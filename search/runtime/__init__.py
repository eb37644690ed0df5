"""The one seam between the search and the library under Keras: what Keras itself does not do
the same way on every backend goes through a `Runtime`.

A `Runtime` feeds the run's arrays to `fit` (`training_dataset`, `evaluation_dataset`,
`subset_dataset`), sets up devices (`start`, `configure_devices`, `gpu_compute_capabilities`)
and tells a failed device allocation from other errors (`is_out_of_memory`), converts a model to
TFLite and runs the file (`tflite_bytes`, `tflite_interpreter`), writes and loads a SavedModel
export (`export_saved_model`, `load_saved_model`), converts a model to ONNX (`onnx_bytes`; the
file runs in onnxruntime, search.onnx_model) and writes TensorBoard logs with HParams
(`tensorboard_callbacks`).
`get_runtime()` returns the one for the active Keras backend (`keras.backend.backend()`, which
`KERAS_BACKEND` and ~/.keras/keras.json choose): `tensorflow.py`, `torch.py` and `jax.py`, one
module per backend (PyTorch's and JAX's share `portable.py`: a PyDataset pipeline, and the
TensorFlow-only formats through TensorFlow when it is installed). Adding another is one module
with these methods and one entry in `RUNTIMES`. Implementations do not import this module (the
Protocol is structural), so the import graph stays one way: this module imports them, on first
use.

This module imports neither Keras nor TensorFlow at import time: the command line parses and
validates before either is loaded.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from search.errors import UsageError

if TYPE_CHECKING:
    import keras
    import keras_tuner as kt
    import numpy as np

# What `model.fit`, `evaluate` and `predict` take on the backend: a tf.data.Dataset on
# TensorFlow, a keras.utils.PyDataset or a DataLoader elsewhere.
Dataset = Any
# An object with tf.lite.Interpreter's methods (LiteRT's Interpreter has the same ones).
Interpreter = Any
# The Keras backends with a runtime module of this package: the module and its class.
RUNTIMES = {
    "tensorflow": ("search.runtime.tensorflow", "TensorFlowRuntime"),
    "torch": ("search.runtime.torch", "TorchRuntime"),
    "jax": ("search.runtime.jax", "JaxRuntime"),
}


@runtime_checkable
class Runtime(Protocol):
    """What a backend's runtime provides. Every method may import the backend's library."""

    name: str  # the Keras backend it serves, as keras.backend.backend() names it
    compiler: str  # what Keras's jit_compile=True compiles the training step with
    # Whether Keras runs several steps per call (compile's steps_per_execution) on the backend.
    runs_steps_per_execution: bool

    def start(self) -> None:
        """Import the backend's library and look for GPUs, which is when native libraries
        write their start-up lines (the caller sends them to a scratch file); must not yet
        start the device runtime, so that `configure_devices` can still set it up."""

    def configure_devices(
        self, memory_limit_mb: int | None, *, warn: Callable[[str], None]
    ) -> list[str]:
        """Let each GPU's memory grow as needed, limited to `memory_limit_mb` MiB when given
        (several processes share one GPU); return the GPUs' names, empty without a GPU. A
        setting the backend refuses is passed to `warn` with what it costs."""

    def gpu_compute_capabilities(self) -> list[tuple[int, int]]:
        """The CUDA compute capability of each visible GPU, for the choice of precision."""

    def is_out_of_memory(self, error: BaseException) -> bool:
        """Whether `error` is a failed device allocation, which a smaller batch may avoid."""

    def training_dataset(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        *,
        seed: int,
        limit: int,
        drop_remainder: bool,
    ) -> Dataset:
        """Batches of (x, y) in a new seeded order every epoch (search.inputs says more);
        arrays over `limit` bytes are read batch by batch instead of being held whole."""

    def evaluation_dataset(
        self, x: np.ndarray, y: np.ndarray, batch_size: int, *, limit: int
    ) -> Dataset:
        """Batches of (x, y) in order."""

    def subset_dataset(
        self, x: np.ndarray, y: np.ndarray, indices: np.ndarray, *, batch_size: int, limit: int
    ) -> Dataset:
        """Batches of the rows `indices` of (x, y), in that order, copying none of `x`."""

    def tflite_bytes(
        self,
        model: keras.Model,
        *,
        quantize: str | None = None,
        calibration: np.ndarray | None = None,
    ) -> bytes:
        """The TFLite flatbuffer of `model`, float32 or quantized ("dynamic", "float16", or
        "int8" calibrated on the float32 images `calibration`); a UsageError in one line when
        the model does not convert."""

    def tflite_interpreter(
        self,
        *,
        model_path: Path | None = None,
        model_content: bytes | None = None,
        num_threads: int | None = None,
    ) -> Interpreter:
        """A TFLite interpreter over a file or its bytes, its tensors allocated, quietly."""

    def export_saved_model(self, model: keras.Model, path: Path) -> None:
        """Write `model` as a TF SavedModel folder at `path`, its `serve` endpoint taking float32
        batches; a UsageError in one line when the backend cannot."""

    def load_saved_model(self, path: Path) -> tuple[int, Callable[[np.ndarray], np.ndarray]]:
        """A SavedModel export's image size and its `serve` endpoint as batch -> outputs."""

    def onnx_bytes(self, model: keras.Model) -> bytes:
        """`model` as an ONNX file through Keras's `model.export(format="onnx")`, its batch
        dimension dynamic; a UsageError in one line when the model or the backend cannot."""

    def tensorboard_callbacks(
        self, hp: kt.HyperParameters, log_dir: Path, trial_id: int
    ) -> list[keras.callbacks.Callback]:
        """A trial's TensorBoard logs in `log_dir`: its curves, and its hyperparameters in
        the HParams dashboard as Keras Tuner records them."""


def get_runtime(backend: str | None = None) -> Runtime:
    """The runtime of `backend`, by default the active Keras backend's; one per process."""
    if backend is None:
        import keras

        backend = keras.backend.backend()
    return _runtime(backend)


@functools.cache
def _runtime(backend: str) -> Runtime:
    if backend not in RUNTIMES:
        raise UsageError(
            f"the Keras backend {backend!r} is not supported: this search runs on "
            f"{', '.join(RUNTIMES)}; set KERAS_BACKEND to one of them"
        )
    module, name = RUNTIMES[backend]
    return getattr(importlib.import_module(module), name)()
