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
):
    """Conv2D + ReLU (+ BatchNorm) + MaxPooling2D(2), as in every document's scratch CNN.

    Seeds 001 and 003 put their dropout between the last Conv2D and its pooling, which
    `dropout_before_pool` reproduces.
    """
    x = layers.Conv2D(
        filters, kernel_size, padding=padding, use_bias=not batch_norm, name=f"conv_{index}"
    )(x)
    if batch_norm:
        x = layers.BatchNormalization(name=f"bn_{index}")(x)
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
    model: keras.Model, optimizer: keras.optimizers.Optimizer, num_classes: int
) -> keras.Model:
    loss = "binary_crossentropy" if num_classes == 2 else "sparse_categorical_crossentropy"
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    return model
