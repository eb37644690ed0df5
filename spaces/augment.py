"""`augment`: the scratch CNN with searched augmentation strengths in front of it.

Seed 000 augments with rotation 45 degrees, shifts 0.15, zoom 0.5 and horizontal flips;
seeds 001-003 with RandomFlip and RandomRotation(0.2).
"""

from __future__ import annotations

import keras

from spaces import Space, blocks, scratch
from spaces.context import SpaceContext


def build(hp, ctx: SpaceContext) -> keras.Model:
    inputs = blocks.image_input(ctx)
    x = blocks.augmentation(hp, inputs)
    return scratch.classifier_model(hp, ctx, inputs=inputs, x=blocks.scaling(x, "rescale"))


SPACE = Space(name="augment", build=build)
