"""Wilson intervals and McNemar's exact test against published worked examples, and the store's
prediction files and interval columns."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import binomtest

from search.stats import (
    accuracy_interval,
    confusion_matrix,
    mcnemar_exact,
    precision_recall,
    predicted_classes,
    predicted_confidence,
    wilson_interval,
)
from search.store import RunStore


def test_wilson_interval_matches_newcombe():
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion: comparison
    # of seven methods", Statistics in Medicine 17:857-872, Table II, method 3 (score):
    # 81/263 -> 0.2553 to 0.3662; 15/148 -> 0.0624 to 0.1605; 0/20 -> 0 to 0.1611.
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    assert wilson_interval(15, 148) == pytest.approx((0.0624, 0.1605), abs=5e-5)
    assert wilson_interval(0, 20) == pytest.approx((0.0, 0.1611), abs=5e-5)


def test_wilson_interval_of_81_in_100_by_its_formula():
    # (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), worked by hand for 81/100:
    # centre (0.81 + 0.019208) / 1.038416 = 0.798529, half 1.96 x 0.040436 / 1.038416 =
    # 0.076322.
    low, high = wilson_interval(81, 100)
    assert (low, high) == pytest.approx((0.7222, 0.8749), abs=5e-5)
    assert low < 0.81 < high
    # Near 1 the interval is asymmetric and never passes 1: 199 of 200 test images.
    low, high = wilson_interval(199, 200)
    assert high < 1 and 0.995 - low > high - 0.995
    assert wilson_interval(200, 200)[1] == 1.0


def test_accuracy_interval_counts_a_float32_accuracy_as_images():
    assert accuracy_interval(np.float32(0.71375), 800) == wilson_interval(571, 800)
    assert accuracy_interval(None, 800) == (None, None)
    assert accuracy_interval(0.9, None) == (None, None)
    assert accuracy_interval(float("nan"), 800) == (None, None)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def pairs(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image correctness of two models from the four cells of a paired 2x2 table."""
    a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    return np.array(a), np.array(b)


def test_mcnemar_exact_matches_armitage_and_berry():
    # Armitage & Berry (1994), Statistical Methods in Medical Research, p. 127, as worked by
    # StatsDirect's exact matched-pairs test: two culture media on 50 sputum specimens,
    # growth on both 20, on A only 12, on B only 2, on neither 16: two-sided P = 0.0129.
    a, b = pairs(20, 12, 2, 16)
    assert mcnemar_exact(a, b) == pytest.approx(0.0129, abs=5e-5)
    assert mcnemar_exact(b, a) == mcnemar_exact(a, b)
    # Fagerland, Lydersen & Laake (2013), BMC Med Res Methodol 13:91, Table 1: discordant
    # pairs 1 and 7, exact conditional p = 0.070.
    assert mcnemar_exact(*pairs(1, 1, 7, 3)) == pytest.approx(0.0703, abs=5e-5)


def test_mcnemar_exact_agrees_with_scipy_and_ties_itself():
    a, _ = pairs(700, 30, 0, 70)
    assert mcnemar_exact(a, a) == 1.0  # no discordant image
    for only_a, only_b in [(0, 1), (5, 5), (9, 30), (40, 21), (300, 270)]:
        expected = binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue
        assert mcnemar_exact(*pairs(500, only_a, only_b, 50)) == pytest.approx(expected)
    with pytest.raises(ValueError):
        mcnemar_exact(np.ones(3, bool), np.ones(4, bool))


def test_classes_confidence_and_the_confusion_matrix():
    sigmoid = np.array([0.1, 0.5, 0.51, 0.97], np.float32)
    assert list(predicted_classes(sigmoid)) == [0, 0, 1, 1]  # Keras counts > 0.5 as class 1
    assert predicted_confidence(sigmoid) == pytest.approx([0.9, 0.5, 0.51, 0.97])
    softmax = np.array([[0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    assert list(predicted_classes(softmax)) == [1, 0, 2]
    assert predicted_confidence(softmax) == pytest.approx([0.7, 0.6, 0.8])
    matrix = confusion_matrix([0, 0, 1, 1, 1, 2], [0, 1, 1, 1, 0, 0], 3)
    assert matrix.tolist() == [[1, 1, 0], [1, 2, 0], [1, 0, 0]]
    precision, recall = precision_recall(matrix)
    assert precision[:2] == pytest.approx([1 / 3, 2 / 3]) and np.isnan(precision[2])
    assert recall == pytest.approx([0.5, 2 / 3, 0.0])


def test_the_store_keeps_predictions_small_and_intervals_beside_accuracies(tmp_path):
    store = RunStore(tmp_path / "run")
    store.create()
    counts = {"train": {"a": 8, "b": 8}, "validation": {"a": 50, "b": 50}, "test": {"a": 100}}
    store.write_run_info({"counts": counts})
    assert store.predictions(0, "validation") is None
    store.save_predictions(0, "validation", np.linspace(0, 1, 100).reshape(100, 1))
    stored = store.predictions(0, "validation")
    assert stored.dtype == np.float32 and stored.shape == (100,)
    assert (tmp_path / "run" / "predictions" / "validation-trial-0.npy").stat().st_size < 600
    store.save_split_images("test", ["rel/a.jpg", "/abs/b.jpg"], np.array([0, 1]))
    files, labels = store.split_images("test")
    assert files[1] == "/abs/b.jpg" and files[0].endswith("/rel/a.jpg") and files[0][0] == "/"
    assert labels.tolist() == [0, 1]
    json.loads((tmp_path / "run" / "predictions" / "test-images.json").read_text())

    store.begin_trial(0, {"lr": 0.01})
    store.finish_trial(0, {"status": "complete", "val_accuracy": 0.81})
    store.begin_trial(1, {"lr": 0.1})
    store.finish_trial(1, {"status": "failed", "error": "nan_loss"})
    store.set_test_accuracy(0, 0.81)
    rows = store.trials().set_index("trial_id")
    assert (rows.loc[0, "val_accuracy_low"], rows.loc[0, "val_accuracy_high"]) == pytest.approx(
        wilson_interval(81, 100)
    )
    assert (rows.loc[0, "test_accuracy_low"], rows.loc[0, "test_accuracy_high"]) == pytest.approx(
        wilson_interval(81, 100)
    )
    assert rows.loc[1, ["val_accuracy_low", "test_accuracy_high"]].isna().all()
    # Rebuilt from an Optuna study, whose rows carry no intervals: they are computed again.
    store.replace_all([{"trial_id": 0, "status": "complete", "val_accuracy": 0.5}], [])
    row = store.trials().iloc[0]
    assert (row["val_accuracy_low"], row["val_accuracy_high"]) == pytest.approx(
        wilson_interval(50, 100)
    )
