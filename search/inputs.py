"""tf.data pipelines over the decoded images (uint8) or cached base features.

An epoch shuffles indices, not images, and gathers each batch in a parallel map, prefetched,
so the model never waits on Python slicing (Keras's own NumPy adapter reaches about half the
model-bound speed on small models, bench/README.md). Arrays that fit in a quarter of the
machine's memory become one tensor in host memory; larger ones (memory-mapped from the on-disk
cache) are read batch by batch from the map, so a data set larger than memory still trains.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

MEMORY_SHARE = 0.25  # of physical memory, for arrays held as tensors
KEPT_TENSORS = 6  # images and labels of train and validation, or cached features
_TENSORS: dict[int, tuple[np.ndarray, tf.Tensor]] = {}


def in_memory_limit() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * MEMORY_SHARE)
    except (OSError, ValueError):
        return 2**31


def _tensor(x: np.ndarray) -> tf.Tensor:
    """`x` as a tensor, made once per array and kept for later trials: a fresh copy for every
    fit grew the process by the copy's size each trial (TensorFlow keeps what a dataset
    captured), and the same arrays serve every trial of a run. It is held in host memory:
    tf.data gathers batches on the CPU anyway, and GPU memory is for the models."""
    key = id(x)
    if key not in _TENSORS:
        if len(_TENSORS) >= KEPT_TENSORS:
            _TENSORS.pop(next(iter(_TENSORS)))
        with tf.device("/CPU:0"):
            _TENSORS[key] = (x, tf.constant(x))  # x kept, so its id is not reused
    return _TENSORS[key][1]


def _gather(x: np.ndarray, limit: int):
    """A function from a batch of indices to those rows of `x`, as a tensor."""
    if x.nbytes <= limit:
        rows = _tensor(x)
        return lambda batch: tf.gather(rows, batch)

    def read(batch: np.ndarray) -> np.ndarray:
        order = np.argsort(batch)  # ascending reads from the map, then back in batch order
        out = np.empty((len(batch), *x.shape[1:]), x.dtype)
        out[order] = x[batch[order]]
        return out

    def gather(batch):
        rows = tf.numpy_function(read, [batch], tf.as_dtype(x.dtype), stateful=False)
        return tf.ensure_shape(rows, (None, *x.shape[1:]))

    return gather


def _batches(x: np.ndarray, y: np.ndarray, indices: tf.data.Dataset, *, limit: int | None):
    gather_x = _gather(x, in_memory_limit() if limit is None else limit)
    labels = _tensor(y)
    return indices.map(
        lambda batch: (gather_x(batch), tf.gather(labels, batch)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    ).prefetch(tf.data.AUTOTUNE)


def training_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    seed: int,
    limit: int | None = None,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Batches of (x, y) in a new seeded order every epoch; the last batch may be smaller.
    `limit`: the most bytes held as one tensor (default: a quarter of memory).
    `drop_remainder`: leave out the smaller last batch (XLA compiles a program per batch
    shape), unless it is the only batch; the order changes every epoch, so no image is
    left out of every epoch."""
    order = tf.data.Dataset.range(len(y)).shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    drop = drop_remainder and len(y) >= batch_size
    return _batches(x, y, order.batch(batch_size, drop_remainder=drop), limit=limit)


def evaluation_dataset(
    x: np.ndarray, y: np.ndarray, batch_size: int, *, limit: int | None = None
) -> tf.data.Dataset:
    """Batches of (x, y) in order."""
    return _batches(x, y, tf.data.Dataset.range(len(y)).batch(batch_size), limit=limit)


def subset_dataset(
    x: np.ndarray,
    y: np.ndarray,
    indices: np.ndarray,
    *,
    batch_size: int,
    limit: int | None = None,
) -> tf.data.Dataset:
    """Batches of (x, y) of the rows `indices`, in that order, gathered from the same tensors
    as every other pipeline over `x`, so a sample of the training images copies none of them."""
    return _batches(
        x, y, tf.data.Dataset.from_tensor_slices(indices).batch(batch_size), limit=limit
    )
