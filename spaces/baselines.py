"""`baselines`: the documents' models as named, exact presets.

Each preset is one point of the space it belongs to, written as that space's hyperparameter
values, so it trains through the normal trial path, and a search of that space can start from
it (`for_space`). As a space of its own, `baselines` picks one preset per trial (`baseline`)
and builds it through its space with the preset's values, recording them in the trial so the
run store shows the preset's name and values.

Where a document's model cannot be written in its space, the preset's `differences` say what
differs and why; everything else is the document's, layer for layer. Image size, batch size and
backbone weights are the run's settings (`--image-size`, `--batch-size`, `--weights`), not the
preset's.

No Keras is imported until a model is built, so the bench and the model card read the presets
cheaply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from spaces import FINE_TUNE_AT, Space, get_space
from spaces.context import DEFAULT_BACKBONE, SpaceContext

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class Preset:
    """One document's model. `reported_accuracy` is the validation accuracy the document
    reports (the middle of a range it gives), `reported_as` its own words, `epochs` what it
    trains for (per phase when fine-tuning)."""

    space: str
    values: dict
    document: str
    reported_accuracy: float
    reported_as: str
    epochs: int
    differences: tuple[str, ...] = ()
    reported_test_accuracy: float | None = None


TF_IMAGE_CLASSIFICATION = 'TF tutorial "Image classification" (ImageDataGenerator), seed 000'
POST_5 = 'blog "Post 5 (Image Classification with Tensorflow)", seed 001'
FOUR_MODELS = "blog building four cats-vs-dogs models, seed 002"
HW3 = 'blog "Image Classification" (HW3), seed 003'
TF_TRANSFER = (
    'TF tutorial "Transfer learning and fine-tuning" (tensorflow.org/tutorials/images/'
    "transfer_learning; cited by the issue, not among the seeds)"
)
KERAS_IO = 'keras.io "Image classification from scratch" (small Xception), seed 004'

TWO_SIGMOIDS = (
    "output: Dense(2, sigmoid) trained with sparse categorical cross-entropy (which renormalises "
    "the two sigmoids) becomes the framework's two-class head, Dense(1, sigmoid) with binary "
    "cross-entropy; both rank an image by one learned score"
)
TWO_LOGITS = (
    "output: Dense(2) logits with SparseCategoricalCrossentropy(from_logits=True) becomes "
    "Dense(1, sigmoid) with binary cross-entropy: a two-way softmax is the sigmoid of the logit "
    "difference, so the model family is the same"
)
ONE_LOGIT = (
    "output: Dense(1) logits with BinaryCrossentropy(from_logits=True) is Dense(1, sigmoid) "
    "with binary cross-entropy, the same model"
)
PREPROCESS_FIRST = (
    "preprocess_input runs after the augmentation instead of before it: flips and bilinear "
    "rotation with reflected borders commute with an affine rescaling, so this is the same"
)
IMAGENET = "backbone weights are the run's --weights (the document uses ImageNet)"


def _augmentation(flip: str, rotation: float, *, zoom: float = 0.0, translation: float = 0.0):
    return {
        "flip": flip,
        "rotation": rotation,
        "zoom": zoom,
        "translation": translation,
        "contrast": 0.0,
    }


NO_AUGMENTATION = _augmentation("none", 0.0)


# The from-scratch spaces' choices beyond the documents (issue 22), at the documents' values:
# plain blocks, Adam at a constant learning rate, no label smoothing.
SCRATCH_TRAINING = {
    "residual": False,
    "optimizer": "adam",
    "lr_schedule": "constant",
    "label_smoothing": 0.0,
}


def _cnn(
    filters: list[int],
    padding: str,
    dense_units: int,
    *,
    batch_norm: bool = False,
    block_dropout: dict[int, float] | None = None,
    conv_dropout: float = 0.0,
    conv_dropout_position: str = "after_pool",
    dense_dropout: float = 0.0,
) -> dict:
    """A `scratch` point: kernel 3, flatten and Adam at Keras's default 1e-3, as every document."""
    values = {
        "conv_blocks": len(filters),
        "kernel_size": 3,
        "batch_norm": batch_norm,
        "padding": padding,
        "conv_dropout": conv_dropout,
        "conv_dropout_position": conv_dropout_position,
        "pooling": "flatten",
        "dense_units": dense_units,
        "dense_dropout": dense_dropout,
        "learning_rate": 1e-3,
    } | SCRATCH_TRAINING
    values |= {f"filters_{i}": f for i, f in enumerate(filters, 1)}
    # Only blocks followed by another carry a dropout of their own.
    dropouts = block_dropout or {}
    values |= {f"block_dropout_{i}": dropouts.get(i, 0.0) for i in range(1, len(filters))}
    return values


def _transfer(
    flip: str,
    pooling: str,
    dense_units: int,
    *,
    dropout: float,
    learning_rate: float = 1e-3,
    dropout_position: str = "after_dense",
    mode: str = "frozen",
) -> dict:
    """A `transfer` point; the documents all augment with RandomRotation(0.2)."""
    values = _augmentation(flip, 0.2) | {
        "backbone": DEFAULT_BACKBONE.name,  # the documents' MobileNetV2
        "pooling": pooling,
        "dense_units": dense_units,
        "dropout": dropout,
        "learning_rate": learning_rate,
        "mode": mode,
    }
    if dense_units:
        values["dropout_position"] = dropout_position
    if mode == "fine_tune":  # the tutorial: from layer 100 on, RMSprop at base rate / 10
        values |= {"fine_tune_at": FINE_TUNE_AT, "fine_tune_learning_rate": 1e-5}
    return values


_POST_5_CNN = {"padding": "valid", "dense_units": 64}
_FOUR_MODELS_CNN = {"filters": [32, 64, 64], "padding": "valid", "dense_units": 128}
_FOUR_MODELS_BN_ORDER = (
    "each block is Conv2D -> BatchNormalization -> ReLU -> MaxPooling2D instead of Conv2D -> "
    "MaxPooling2D -> BatchNormalization -> ReLU: max-pooling commutes with ReLU and with "
    "BatchNorm's increasing per-channel scaling, so only BatchNorm's statistics differ (taken "
    "before the pooling instead of after it)"
)
_HW3_CNN = {
    "filters": [32, 32, 32],
    "padding": "valid",
    "dense_units": 128,
    "conv_dropout": 0.5,
    "conv_dropout_position": "before_pool",
}

PRESETS: dict[str, Preset] = {
    "seed000_cnn": Preset(
        "scratch",
        _cnn([16, 32, 64], "same", 512),
        TF_IMAGE_CLASSIFICATION,
        0.70,
        "~70% validation accuracy",
        15,
        ("images are 150 px and batches 100 in the document",),
    ),
    "seed000_cnn_dropout_augment": Preset(
        "augment",
        _cnn([16, 32, 64], "same", 512, block_dropout={1: 0.3}, conv_dropout=0.3, dense_dropout=0.1)
        | _augmentation("horizontal", 0.125, zoom=0.5, translation=0.15),
        TF_IMAGE_CLASSIFICATION,
        0.75,
        "~75% validation accuracy",
        80,
        (
            "images are 150 px and batches 100 in the document",
            "ImageDataGenerator's rotation_range=45, width/height_shift_range=0.15, zoom_range=0.5 "
            "and horizontal_flip become RandomRotation(0.125), RandomTranslation(0.15, 0.15), "
            "RandomZoom(0.5) and RandomFlip('horizontal'): the same ranges, but the layers fill "
            "borders by reflection instead of the nearest pixel, and RandomZoom keeps the aspect "
            "ratio where ImageDataGenerator zooms each axis independently",
        ),
    ),
    "seed001_model1": Preset(
        "preprocess",
        _cnn([16, 32], **_POST_5_CNN, conv_dropout=0.3, conv_dropout_position="before_pool")
        | NO_AUGMENTATION
        | {"scaling": "none"},
        POST_5,
        0.615,
        "validation accuracy between 60% and 63%",
        20,
        (TWO_SIGMOIDS,),
    ),
    "seed001_model2": Preset(
        "preprocess",
        # RandomFlip() with no mode, as seed 001 calls it, flips both ways.
        _cnn([16], **_POST_5_CNN)
        | _augmentation("horizontal_and_vertical", 0.2)
        | {"scaling": "none"},
        POST_5,
        0.585,
        "validation accuracy between 57% and 60%",
        20,
        (TWO_SIGMOIDS,),
    ),
    "seed001_model3": Preset(
        "preprocess",
        _cnn([16, 32], **_POST_5_CNN)
        | _augmentation("horizontal_and_vertical", 0.2)
        | {"scaling": "mobilenet_v2"},
        POST_5,
        0.71,
        "validation accuracy between 70% and 72%",
        20,
        (PREPROCESS_FIRST, TWO_SIGMOIDS),
    ),
    "seed001_model4": Preset(
        "transfer",
        _transfer(
            "horizontal_and_vertical", "max", 64, dropout=0.3, dropout_position="before_dense"
        ),
        POST_5,
        0.965,
        "validation accuracy between 96% and 97%; 95% on the test set",
        20,
        (PREPROCESS_FIRST, IMAGENET, TWO_SIGMOIDS),
        reported_test_accuracy=0.95,
    ),
    "seed002_model1": Preset(
        "preprocess",
        _cnn(**_FOUR_MODELS_CNN, batch_norm=True, dense_dropout=0.5)
        | NO_AUGMENTATION
        | {"scaling": "none"},
        FOUR_MODELS,
        0.635,
        "validation accuracy between 62% and 65%",
        20,
        (
            "BatchNormalization follows every block instead of only the first: the space has "
            "one BatchNorm switch for all blocks, and this preset turns it on, as the "
            "document's first block (on raw [0, 255] inputs) has it",
            _FOUR_MODELS_BN_ORDER,
            TWO_LOGITS,
        ),
    ),
    "seed002_model2": Preset(
        "preprocess",
        _cnn(**_FOUR_MODELS_CNN, batch_norm=True, dense_dropout=0.5)
        | _augmentation("horizontal_and_vertical", 0.2)
        | {"scaling": "none"},
        FOUR_MODELS,
        0.64,
        "validation accuracy between 56% and 72%",
        30,
        (_FOUR_MODELS_BN_ORDER, TWO_LOGITS),
    ),
    "seed002_model3": Preset(
        "preprocess",
        _cnn(**_FOUR_MODELS_CNN, batch_norm=True, dense_dropout=0.5)
        | _augmentation("horizontal_and_vertical", 0.2)
        | {"scaling": "mobilenet_v2"},
        FOUR_MODELS,
        0.71,
        "validation accuracy between 68% and 74%",
        20,
        (PREPROCESS_FIRST, _FOUR_MODELS_BN_ORDER, TWO_LOGITS),
    ),
    "seed002_model4": Preset(
        "transfer",
        _transfer("horizontal_and_vertical", "max", 32, dropout=0.5),
        FOUR_MODELS,
        0.9775,
        "validation accuracy between 97% and 98.5%; around 99% on the test set",
        10,
        (
            "head: the document puts RandomRotation(0.2) and two conv blocks (Conv2D 32 and 64, "
            "'same', each MaxPooling2D -> BatchNorm -> ReLU) then Flatten on the 5x5x1280 "
            "backbone features; the transfer space rotates the image and global-max-pools the "
            "features (a 5x5 map pooled twice by 2 is close to one max over it) before the same "
            "Dense(32, relu) and Dropout(0.5)",
            PREPROCESS_FIRST,
            IMAGENET,
            TWO_LOGITS,
        ),
        reported_test_accuracy=0.99,
    ),
    "seed003_model1": Preset(
        "scratch",
        _cnn(**_HW3_CNN),
        HW3,
        0.705,
        "validation accuracy between 68% and 73%",
        20,
        (TWO_LOGITS,),
    ),
    "seed003_model2": Preset(
        "augment",
        _cnn(**_HW3_CNN) | _augmentation("horizontal", 0.2),
        HW3,
        0.705,
        "validation accuracy between 68% and 73%",
        20,
        (TWO_LOGITS,),
    ),
    "seed003_model3": Preset(
        "preprocess",
        _cnn(**_HW3_CNN) | _augmentation("horizontal", 0.2) | {"scaling": "mobilenet_v2"},
        HW3,
        0.73,
        "validation accuracy between 72% and 74%",
        20,
        (PREPROCESS_FIRST, TWO_LOGITS),
    ),
    "seed003_model4": Preset(
        "transfer",
        _transfer("horizontal", "max", 128, dropout=0.5, dropout_position="before_dense"),
        HW3,
        0.985,
        "validation accuracy between 98% and 99%; 98.96% on the test set",
        20,
        (
            "head: the document drops out on the 5x5x1280 features, then MaxPooling2D(2) and "
            "Flatten (2x2x1280 = 5,120 inputs to Dense(128)); the transfer space global-max-pools "
            "(1,280 inputs) and drops out after the pooling",
            PREPROCESS_FIRST,
            IMAGENET,
            TWO_LOGITS,
        ),
        reported_test_accuracy=0.9896,
    ),
    "tf_transfer_frozen": Preset(
        "transfer",
        _transfer("horizontal", "avg", 0, dropout=0.2, learning_rate=1e-4),
        TF_TRANSFER,
        0.94,
        "~94% validation accuracy after 10 epochs on the frozen base",
        10,
        (IMAGENET, ONE_LOGIT),
    ),
    "tf_transfer_fine_tune": Preset(
        "transfer",
        _transfer("horizontal", "avg", 0, dropout=0.2, learning_rate=1e-4, mode="fine_tune"),
        TF_TRANSFER,
        0.98,
        "nearly 98% validation accuracy after 10 more epochs fine-tuning from layer 100",
        10,
        (
            "the fine-tuned weights are kept only if they beat the frozen phase on validation "
            "loss (the trial runner's rule); the tutorial keeps them",
            IMAGENET,
            ONE_LOGIT,
        ),
    ),
    "seed004_small_xception": Preset(
        "xception",
        _augmentation("horizontal", 0.1)
        | {
            "entry_filters": 128,
            "block_filters": 256,
            "blocks": 3,
            "exit_filters": 1024,
            "dropout": 0.25,
            "learning_rate": 3e-4,
        },
        KERAS_IO,
        0.9382,
        '93.82% validation accuracy at epoch 25 (">90%"), on the full Kaggle set',
        25,
        (
            "data: the document trains on the full Kaggle Cats vs Dogs set (18,728 training "
            "images at 180 px, batches of 128), 9 times cats_and_dogs_filtered's 2,000, so its "
            "accuracy is not a like-for-like target",
            "augmentation runs inside the model instead of in the tf.data pipeline; training "
            "sees the same random flips and rotations",
            ONE_LOGIT,
        ),
    ),
}


def for_space(space_name: str) -> list[dict]:
    """The presets that are points of `space_name`, as hyperparameter values to enqueue."""
    if space_name == "baselines":
        return [{"baseline": name} for name in PRESETS]
    return [dict(p.values) for p in PRESETS.values() if p.space == space_name]


def preset_of(space_name: str, values: dict) -> str | None:
    """The preset of `space_name` that a trial's active hyperparameter values are, or None.
    Values read back from trials.csv may bring whole numbers as floats and flags as text."""
    for name, preset in PRESETS.items():
        if preset.space == space_name and _same_point(values, preset.values):
            return name
    return None


def _same_point(values: dict, wanted: dict) -> bool:
    # A trial stored before SCRATCH_TRAINING's hyperparameters existed trained at their values.
    values = {k: v for k, v in SCRATCH_TRAINING.items() if k in wanted} | values
    return set(values) == set(wanted) and all(_same(values[k], v) for k, v in wanted.items())


def _same(stored, wanted) -> bool:
    if isinstance(wanted, bool):
        return str(stored).lower() == str(wanted).lower()
    if isinstance(wanted, int | float):
        try:
            return math.isclose(float(stored), wanted, rel_tol=1e-9)
        except (TypeError, ValueError):
            return False
    return stored == wanted


def preset_hyperparameters(name: str):
    """A HyperParameters holding exactly the preset's values, so its space builds that point."""
    import keras_tuner as kt

    hp = kt.HyperParameters()
    hp.values.update(PRESETS[name].values)
    return hp


def build_preset(name: str, ctx: SpaceContext) -> keras.Model:
    return get_space(PRESETS[name].space).build(preset_hyperparameters(name), ctx)


def build(hp, ctx: SpaceContext) -> keras.Model:
    name = hp.Choice("baseline", list(PRESETS))
    # The preset's values are recorded, not declared: none of them is searched, so neither back
    # end should take them for hyperparameters of this space.
    hp.values.update(PRESETS[name].values)
    return build_preset(name, ctx)


def fine_tune(hp, model: keras.Model) -> bool:
    """The preset's second stage, where its space has one (the TF tutorial's fine-tuning)."""
    name = hp.get("baseline")
    second_stage = get_space(PRESETS[name].space).fine_tune
    return second_stage is not None and second_stage(preset_hyperparameters(name), model)


# Presets are whole points: none shares a first stage with another, so none is reused.
SPACE = Space(name="baselines", build=build, fine_tune=fine_tune, uses_backbone=True)
