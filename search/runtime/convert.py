"""`python -m search.runtime.convert FOLDER [--quantize MODE]`: convert FOLDER/model.keras to
FOLDER/model.tflite on the TensorFlow backend (int8 calibrates on FOLDER/calibration.npy).
search.runtime.portable runs it for a model trained on another Keras backend; a failure is one
line on stderr starting "error: "."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ["KERAS_BACKEND"] = "tensorflow"  # before Keras is imported: TFLite traces in TF


def main() -> int:
    parser = argparse.ArgumentParser(prog="search.runtime.convert")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--quantize")
    args = parser.parse_args()

    import keras
    import numpy as np

    from search.errors import UsageError
    from search.runtime.quiet import quiet_stderr

    with quiet_stderr():
        from search.runtime.tensorflow import TensorFlowRuntime

    calibration = args.folder / "calibration.npy"
    try:
        model = keras.saving.load_model(args.folder / "model.keras", safe_mode=True)
        flat = TensorFlowRuntime().tflite_bytes(
            model,
            quantize=args.quantize,
            calibration=np.load(calibration) if calibration.exists() else None,
        )
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    (args.folder / "model.tflite").write_bytes(flat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
