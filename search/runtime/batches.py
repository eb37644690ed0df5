"""Batches of in-memory arrays as a `keras.utils.PyDataset`, the input pipeline of the Keras
backends other than TensorFlow: Keras feeds a PyDataset to `fit` on every backend, so PyTorch
and JAX train from the decoded images without importing TensorFlow.

Batches are gathered by a thread pool of Keras's (`workers`), which overlaps slicing the next
batches with the model's step: NumPy copies rows without holding the GIL.
"""

from __future__ import annotations

import keras
import numpy as np

PIPELINE_WORKERS = 2  # threads gathering batches ahead of the model (bench/backends.py)
QUEUED_BATCHES = 8


class ArrayBatches(keras.utils.PyDataset):
    """Batches of the rows `indices` of (x, y), `batch_size` at a time; with `seed`, in a new
    seeded order every epoch (the epoch's number is mixed into the seed, so a resumed run's
    epoch 3 sees the order an unbroken run's epoch 3 saw), leaving out a smaller last batch
    when `drop_remainder`. Rows are read in ascending order, so a memory-mapped `x` is read
    forwards."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        *,
        indices: np.ndarray | None = None,
        seed: int | None = None,
        drop_remainder: bool = False,
    ):
        super().__init__(workers=PIPELINE_WORKERS, max_queue_size=QUEUED_BATCHES)
        self.x, self.y, self.batch_size = x, y, batch_size
        self.rows = np.arange(len(y)) if indices is None else np.asarray(indices)
        self.seed, self.drop_remainder = seed, drop_remainder
        self.epoch = 0
        self.order = self._order()

    def __len__(self) -> int:
        full, rest = divmod(len(self.rows), self.batch_size)
        return full if self.drop_remainder and full else full + bool(rest)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        batch = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        ascending = np.argsort(batch)
        x = np.empty((len(batch), *self.x.shape[1:]), self.x.dtype)
        x[ascending] = self.x[batch[ascending]]
        return x, self.y[batch]

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._order()

    def _order(self) -> np.ndarray:
        if self.seed is None:
            return self.rows
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.rows)
