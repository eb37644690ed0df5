"""Uncertainty of accuracies and of differences between models: pure functions.

The store (intervals on every accuracy it writes) and the report (ties with the best trial,
confusion matrices) both use them; nothing here reads or writes a run.
"""

from __future__ import annotations

import math

import numpy as np

Z_95 = 1.96  # two-sided 95%
TIE_P = 0.05  # McNemar p at or above which two models are "tied"


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion: unlike the normal ("Wald") interval it
    stays within [0, 1] and keeps its coverage near 0 and 1, where good classifiers live."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes} of {n}")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_interval(
    accuracy: float | None, n: int | None, z: float = Z_95
) -> tuple[float | None, float | None]:
    """The Wilson interval of an accuracy measured on `n` images; (None, None) when either is
    unknown. The count of correct images is round(accuracy * n): Keras reports a float32 mean."""
    if accuracy is None or n is None or n <= 0 or math.isnan(accuracy):
        return None, None
    return wilson_interval(min(n, max(0, round(accuracy * n))), n, z)


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> float:
    """Two-sided p of McNemar's exact test: whether two models that judged the same images
    differ in accuracy. Only the discordant images count (one model right, the other wrong);
    under the null each is equally likely to go either way, so the smaller count is binomial
    with p = 1/2, and the symmetric two-sided p doubles its tail (capped at 1)."""
    a_correct, b_correct = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    if a_correct.shape != b_correct.shape:
        raise ValueError(f"different images: {a_correct.shape} vs {b_correct.shape}")
    only_a = int(np.sum(a_correct & ~b_correct))
    only_b = int(np.sum(b_correct & ~a_correct))
    n = only_a + only_b
    # Exact integer arithmetic: the tail of 10,000 discordant images is far below float range.
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1))
    return min(1.0, 2 * tail / 2**n)


def predicted_classes(probabilities: np.ndarray) -> np.ndarray:
    """Class indices from stored predictions: P(class 1) per image for one sigmoid unit
    (class 1 above 0.5, as Keras's binary accuracy counts it), or softmax rows (argmax)."""
    probabilities = np.asarray(probabilities)
    if probabilities.ndim == 1:
        return (probabilities > 0.5).astype(int)
    return probabilities.argmax(axis=1)


def predicted_confidence(probabilities: np.ndarray) -> np.ndarray:
    """The probability each image's predicted class was given."""
    probabilities = np.asarray(probabilities, dtype=float)
    if probabilities.ndim == 1:
        return np.where(probabilities > 0.5, probabilities, 1 - probabilities)
    return probabilities.max(axis=1)


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts of images by true class (rows) and predicted class (columns)."""
    matrix = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(matrix, (np.asarray(labels, int), np.asarray(predicted, int)), 1)
    return matrix


def precision_recall(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per class, from a confusion matrix: precision (of the images predicted as the class, the
    share that are) and recall (of the class's images, the share found); NaN where undefined."""
    hits = np.diag(matrix).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return hits / matrix.sum(axis=0), hits / matrix.sum(axis=1)


def prediction_scores(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """--objective val_auc and val_f1 from a split's predictions: the area under the ROC curve
    (one-vs-rest, macro over classes, for more than two) and macro F1 of the predicted classes.
    AUC is NaN while a split lacks a class (it is undefined there)."""
    from sklearn.metrics import f1_score, roc_auc_score

    probabilities = np.asarray(probabilities, dtype=float)
    if probabilities.ndim == 2 and probabilities.shape[1] == 1:
        probabilities = probabilities[:, 0]
    classes = np.arange(2 if probabilities.ndim == 1 else probabilities.shape[1])
    f1 = f1_score(labels, predicted_classes(probabilities), labels=classes, average="macro")
    try:
        if probabilities.ndim == 1:
            auc = roc_auc_score(labels, probabilities)
        elif len(classes) == 2:
            auc = roc_auc_score(labels, probabilities[:, 1])
        else:
            auc = roc_auc_score(labels, probabilities, multi_class="ovr", labels=classes)
    except ValueError:
        auc = float("nan")
    return {"val_auc": float(auc), "val_f1": float(f1)}
