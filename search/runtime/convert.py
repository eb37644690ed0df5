"""`python -m search.runtime.convert FOLDER --format FORMAT --output PATH [--quantize MODE]`:
convert FOLDER/model.keras to PATH on the Keras backend that writes FORMAT (BACKENDS): TFLite
(int8 calibrates on FOLDER/calibration.npy) and SavedModel on TensorFlow, ONNX on PyTorch.
search.runtime.portable runs it for a model trained on a backend that cannot write the format
itself, the way a user would convert the .keras file by hand; a failure is one line on stderr
starting "error: "."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# The backend each format is written on: TFLite and SavedModel trace in TensorFlow; Keras's
# ONNX export on JAX (jax2onnx 0.17) writes pooling nodes onnxruntime refuses, PyTorch's does not.
BACKENDS = {"tflite": "tensorflow", "savedmodel": "tensorflow", "onnx": "torch"}


def main() -> int:
    parser = argparse.ArgumentParser(prog="search.runtime.convert")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--format", choices=BACKENDS, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--quantize")
    args = parser.parse_args()
    os.environ["KERAS_BACKEND"] = BACKENDS[args.format]  # before Keras is imported

    import numpy as np

    from search.errors import UsageError
    from search.runtime import get_runtime
    from search.runtime.quiet import quiet_stderr

    with quiet_stderr():  # TensorFlow's native start-up lines
        import keras

        runtime = get_runtime()
    calibration = args.folder / "calibration.npy"
    try:
        model = keras.saving.load_model(args.folder / "model.keras", safe_mode=True)
        if args.format == "savedmodel":
            runtime.export_saved_model(model, args.output)
            return 0
        if args.format == "onnx":
            flat = runtime.onnx_bytes(model)
        else:
            flat = runtime.tflite_bytes(
                model,
                quantize=args.quantize,
                calibration=np.load(calibration) if calibration.exists() else None,
            )
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    args.output.write_bytes(flat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
