"""What the runtimes of PyTorch and JAX share: the input pipeline (search.runtime.batches),
and the formats their backend cannot write itself, converted by a child process on the backend
that can (search.runtime.convert) when its library is installed, refused in one line saying
what to install when it is not.

TFLite and SavedModel trace the model in TensorFlow, which a PyTorch or JAX model cannot be
(Keras's SavedModel export on PyTorch fails at torch.export); ONNX is written on PyTorch. The
model is saved as .keras and converted in the child, the way a user would convert it by hand;
running a TFLite file or loading a SavedModel needs TensorFlow in this process.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from search import keras_backend
from search.errors import UsageError
from search.runtime.batches import ArrayBatches

if TYPE_CHECKING:
    import keras
    import keras_tuner as kt

NEEDS_TENSORFLOW = "pip install tensorflow (or use KERAS_BACKEND=tensorflow)"
# The library of each backend a child process converts on (convert.BACKENDS), as an error
# names it, and what installs it.
LIBRARIES = {"tensorflow": "TensorFlow", "torch": "PyTorch"}
INSTALL = {"tensorflow": NEEDS_TENSORFLOW, "torch": keras_backend.INSTALL["torch"]}
# What each format is called in an error.
FEATURES = {
    "tflite": "a TFLite export",
    "savedmodel": "a SavedModel export",
    "onnx": "an ONNX export",
}


def tensorflow_runtime(feature: str):
    """The TensorFlow runtime's module, for a format only TensorFlow reads or writes; a
    UsageError naming `feature` and what to install when TensorFlow cannot be imported."""
    try:
        from search.runtime import tensorflow
    except ImportError:
        raise UsageError(
            f"{feature} needs TensorFlow, which is not installed: {NEEDS_TENSORFLOW}"
        ) from None
    return tensorflow


class PortableRuntime:
    """search.runtime.Runtime's parts that do not depend on the backend's library."""

    def training_dataset(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        *,
        seed: int,
        limit: int,
        drop_remainder: bool,
    ) -> ArrayBatches:
        return ArrayBatches(x, y, batch_size, seed=seed, drop_remainder=drop_remainder)

    def evaluation_dataset(
        self, x: np.ndarray, y: np.ndarray, batch_size: int, *, limit: int
    ) -> ArrayBatches:
        return ArrayBatches(x, y, batch_size)

    def subset_dataset(
        self, x: np.ndarray, y: np.ndarray, indices: np.ndarray, *, batch_size: int, limit: int
    ) -> ArrayBatches:
        return ArrayBatches(x, y, batch_size, indices=indices)

    def tflite_bytes(
        self,
        model: keras.Model,
        *,
        quantize: str | None = None,
        calibration: np.ndarray | None = None,
    ) -> bytes:
        return _bytes_from_child(model, "tflite", quantize=quantize, calibration=calibration)

    def export_saved_model(self, model: keras.Model, path: Path) -> None:
        convert_in_child(model, "savedmodel", path)

    def onnx_bytes(self, model: keras.Model) -> bytes:
        return _bytes_from_child(model, "onnx")

    def tflite_interpreter(
        self,
        *,
        model_path: Path | None = None,
        model_content: bytes | None = None,
        num_threads: int | None = None,
    ):
        return (
            tensorflow_runtime("running a TFLite model")
            .TensorFlowRuntime()
            .tflite_interpreter(
                model_path=model_path, model_content=model_content, num_threads=num_threads
            )
        )

    def load_saved_model(self, path: Path) -> tuple[int, Callable[[np.ndarray], np.ndarray]]:
        return tensorflow_runtime("loading a SavedModel").TensorFlowRuntime().load_saved_model(path)

    def tensorboard_callbacks(
        self, hp: kt.HyperParameters, log_dir: Path, trial_id: int
    ) -> list[keras.callbacks.Callback]:
        # Keras's TensorBoard callback writes through tf.summary on every backend.
        runtime = tensorflow_runtime("--tensorboard").TensorFlowRuntime()
        return runtime.tensorboard_callbacks(hp, log_dir, trial_id)


def _bytes_from_child(model: keras.Model, fmt: str, **options) -> bytes:
    """The file convert_in_child writes for `fmt`, as bytes."""
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / f"model.{fmt}"
        convert_in_child(model, fmt, output, **options)
        return output.read_bytes()


def convert_in_child(
    model: keras.Model,
    fmt: str,
    output: Path,
    *,
    quantize: str | None = None,
    calibration: np.ndarray | None = None,
) -> None:
    """Write `model` as `fmt` (convert.BACKENDS) to `output` from a child process on the
    backend that writes it; a UsageError in one line when its library is not installed or the
    conversion fails."""
    from search.runtime.convert import BACKENDS

    backend = BACKENDS[fmt]
    # Looked up, not imported: importing TensorFlow here would cost seconds and memory.
    if importlib.util.find_spec(backend) is None:
        raise UsageError(
            f"{FEATURES[fmt]} needs {LIBRARIES[backend]}, which is not installed: "
            f"{INSTALL[backend]}"
        )
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        model.save(folder / "model.keras")
        command = [sys.executable, "-m", "search.runtime.convert", str(folder)]
        command += ["--format", fmt, "--output", str(Path(output).resolve())]
        if quantize:
            command += ["--quantize", quantize]
        if calibration is not None:
            np.save(folder / "calibration.npy", calibration)
        # The child imports this package from where this process did, from any folder.
        path = [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
        done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise UsageError(lines[-1].removeprefix("error: "))
