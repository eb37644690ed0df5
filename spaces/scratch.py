"""`scratch`: the documents' small CNN, searched.

Seeds 000-003 stack Conv2D + MaxPooling2D blocks (16/32/64 or 32/64/64 filters, kernel 3),
flatten, one ReLU dense layer (512, 128 or 64 units) and dropout, on inputs rescaled by 1/255.
"""

from __future__ import annotations

import keras
from keras import layers

from spaces import blocks
from spaces.context import SpaceContext

MAX_BLOCKS = 4


def features(hp, x):
    """Conv blocks, dropout, pooling and the optional dense layer: everything before the output."""
    n_blocks = hp.Int("conv_blocks", 1, MAX_BLOCKS, default=3)
    kernel_size = hp.Choice("kernel_size", [3, 5], default=3)
    batch_norm = hp.Boolean("batch_norm", default=False)
    # Every block's filters are declared, active only when the block exists, so that Keras
    # Tuner sees the whole space up front (as grid and Bayesian search need).
    for i in range(1, MAX_BLOCKS + 1):
        with hp.conditional_scope("conv_blocks", list(range(i, MAX_BLOCKS + 1))):
            filters = hp.Int(f"filters_{i}", 16, 128, step=16, default=min(16 * 2 ** (i - 1), 128))
        if i <= n_blocks:
            x = blocks.conv_block(x, filters, kernel_size, batch_norm, index=i)
    x = layers.Dropout(
        hp.Float("conv_dropout", 0.0, 0.5, step=0.05, default=0.0), name="conv_dropout"
    )(x)
    # Flatten is what the documents do; global average pooling keeps a one-block model at
    # 160 px from growing a dense layer of hundreds of millions of weights.
    if hp.Choice("pooling", ["flatten", "global_avg"], default="flatten") == "flatten":
        x = layers.Flatten(name="flatten")(x)
    else:
        x = layers.GlobalAveragePooling2D(name="global_avg")(x)
    units = hp.Choice("dense_units", [0, 64, 128, 256, 512], default=512)
    if units:
        x = layers.Dense(units, activation="relu", name="dense")(x)
    return layers.Dropout(
        hp.Float("dense_dropout", 0.0, 0.5, step=0.05, default=0.0), name="dense_dropout"
    )(x)


def classifier_model(hp, ctx: SpaceContext, inputs, x) -> keras.Model:
    """Finish a scratch-style model on `x` and compile it with Adam, as every document does."""
    outputs = blocks.classifier(features(hp, x), ctx.num_classes)
    model = keras.Model(inputs, outputs, name="scratch_cnn")
    lr = hp.Float("learning_rate", 1e-4, 1e-2, sampling="log", default=1e-3)
    return blocks.compile_model(model, keras.optimizers.Adam(lr), ctx.num_classes)


def build(hp, ctx: SpaceContext) -> keras.Model:
    inputs = blocks.image_input(ctx)
    return classifier_model(hp, ctx, inputs, blocks.scaling(inputs, "rescale"))
