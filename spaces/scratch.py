"""`scratch`: the documents' small CNN, searched.

Seeds 000-003 stack Conv2D + MaxPooling2D blocks (16/32/64, 32/64/64 or 32/32/32 filters,
kernel 3, "same" or "valid" padding), drop out after a block or before the last pooling,
flatten, and add one ReLU dense layer (512, 128 or 64 units) and dropout, on inputs rescaled by
1/255, trained with Adam at a constant learning rate.

Beyond the documents (issue 22), each with the documents' choice as its default so their models
stay points of the space: batch normalisation, residual blocks, global average pooling, up to
256 filters in blocks after the first, AdamW with a searched weight decay, a cosine
learning-rate decay over the trial's --epochs, and label smoothing.
"""

from __future__ import annotations

import keras
from keras import layers

from spaces import Space, blocks
from spaces.context import SpaceContext

MAX_BLOCKS = 4
# The documents use up to 64 filters a block; later blocks may be wider (issue 22). The first
# stays at 128: before any pooling, a wider one would flatten a 160 px one-block model into a
# dense layer larger than any the space held before.
MAX_FIRST_FILTERS, MAX_FILTERS = 128, 256
PADDINGS = ["same", "valid"]
VALID_PADDING_BLOCKS = 3
CONV_DROPOUT_POSITIONS = ["after_pool", "before_pool"]


def _block_hyperparameters(hp, i: int) -> tuple[int | None, float | None]:
    """Block i's filters and the dropout after it. Both are declared in every trial, active
    only when the block exists (the dropout only when another block follows), so that Keras
    Tuner sees the whole space up front (as grid and Bayesian search need)."""
    with hp.conditional_scope("conv_blocks", list(range(i, MAX_BLOCKS + 1))):
        widest = MAX_FIRST_FILTERS if i == 1 else MAX_FILTERS
        filters = hp.Int(f"filters_{i}", 16, widest, step=16, default=min(16 * 2 ** (i - 1), 128))
    if i == MAX_BLOCKS:
        return filters, None
    # Seed 000's improved model drops 0.3 after its first block; conv_dropout follows the last.
    with hp.conditional_scope("conv_blocks", list(range(i + 1, MAX_BLOCKS + 1))):
        dropout = hp.Float(f"block_dropout_{i}", 0.0, 0.5, step=0.05, default=0.0)
    return filters, dropout


def features(hp, x):
    """Conv blocks, dropout, pooling and the optional dense layer: everything before the output."""
    n_blocks = hp.Int("conv_blocks", 1, MAX_BLOCKS, default=3)
    kernel_size = hp.Choice("kernel_size", [3, 5], default=3)
    batch_norm = hp.Boolean("batch_norm", default=False)
    # Residual blocks, as in keras.io's small Xception (spaces.blocks.conv_block).
    residual = hp.Boolean("residual", default=False)
    # Seeds 001-003 keep Keras's default "valid" padding (seed 000 pads with "same"), with 3x3
    # kernels and at most 3 blocks. It is offered for 3x3 kernels and the first 3 blocks only,
    # so every point still builds at 32 px, the smallest image size: a 5x5 or a fourth "valid"
    # convolution would have no pixels left there.
    with hp.conditional_scope("kernel_size", [3]):
        padding = hp.Choice("padding", PADDINGS, default="same") or "same"
    conv_dropout = layers.Dropout(
        hp.Float("conv_dropout", 0.0, 0.5, step=0.05, default=0.0), name="conv_dropout"
    )
    # Seeds 001 and 003 drop between the last Conv2D and its pooling, not after the pooling.
    position = hp.Choice("conv_dropout_position", CONV_DROPOUT_POSITIONS, default="after_pool")
    for i in range(1, MAX_BLOCKS + 1):
        filters, block_dropout = _block_hyperparameters(hp, i)
        if i > n_blocks:
            continue
        last = i == n_blocks
        before_pool = conv_dropout if last and position == "before_pool" else None
        block_padding = padding if i <= VALID_PADDING_BLOCKS else "same"
        x = blocks.conv_block(
            x,
            filters,
            kernel_size,
            batch_norm=batch_norm,
            index=i,
            padding=block_padding,
            dropout_before_pool=before_pool,
            residual=residual,
        )
        if block_dropout:
            x = layers.Dropout(block_dropout, name=f"block_dropout_{i}")(x)
    if position == "after_pool":
        x = conv_dropout(x)
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


def classifier_model(hp, ctx: SpaceContext, *, inputs, x) -> keras.Model:
    """Finish a scratch-style model on `x` and compile it: by default with Adam at a constant
    learning rate and no label smoothing, as every document does."""
    outputs = blocks.classifier(features(hp, x), ctx.num_classes)
    model = keras.Model(inputs, outputs, name="scratch_cnn")
    lr = hp.Float("learning_rate", 1e-4, 1e-2, sampling="log", default=1e-3)
    smoothing = hp.Float("label_smoothing", 0.0, 0.2, step=0.05, default=0.0)
    return blocks.compile_model(
        model,
        blocks.optimizer(hp, lr, ctx.train_steps),
        ctx.num_classes,
        label_smoothing=smoothing,
    )


def build(hp, ctx: SpaceContext) -> keras.Model:
    inputs = blocks.image_input(ctx)
    return classifier_model(hp, ctx, inputs=inputs, x=blocks.scaling(inputs, "rescale"))


SPACE = Space(name="scratch", build=build)
