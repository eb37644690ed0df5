"""Pipelines over the decoded images (uint8) or cached base features, as `fit` takes them on
the active Keras backend (search.runtime; on TensorFlow, tf.data).

An epoch shuffles indices, not images, and gathers each batch in a parallel map, prefetched,
so the model never waits on Python slicing (Keras's own NumPy adapter reaches about half the
model-bound speed on small models, bench/README.md). Arrays that fit in a quarter of the
machine's memory are held whole in host memory; larger ones (memory-mapped from the on-disk
cache) are read batch by batch from the map, so a data set larger than memory still trains.
"""

from __future__ import annotations

import os

import numpy as np

from search.runtime import Dataset, get_runtime

MEMORY_SHARE = 0.25  # of physical memory, for arrays held whole


def in_memory_limit() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * MEMORY_SHARE)
    except (OSError, ValueError):
        return 2**31


def training_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    seed: int,
    limit: int | None = None,
    drop_remainder: bool = False,
) -> Dataset:
    """Batches of (x, y) in a new seeded order every epoch; the last batch may be smaller.
    `limit`: the most bytes held whole (default: a quarter of memory).
    `drop_remainder`: leave out the smaller last batch (XLA compiles a program per batch
    shape), unless it is the only batch; the order changes every epoch, so no image is
    left out of every epoch."""
    return get_runtime().training_dataset(
        x,
        y,
        batch_size,
        seed=seed,
        limit=_limit(limit),
        drop_remainder=drop_remainder and len(y) >= batch_size,
    )


def evaluation_dataset(
    x: np.ndarray, y: np.ndarray, batch_size: int, *, limit: int | None = None
) -> Dataset:
    """Batches of (x, y) in order."""
    return get_runtime().evaluation_dataset(x, y, batch_size, limit=_limit(limit))


def subset_dataset(
    x: np.ndarray,
    y: np.ndarray,
    indices: np.ndarray,
    *,
    batch_size: int,
    limit: int | None = None,
) -> Dataset:
    """Batches of (x, y) of the rows `indices`, in that order, gathered from the same arrays
    as every other pipeline over `x`, so a sample of the training images copies none of them."""
    return get_runtime().subset_dataset(x, y, indices, batch_size=batch_size, limit=_limit(limit))


def _limit(limit: int | None) -> int:
    return in_memory_limit() if limit is None else limit
