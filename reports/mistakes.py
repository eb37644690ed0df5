"""What the best model gets wrong, from its stored per-image predictions: confusion matrices,
per-class precision and recall, and thumbnails of its most confident mistakes.

Only stored results are read (predictions/ in the run store) plus the image files they name,
which are shrunk to inline JPEG thumbnails, so the report stays one self-contained file.
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from search.stats import (
    accuracy_interval,
    confusion_matrix,
    precision_recall,
    predicted_classes,
    predicted_confidence,
)
from search.store import RunStore

# Mistakes shown per split, most confident first: 24 thumbnails of 96 px JPEG add about 100 KB
# to the report per split, and the worst two dozen show the pattern where there is one.
GALLERY_CAP = 24
THUMBNAIL_PX = 96
SPLITS = ("validation", "test")


@dataclass
class Mistake:
    name: str  # the file, relative to the data folder
    thumbnail: str | None  # a data: URI, or None when the file cannot be read now
    true_class: str
    predicted_class: str
    probability: float  # of the predicted class


@dataclass
class SplitOutcome:
    split: str
    n: int
    correct: int
    interval: tuple[float, float]
    matrix: list[list[int]]  # true class (rows) by predicted class (columns)
    per_class: list[tuple[str, int, float, float]]  # class, images, precision, recall
    mistakes: int
    gallery: list[Mistake]


def thumbnail(path: str) -> str | None:
    """A small JPEG of an image file as a data: URI; None when it cannot be read (moved or
    deleted since the run), which the report says instead of failing."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (THUMBNAIL_PX, THUMBNAIL_PX))  # JPEG: decode at a reduced scale
            small = ImageOps.exif_transpose(image).convert("RGB")
            small.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            buffer = io.BytesIO()
            small.save(buffer, "JPEG", quality=80)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _shown_name(path: str, data_dir: str) -> str:
    relative = os.path.relpath(path, data_dir)
    return path if relative.startswith(os.pardir) else relative


def split_outcome(
    store: RunStore, trial_id: int, split: str, *, class_names: list[str], data_dir: str
) -> SplitOutcome | None:
    """One split's outcome for a trial, or None when its predictions or labels are not stored
    (or do not match in length: the stored image list belongs to another split)."""
    probabilities = store.predictions(trial_id, split)
    images = store.split_images(split)
    if probabilities is None or images is None or len(probabilities) != len(images[1]):
        return None
    files, labels = images
    predicted = predicted_classes(probabilities)
    matrix = confusion_matrix(labels, predicted, len(class_names))
    precision, recall = precision_recall(matrix)
    wrong = np.flatnonzero(predicted != labels)
    confidence = predicted_confidence(probabilities)
    # Most confident first; the file name breaks ties, so the gallery is the same every time.
    order = sorted(wrong, key=lambda i: (-confidence[i], files[i]))[:GALLERY_CAP]
    correct = int(len(labels) - len(wrong))
    return SplitOutcome(
        split=split,
        n=len(labels),
        correct=correct,
        interval=accuracy_interval(correct / len(labels), len(labels)),
        matrix=matrix.tolist(),
        per_class=[
            (name, int(matrix[i].sum()), float(precision[i]), float(recall[i]))
            for i, name in enumerate(class_names)
        ],
        mistakes=len(wrong),
        gallery=[
            Mistake(
                name=_shown_name(files[i], data_dir),
                thumbnail=thumbnail(files[i]),
                true_class=class_names[labels[i]],
                predicted_class=class_names[predicted[i]],
                probability=float(confidence[i]),
            )
            for i in order
        ],
    )


def best_model_outcomes(store: RunStore, info: dict) -> tuple[int | None, list[SplitOutcome]]:
    """The trial of best_model.keras and its outcome on each split with stored predictions."""
    if not store.best_hparams_path.exists():
        return None, []
    trial_id = int(store.read_best_hparams()["trial_id"])
    outcomes = [
        split_outcome(
            store, trial_id, split, class_names=info["class_names"], data_dir=info["data"]
        )
        for split in SPLITS
    ]
    return trial_id, [o for o in outcomes if o is not None]
