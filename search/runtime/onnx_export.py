"""Keras's own ONNX export (`model.export(format="onnx")`) as bytes, for the runtimes whose
backend Keras converts in the process: PyTorch (torch.onnx) and TensorFlow (tf2onnx).

The batch dimension stays dynamic, so `predict` runs one file on batches of any length. On
PyTorch that makes Keras trace with TorchScript, whose warnings (values read as constants) say
nothing a user can act on: the export is checked against the model (search.onnx_model).
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from search.errors import UsageError, first_line

if TYPE_CHECKING:
    import keras


def keras_onnx_bytes(model: keras.Model) -> bytes:
    """`model` as an ONNX file whose input takes float32 batches of any length; a UsageError
    in one line when the backend's exporter fails."""
    import keras

    signature = [keras.InputSpec(shape=(None, *model.input_shape[1:]), dtype="float32")]
    with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(scratch) / "model.onnx"
        try:
            model.export(str(path), format="onnx", verbose=False, input_signature=signature)
        except Exception as error:  # each exporter has its own errors, some pages long
            raise UsageError(
                f"cannot convert the model to ONNX on the {keras.backend.backend()} backend "
                f"({first_line(error)}); export --format keras instead"
            ) from None
        return path.read_bytes()
