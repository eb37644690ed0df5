"""What a space needs to know about the data and the machine to build a model."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SpaceContext:
    """Facts fixed for a whole run, handed to every `build(hp, ctx)` call.

    `weights` is "imagenet", a path to a MobileNetV2 no_top weights file, or None (random
    weights: enough to learn which hyperparameters a space declares);
    `alpha` is the backbone width those weights were trained at;
    `train_steps` is the optimizer steps of a trial trained for all its --epochs (what a
    learning-rate schedule decays over), 0 when unknown.
    """

    image_size: int
    num_classes: int
    weights: str | None = "imagenet"
    alpha: float = 1.0
    train_steps: int = 0

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, 3)
