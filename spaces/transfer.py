"""`transfer`: a pretrained base (`backbone`, among the run's `ctx.backbone_choices`;
MobileNetV2 by default) with a small head, frozen or fine-tuned.

Follows the TF transfer-learning tutorial (seed 003) and model 4 of seeds 001/002:
augmentation, `preprocess_input`, the base called with training=False and its BatchNorm layers
kept frozen while fine-tuning, so they stay in inference mode, global pooling, an optional dense
layer with dropout after it (or before it, as seeds 001 and 003 do) and one output unit.
Fine-tuning unfreezes the base from `fine_tune_at` on, a fraction of its layers so that it means
the same on every backbone (the tutorial's layer 100 of MobileNetV2's 154 is 0.65), with RMSprop
at a low learning rate, after the head has been trained on the frozen base.
"""

from __future__ import annotations

import keras
from keras import layers

from spaces import BACKBONE, FINE_TUNE_AT, Space, blocks
from spaces.backbones import build_backbone, get_backbone
from spaces.context import SpaceContext

DROPOUT_POSITIONS = ["after_dense", "before_dense"]
# Read only by the second stage: trials that differ only in these share their first stage.
SECOND_STAGE = ("mode", "fine_tune_at", "fine_tune_learning_rate")


def build(hp, ctx: SpaceContext) -> keras.Model:
    inputs = blocks.image_input(ctx)
    x = blocks.augmentation(hp, inputs, defaults={"flip": "horizontal", "rotation": 0.2})
    names = [choice.name for choice in ctx.backbone_choices]
    chosen = ctx.backbone_named(hp.Choice("backbone", names, default=ctx.backbone.name))
    x = get_backbone(chosen.name).preprocess(x)
    base = build_backbone(chosen, ctx.input_shape)
    base.trainable = False
    x = base(x, training=False)
    if hp.Choice("pooling", ["avg", "max"], default="avg") == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    else:
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    units = hp.Choice("dense_units", [0, 32, 64, 128], default=0)
    # Declared in every trial, active only with a dense layer: seeds 001 and 003 drop before it.
    with hp.conditional_scope("dense_units", [32, 64, 128]):
        position = hp.Choice("dropout_position", DROPOUT_POSITIONS, default="after_dense")
    dropout = layers.Dropout(hp.Float("dropout", 0.0, 0.5, step=0.05, default=0.2), name="dropout")
    if position == "before_dense":
        x = dropout(x)
    if units:
        x = layers.Dense(units, activation="relu", name="dense")(x)
    if position != "before_dense":
        x = dropout(x)
    name = f"{chosen.name}_transfer"
    model = keras.Model(inputs, blocks.classifier(x, ctx.num_classes), name=name)
    lr = hp.Float("learning_rate", 1e-5, 1e-2, sampling="log", default=1e-4)
    hp.Choice("mode", ["frozen", "fine_tune"], default="frozen")
    # Declared in every trial, active only when fine-tuning (read back by `fine_tune`).
    with hp.conditional_scope("mode", ["fine_tune"]):
        hp.Float("fine_tune_at", 0.0, 1.0, step=0.05, default=FINE_TUNE_AT)
        hp.Float("fine_tune_learning_rate", 1e-6, 1e-4, sampling="log", default=1e-5)
    return blocks.compile_model(model, keras.optimizers.Adam(lr), ctx.num_classes)


def fine_tunes(hp) -> bool:
    return hp.get("mode") == "fine_tune"


def fine_tune(hp, model: keras.Model) -> bool:
    """Second stage: unfreeze the base from `fine_tune_at` on. False when the trial stays frozen."""
    if not fine_tunes(hp):
        return False
    base = model.get_layer(BACKBONE)
    base.trainable = True
    for layer in base.layers[: frozen_layers(hp.get("fine_tune_at"), len(base.layers))]:
        layer.trainable = False
    # Keras 3's fit calls the model with training=True, which overrides the training=False
    # the base was called with (keras-team/keras#20285): batch norm would learn this data's
    # statistics. A BatchNormalization layer that is not trainable runs in inference mode.
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    optimizer = keras.optimizers.RMSprop(hp.get("fine_tune_learning_rate"))
    model.compile(optimizer=optimizer, loss=model.loss, metrics=["accuracy"])
    return True


def frozen_layers(fine_tune_at: float, layers: int) -> int:
    """How many of the base's first `layers` stay frozen. Runs stored before fine_tune_at was
    a fraction hold a layer index (0 to 150), which a resumed Keras Tuner oracle still draws."""
    return int(fine_tune_at) if fine_tune_at > 1 else round(fine_tune_at * layers)


SPACE = Space(
    name="transfer",
    build=build,
    fine_tune=fine_tune,
    fine_tunes=fine_tunes,
    second_stage=SECOND_STAGE,
    uses_backbone=True,
)
