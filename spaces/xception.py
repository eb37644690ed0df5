"""`xception`: the small Xception of keras.io's "Image classification from scratch" (seed 004).

Entry Conv2D(128, stride 2), then blocks of two SeparableConv2D + BatchNorm with a strided 1x1
residual projection (256, 512, 728 filters), a SeparableConv2D(1024) exit, global average
pooling, Dropout(0.25) and Adam(3e-4). The search varies entry width, block count and widths,
exit width, dropout and learning rate.
"""

from __future__ import annotations

import keras
from keras import layers

from spaces import Space, blocks
from spaces.context import SpaceContext

MAX_BLOCK_FILTERS = 728


def block_widths(first: int, count: int) -> list[int]:
    """keras.io doubles the width per block and stops at 728: 256 -> [256, 512, 728]."""
    return [min(first * 2**i, MAX_BLOCK_FILTERS) for i in range(count)]


def build(hp, ctx: SpaceContext) -> keras.Model:
    inputs = blocks.image_input(ctx)
    x = blocks.augmentation(hp, inputs, defaults={"flip": "horizontal", "rotation": 0.1})
    x = blocks.scaling(x, "rescale")
    x = layers.Conv2D(
        hp.Choice("entry_filters", [32, 64, 128], default=128), 3, strides=2, padding="same"
    )(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    previous = x
    widths = block_widths(
        hp.Choice("block_filters", [64, 128, 256], default=256), hp.Int("blocks", 1, 4, default=3)
    )
    for width in widths:
        for _ in range(2):
            x = layers.Activation("relu")(x)
            x = layers.SeparableConv2D(width, 3, padding="same")(x)
            x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        residual = layers.Conv2D(width, 1, strides=2, padding="same")(previous)
        x = layers.add([x, residual])
        previous = x
    x = layers.SeparableConv2D(
        hp.Choice("exit_filters", [256, 512, 1024], default=1024), 3, padding="same"
    )(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(hp.Float("dropout", 0.0, 0.5, step=0.05, default=0.25))(x)
    model = keras.Model(inputs, blocks.classifier(x, ctx.num_classes), name="small_xception")
    lr = hp.Float("learning_rate", 1e-4, 1e-2, sampling="log", default=3e-4)
    return blocks.compile_model(model, keras.optimizers.Adam(lr), ctx.num_classes)


SPACE = Space(name="xception", build=build)
