"""An ONNX model of a Keras model: converted by the Keras backend's runtime (search.runtime:
Keras's `model.export(format="onnx")` on TensorFlow and PyTorch, a PyTorch child process on
JAX), checked against the Keras model, and run in onnxruntime.

The check matters because the converters trace: PyTorch's reads some values as constants, and
Keras's JAX exporter (jax2onnx) writes files onnxruntime refuses. Every ONNX file the search
writes or measures predicts like its model on a few seeded images at two batch lengths first.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from search.errors import UsageError, first_line
from search.runtime import get_runtime

if TYPE_CHECKING:
    import keras
    import onnxruntime

CHECK_BATCHES = (1, 3)  # batch lengths the check runs: the batch dimension must stay dynamic
CHECK_TOLERANCE = 1e-4  # largest difference of an output from the Keras model's
NEEDS_ONNXRUNTIME = 'pip install -e "." (or pip install onnxruntime)'


def onnx_bytes(model: keras.Model) -> bytes:
    """`model` as an ONNX file that predicts like it; a UsageError in one line otherwise."""
    flat = get_runtime().onnx_bytes(model)
    session = onnx_session(model_content=flat)
    size = tuple(model.input_shape[1:])
    rng = np.random.default_rng(0)
    for batch in CHECK_BATCHES:
        images = rng.uniform(0, 255, (batch, *size)).astype(np.float32)
        expected = np.asarray(model.predict(images, verbose=0))
        got = run(session, images)
        if got.shape != expected.shape or not np.allclose(got, expected, atol=CHECK_TOLERANCE):
            raise UsageError(
                f"the ONNX conversion does not predict like the model on {batch} image(s) "
                f"(largest difference {_difference(got, expected)}); export --format keras "
                f"instead"
            )
    return flat


def onnx_session(
    *,
    model_path: Path | None = None,
    model_content: bytes | None = None,
    num_threads: int | None = None,
) -> onnxruntime.InferenceSession:
    """An onnxruntime session on the CPU over a file or its bytes, with `num_threads` threads
    (onnxruntime's default when None); a UsageError in one line when onnxruntime is missing or
    the file is no ONNX model."""
    if importlib.util.find_spec("onnxruntime") is None:
        raise UsageError(f"running an ONNX model needs onnxruntime: {NEEDS_ONNXRUNTIME}")
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its graph-optimisation warnings are not ours
    if num_threads is not None:
        options.intra_op_num_threads = options.inter_op_num_threads = num_threads
    source = model_content if model_content is not None else str(model_path)
    try:
        return onnxruntime.InferenceSession(
            source, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # onnxruntime's own error classes, not exported by name
        where = model_path or "the ONNX conversion"
        raise UsageError(f"{where}: onnxruntime cannot load it ({first_line(error)})") from None


def input_size(session: onnxruntime.InferenceSession) -> int:
    """The image size the session's one input takes (NHWC, as Keras exports it)."""
    shape = session.get_inputs()[0].shape
    if len(shape) != 4 or not isinstance(shape[1], int):
        raise UsageError(f"the ONNX model's input has shape {shape}, not (batch, size, size, 3)")
    return shape[1]


def run(session: onnxruntime.InferenceSession, images: np.ndarray) -> np.ndarray:
    """The session's first output for a float32 batch."""
    source = session.get_inputs()[0].name
    return np.asarray(session.run(None, {source: images.astype(np.float32)})[0])


def _difference(got: np.ndarray, expected: np.ndarray) -> str:
    if got.shape != expected.shape:
        return f"outputs of shape {got.shape}, not {expected.shape}"
    return f"{float(np.max(np.abs(got - expected))):.2g}"
