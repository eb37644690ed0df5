"""What the parts of one trial share while it trains: its epoch rows, the back end's hooks, the
phase trained last and what was measured on the kept weights."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras
    import numpy as np

    from search.checkpoint import Checkpoint
    from search.data import ImageData


@dataclass
class Phase:
    """What a phase trains: the full model on images, or the head on cached features. What is
    measured once training ends runs on the last one, which holds the kept weights."""

    model: keras.Model
    train_x: np.ndarray
    val_x: np.ndarray


@dataclass
class TrialFit:
    """One attempt at a trial (a retry at half the batch is another): what its phases share."""

    trial_id: int
    data: ImageData  # the images it trains on (with --image-sizes, at its model's size)
    rows: list[dict]
    extra_callbacks: list[keras.callbacks.Callback]
    on_epoch: Callable[[dict], None] | None
    batch_size: int
    started: float  # time.perf_counter() when the trial's run began
    model: keras.Model | None = None
    features: str | None = None
    head_from_trial: int | None = None
    jit: bool | None = None
    phase: Phase | None = None  # the last phase trained (or a reused head)
    clean: dict | None = None  # CLEAN_KEYS measured on the kept weights once training ended
    predictions: np.ndarray | None = None  # on the validation split, with the kept weights
    resumed: Checkpoint | None = None  # the checkpoint the trial went on from

    def trained_s(self) -> float:
        """Seconds of training, with those before the checkpoint it went on from."""
        before = self.resumed.seconds if self.resumed is not None else 0.0
        return before + time.perf_counter() - self.started
