"""Classify image files with an exported model, as seed 004's last step does.

Images are decoded exactly as training decoded them (`search.data.decode_image`: EXIF rotation,
RGB, bilinear resize to the model's size) and fed as raw [0, 255] pixels, since augmentation
and scaling are layers inside the model. Models are loaded with `safe_mode=True`: a `.keras`
file from elsewhere cannot run code while loading.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from search.data import decode_image
from search.errors import UsageError
from search.store import RunStore

TOP_CLASSES = 3  # classes named in a sentence when there are more than two


def predict_files(
    model_path: Path,
    image_paths: Sequence[Path | str],
    class_names: Sequence[str],
    image_size: int | None = None,
) -> list[dict]:
    """One prediction per image, in order: its path, the predicted class and every class's
    probability; an unreadable image gets an `error` instead. `image_size` defaults to the
    model's input size and must match it."""
    import keras

    model = keras.saving.load_model(model_path, safe_mode=True)
    size = _input_size(model, image_size)
    decoded = [_decode(Path(p), size) for p in image_paths]
    readable = [d for d in decoded if not isinstance(d, str)]
    probabilities = iter([])
    if readable:
        outputs = model.predict(np.stack(readable), verbose=0)
        probabilities = iter(class_probabilities(outputs, len(class_names)))
    return [
        {"path": str(path), "error": image}
        if isinstance(image, str)
        else _prediction(str(path), next(probabilities), class_names)
        for path, image in zip(image_paths, decoded, strict=True)
    ]


def predict_target(
    target: Path | str, image_paths: Sequence[Path | str], class_names: Sequence[str] | None = None
) -> list[dict]:
    """`run_search.py predict RUNDIR_OR_MODEL IMAGES...`: a run directory's best model, or a
    `.keras` file; class names and image size come from the run's run.json (also found next to
    an export in RUNDIR/export/), or `class_names` for a model with no run beside it."""
    model_path, info = _locate(Path(target))
    names = class_names or info.get("class_names")
    if not names:
        raise UsageError(f"{target}: no run.json beside it to name the classes; pass them")
    return predict_files(model_path, image_paths, names, info.get("image_size"))


def describe(prediction: dict) -> str:
    """Seed 004's sentence: "This image is 94.30% cat and 5.70% dog." With more than two
    classes, the most likely ones, most likely first."""
    if "error" in prediction:
        return f"cannot read this image ({prediction['error']})"
    shares = list(prediction["probabilities"].items())
    if len(shares) > 2:
        shares = sorted(shares, key=lambda item: -item[1])[:TOP_CLASSES]
    parts = [f"{p:.2%} {name}" for name, p in shares]
    return f"This image is {', '.join(parts[:-1])} and {parts[-1]}."


def class_probabilities(outputs: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, n_classes) probabilities: one sigmoid unit is P(second class), softmax is as is."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if n_classes == 2 and outputs.shape[-1] == 1:
        return np.concatenate([1.0 - outputs, outputs], axis=-1)
    if outputs.shape[-1] != n_classes:
        raise UsageError(f"the model has {outputs.shape[-1]} outputs for {n_classes} classes")
    return outputs


def _prediction(path: str, probabilities: np.ndarray, class_names: Sequence[str]) -> dict:
    shares = zip(class_names, probabilities, strict=True)
    return {
        "path": path,
        "class": class_names[int(np.argmax(probabilities))],
        "probabilities": {name: float(p) for name, p in shares},
    }


def _decode(path: Path, size: int) -> np.ndarray | str:
    try:
        return decode_image(path, size)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        return f"{type(error).__name__}: {error}"


def _input_size(model, image_size: int | None) -> int:
    size = model.input_shape[1]
    if image_size is not None and image_size != size:
        raise UsageError(f"the model takes {size} px images, not {image_size} px")
    return size


def _locate(target: Path) -> tuple[Path, dict]:
    """The model file and its run's run.json contents (empty when there is none)."""
    if target.is_dir():
        store = RunStore(target)
        if not store.best_model_path.exists():
            raise UsageError(f"{target} has no best_model.keras: no trial of it has completed")
        return store.best_model_path, _run_info(target)
    if target.suffix != ".keras" or not target.is_file():
        raise UsageError(f"{target}: pass a run directory or a .keras model file")
    for folder in (target.parent, target.parent.parent):
        if (folder / "run.json").exists():
            return target, _run_info(folder)
    return target, {}


def _run_info(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
