"""Building blocks shared by the spaces: input, augmentation, scaling, conv blocks, head.

Every model takes raw RGB pixel values in [0, 255] and carries its own augmentation and
preprocessing as layers, so an exported model needs no outside code.
"""

from __future__ import annotations

import keras
from keras import layers

from spaces.context import SpaceContext

FLIP_MODES = ["none", "horizontal", "horizontal_and_vertical"]
SCALINGS = ["rescale", "mobilenet_v2", "none"]


def image_input(ctx: SpaceContext) -> keras.KerasTensor:
    return keras.Input(shape=ctx.input_shape, name="image")


def augmentation(hp, x, defaults: dict | None = None):
    """Augmentation strengths from the documents; a zero strength adds no layer.

    Ranges: flip mode, rotation 0-0.25 of a turn, zoom 0-0.5, translation 0-0.2, contrast 0-0.3.
    Seed 000 uses rotation 45 degrees (0.125), shift 0.15 and zoom 0.5; seeds 001-003 use
    RandomFlip and RandomRotation(0.2). `defaults` lets a space start where its document does.
    """
    d = {"flip": "horizontal", "rotation": 0.1, "zoom": 0.0, "translation": 0.0, "contrast": 0.0}
    d.update(defaults or {})
    flip = hp.Choice("flip", FLIP_MODES, default=d["flip"])
    rotation = hp.Float("rotation", 0.0, 0.25, step=0.025, default=d["rotation"])
    zoom = hp.Float("zoom", 0.0, 0.5, step=0.05, default=d["zoom"])
    translation = hp.Float("translation", 0.0, 0.2, step=0.025, default=d["translation"])
    contrast = hp.Float("contrast", 0.0, 0.3, step=0.05, default=d["contrast"])
    if flip != "none":
        x = layers.RandomFlip(flip, name="flip")(x)
    if rotation > 0:
        x = layers.RandomRotation(rotation, name="rotation")(x)
    if zoom > 0:
        x = layers.RandomZoom(zoom, name="zoom")(x)
    if translation > 0:
        x = layers.RandomTranslation(translation, translation, name="translation")(x)
    if contrast > 0:
        x = layers.RandomContrast(contrast, name="contrast")(x)
    return x


def scaling(x, mode: str):
    """Map [0, 255] pixels to what the network expects.

    "mobilenet_v2" is exactly `keras.applications.mobilenet_v2.preprocess_input` ([-1, 1]),
    written as a Rescaling layer so the saved model needs no custom objects.
    """
    if mode == "rescale":
        return layers.Rescaling(1.0 / 255, name="rescale")(x)
    if mode == "mobilenet_v2":
        return layers.Rescaling(1.0 / 127.5, offset=-1.0, name="mobilenet_v2_preprocess")(x)
    if mode == "none":
        return x
    raise ValueError(f"unknown scaling {mode!r}; choose one of {SCALINGS}")


def conv_block(
    x,
    filters: int,
    kernel_size: int,
    *,
    batch_norm: bool,
    index: int,
    padding: str = "same",
    dropout_before_pool: layers.Dropout | None = None,
    residual: bool = False,
):
    """Conv2D + ReLU (+ BatchNorm) + MaxPooling2D(2), as in every document's scratch CNN.

    Seeds 001 and 003 put their dropout between the last Conv2D and its pooling, which
    `dropout_before_pool` reproduces. `residual` makes it a residual block, as in keras.io's
    small Xception: a second convolution ("same" padding), and the block's input added back
    through a 1x1 convolution (a projection, since the filters change) before the activation;
    after a "valid" first convolution the input is centre-cropped to its output's size.
    """
    shortcut = x
    x = layers.Conv2D(
        filters, kernel_size, padding=padding, use_bias=not batch_norm, name=f"conv_{index}"
    )(x)
    if batch_norm:
        x = layers.BatchNormalization(name=f"bn_{index}")(x)
    if residual:
        x = layers.Activation("relu", name=f"relu_{index}a")(x)
        x = layers.Conv2D(
            filters, kernel_size, padding="same", use_bias=not batch_norm, name=f"conv_{index}b"
        )(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"bn_{index}b")(x)
        if padding == "valid":
            shortcut = layers.Cropping2D((kernel_size - 1) // 2, name=f"crop_{index}")(shortcut)
        projected = layers.Conv2D(filters, 1, name=f"shortcut_{index}")(shortcut)
        x = layers.Add(name=f"residual_{index}")([x, projected])
    x = layers.Activation("relu", name=f"relu_{index}")(x)
    if dropout_before_pool is not None:
        x = dropout_before_pool(x)
    return layers.MaxPooling2D(2, name=f"pool_{index}")(x)


def classifier(x, num_classes: int):
    """Sigmoid unit for two classes, softmax for more; float32 so mixed precision stays stable."""
    if num_classes == 2:
        return layers.Dense(1, activation="sigmoid", dtype="float32", name="prediction")(x)
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="prediction")(x)


def compile_model(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    num_classes: int,
    *,
    label_smoothing: float = 0.0,
) -> keras.Model:
    """Cross-entropy on the run's integer labels. Label smoothing needs one-hot labels for
    more than two classes (Keras's sparse loss has none), which the runner then feeds
    (spaces.user.labels_for)."""
    if num_classes == 2:
        loss = keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
    elif label_smoothing:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    return model


def optimizer(hp, learning_rate: float, train_steps: int) -> keras.optimizers.Optimizer:
    """Adam as the documents use it, or AdamW with a searched weight decay; a constant
    learning rate as in the documents, or a cosine decay to 0 over `train_steps` (a trial's
    optimizer steps at its full --epochs)."""
    schedule = hp.Choice("lr_schedule", ["constant", "cosine"], default="constant")
    rate = learning_rate
    if schedule == "cosine" and train_steps:
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=train_steps)
    name = hp.Choice("optimizer", ["adam", "adamw"], default="adam")
    with hp.conditional_scope("optimizer", ["adamw"]):
        decay = hp.Float("weight_decay", 1e-5, 1e-2, sampling="log", default=1e-4)
    if name == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=decay)
    return keras.optimizers.Adam(rate)
