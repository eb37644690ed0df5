"""What a trial's model costs where it ships: its float32 TFLite size and its latency.

`--measure-deploy` measures every complete trial at its kept weights: the inference model
(search.export.inference_model, augmentation removed) converted to TFLite, then run by the TFLite
interpreter on this machine's CPU with one thread and batch 1, the median of LATENCY_RUNS timed
runs after WARMUP_RUNS, with the interquartile range as its spread.
"""

from __future__ import annotations

import time

import keras
import numpy as np

from search.errors import UsageError
from search.export import inference_model, tflite_bytes
from search.predict import open_interpreter
from search.schema import DEPLOY_COLUMNS

LATENCY_RUNS = 30
WARMUP_RUNS = 5


def violations(figures: dict, limits: dict[str, float]) -> dict[str, float]:
    """How far `figures` (a trial's row) exceed each limit (column -> figure - limit, positive
    when over it): Optuna's constraints, feasible when every value is at most 0. A figure that
    could not be measured counts as over its limit."""
    over = {}
    for column, limit in limits.items():
        value = figures.get(column)
        over[column] = float("inf") if value is None else float(value) - limit
    return over


def measure_deploy(model: keras.Model, image_size: int, runs: int = LATENCY_RUNS) -> dict:
    """DEPLOY_COLUMNS of `model`; a model TFLite cannot convert gets None, with the reason."""
    start = time.perf_counter()
    try:
        flat = tflite_bytes(inference_model(model))
    except UsageError as error:
        return dict.fromkeys(DEPLOY_COLUMNS) | {"deploy_error": str(error)}
    timings = _latencies(flat, image_size, runs)
    low, median, high = np.percentile(timings, [25, 50, 75])
    return {
        "tflite_kb": round(len(flat) / 1024, 1),
        "latency_ms": round(float(median), 3),
        "latency_iqr_ms": round(float(high - low), 3),
        "deploy_s": round(time.perf_counter() - start, 2),
    }


def _latencies(flat: bytes, image_size: int, runs: int) -> np.ndarray:
    """Milliseconds per invocation of the TFLite model on one image, one thread."""
    interpreter = open_interpreter(model_content=flat, num_threads=1)
    source = interpreter.get_input_details()[0]
    image = np.random.default_rng(0).integers(0, 256, (1, image_size, image_size, 3))
    interpreter.set_tensor(source["index"], image.astype(source["dtype"]))
    for _ in range(WARMUP_RUNS):
        interpreter.invoke()
    timings = []
    for _ in range(runs):
        begin = time.perf_counter()
        interpreter.invoke()
        timings.append((time.perf_counter() - begin) * 1000)
    return np.array(timings)
