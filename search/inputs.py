"""tf.data pipelines over in-memory arrays: decoded images (uint8) or cached base features.

The arrays become one tensor each; an epoch shuffles indices, not images, and gathers each
batch in a parallel map, prefetched, so the model never waits on Python slicing (Keras's own
NumPy adapter reaches about half the model-bound speed on small models, bench/README.md).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def _batches(x: np.ndarray, y: np.ndarray, indices: tf.data.Dataset) -> tf.data.Dataset:
    images, labels = tf.constant(x), tf.constant(y)
    return indices.map(
        lambda batch: (tf.gather(images, batch), tf.gather(labels, batch)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    ).prefetch(tf.data.AUTOTUNE)


def training_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> tf.data.Dataset:
    """Batches of (x, y) in a new seeded order every epoch; the last batch may be smaller."""
    order = tf.data.Dataset.range(len(y)).shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    return _batches(x, y, order.batch(batch_size))


def evaluation_dataset(x: np.ndarray, y: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Batches of (x, y) in order."""
    return _batches(x, y, tf.data.Dataset.range(len(y)).batch(batch_size))
