"""Export the best model of a run as .keras, TF SavedModel or TFLite."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from search.errors import UsageError
from search.model_card import write_model_card
from search.store import RunStore

FORMATS = {"keras": "model.keras", "savedmodel": "saved_model", "tflite": "model.tflite"}


def export_best(run_dir: Path, fmt: str, output: Path | None = None) -> Path:
    """Write the run's best model in `fmt` (default place: runs/<name>/export/) and return it."""
    import keras
    import tensorflow as tf

    store = RunStore(run_dir)
    if not store.best_model_path.exists():
        raise UsageError(f"{run_dir} has no best_model.keras: no trial of it has completed")
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    output = Path(output) if output else store.run_dir / "export" / FORMATS[fmt]
    output.parent.mkdir(parents=True, exist_ok=True)
    write_model_card(store.run_dir, output.parent)  # the model ships with what it is
    if fmt == "keras":
        shutil.copyfile(store.best_model_path, output)
        return output
    model = keras.saving.load_model(store.best_model_path, safe_mode=True)
    if fmt == "savedmodel":
        model.export(str(output), format="tf_saved_model", verbose=False)
        return output
    with tempfile.TemporaryDirectory() as saved:
        model.export(saved, format="tf_saved_model", verbose=False)
        output.write_bytes(tf.lite.TFLiteConverter.from_saved_model(saved).convert())
    return output
