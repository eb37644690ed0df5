"""The pretrained bases a space can build under the BACKBONE contract, one registry entry each.

An entry says how to build the network without its top (for an input shape, weights and a
variant), how to map raw [0, 255] pixels to what it expects, and which variants a weights file
may be, so the run resolves its weights once (search/weights.py) without knowing any network,
and a space builds whichever entry `ctx.backbone` names.
Adding a backbone: one `Backbone` (or `_keras_backbone`) in `_ENTRIES` below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import keras

from spaces import BACKBONE, blocks
from spaces.context import BackboneWeights, Variant


@dataclass(frozen=True)
class Backbone:
    """One pretrained network.

    name: its key in BACKBONES, as BackboneWeights.name holds it.
    title: its name in messages ("MobileNetV2").
    build(input_shape, weights, **variant): the network without its top, named BACKBONE;
        `weights` is "imagenet" (Keras's cache, downloaded if absent), a file path or None.
    preprocess(x): raw [0, 255] pixels to what the network expects, in weightless,
        deterministic layers only, so a frozen base's features can be cached
        (search/features.py) and an exported model needs no outside code.
    variants: what a weights file may have been trained as, tried in this order; the first
        is the default and what "imagenet" loads.
    weights_file: what `--weights PATH` must name, for messages.
    """

    name: str
    title: str
    build: Callable[..., keras.Model]
    preprocess: Callable[[keras.KerasTensor], keras.KerasTensor]
    variants: tuple[Variant, ...]
    weights_file: str

    def choice(self, weights: str | None, variant: Variant | None = None) -> BackboneWeights:
        """This network with `weights`, at `variant` (by default the first)."""
        return BackboneWeights(self.name, weights, self.variants[0] if variant is None else variant)


def _mobilenet_v2(
    input_shape: tuple[int, int, int], weights: str | None, *, alpha: float = 1.0
) -> keras.Model:
    return keras.applications.MobileNetV2(
        input_shape=input_shape, alpha=alpha, include_top=False, weights=weights, name=BACKBONE
    )


def _application(
    application: Callable[..., keras.Model],
    input_shape: tuple[int, int, int],
    weights: str | None,
    **variant: float | bool,
) -> keras.Model:
    """A keras.applications network without its top, named BACKBONE. Those that take
    `include_preprocessing` keep it: their own weightless layers map [0, 255] pixels."""
    base = application(input_shape=input_shape, include_top=False, weights=weights, **variant)
    base.name = BACKBONE  # EfficientNetV2 reads its `name` argument as its size, so not there
    return base


def _raw_pixels(x: keras.KerasTensor) -> keras.KerasTensor:
    """Nothing to do: the network preprocesses [0, 255] pixels itself."""
    return x


# ResNetV2's preprocess_input ("tf" mode) is MobileNetV2's: [0, 255] to [-1, 1].
_TO_PLUS_MINUS_ONE = partial(blocks.scaling, mode="mobilenet_v2")
# Keras publishes MobileNetV2 weights at these widths; 1.0 is the documents' and is tried first.
MOBILENET_V2_ALPHAS = (1.0, 0.35, 0.5, 0.75, 1.3, 1.4)
# ... and MobileNetV3 weights at two widths, each also in a "minimalistic" form.
MOBILENET_V3_VARIANTS = tuple(
    (("alpha", alpha), ("minimalistic", minimalistic))
    for minimalistic in (False, True)
    for alpha in (1.0, 0.75)
)
DEFAULT_VARIANT: tuple[Variant, ...] = ((),)


def _keras_backbone(
    name: str,
    title: str,
    application: Callable[..., keras.Model],
    *,
    preprocess: Callable[[keras.KerasTensor], keras.KerasTensor] = _raw_pixels,
    variants: tuple[Variant, ...] = DEFAULT_VARIANT,
) -> Backbone:
    """A keras.applications network's entry."""
    return Backbone(
        name=name,
        title=title,
        build=partial(_application, application),
        preprocess=preprocess,
        variants=variants,
        weights_file=f"{title} no_top weights file (.h5 or .weights.h5)",
    )


_ENTRIES = (
    Backbone(
        name="mobilenet_v2",
        title="MobileNetV2",
        build=_mobilenet_v2,
        preprocess=_TO_PLUS_MINUS_ONE,
        variants=tuple((("alpha", alpha),) for alpha in MOBILENET_V2_ALPHAS),
        weights_file="MobileNetV2 no_top weights file (.h5)",
    ),
    _keras_backbone(
        "mobilenet_v3_small",
        "MobileNetV3Small",
        keras.applications.MobileNetV3Small,
        variants=MOBILENET_V3_VARIANTS,
    ),
    _keras_backbone(
        "mobilenet_v3_large",
        "MobileNetV3Large",
        keras.applications.MobileNetV3Large,
        variants=MOBILENET_V3_VARIANTS,
    ),
    _keras_backbone("efficientnet_v2_b0", "EfficientNetV2B0", keras.applications.EfficientNetV2B0),
    _keras_backbone(
        "resnet50_v2", "ResNet50V2", keras.applications.ResNet50V2, preprocess=_TO_PLUS_MINUS_ONE
    ),
    _keras_backbone("convnext_tiny", "ConvNeXtTiny", keras.applications.ConvNeXtTiny),
)
BACKBONES: dict[str, Backbone] = {entry.name: entry for entry in _ENTRIES}


def get_backbone(name: str) -> Backbone:
    """The registry entry `name`; a ValueError lists the names there are."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name]


# Reading the weights file takes about half as long as building the base, and every trial
# builds one: the values are read once per process. Both paths build the same layers, so they
# draw the same random initial values and a trial's head starts the same either way.
_PRETRAINED: dict[tuple, list] = {}


def build_backbone(choice: BackboneWeights, input_shape: tuple[int, int, int]) -> keras.Model:
    """`choice`'s network without its top, named BACKBONE, with its weights (random for None)."""
    key = _weights_key(choice, input_shape)
    cached = _PRETRAINED.get(key)
    weights = None if cached is not None else choice.weights
    base = get_backbone(choice.name).build(input_shape, weights, **choice.options)
    if cached is not None:
        base.set_weights(cached)
    elif choice.weights is not None:
        # One weights source at a time (a run uses one backbone), at each input size a run
        # searches (--image-sizes): Keras picks its ImageNet file by the size.
        for other in [k for k in _PRETRAINED if k[:-1] != key[:-1]]:
            del _PRETRAINED[other]
        _PRETRAINED[key] = base.get_weights()
    return base


def _weights_key(choice: BackboneWeights, input_shape: tuple[int, int, int]) -> tuple:
    stamp = None
    if choice.weights not in (None, "imagenet"):
        stat = Path(choice.weights).stat()  # a rewritten file is read again
        stamp = (stat.st_mtime_ns, stat.st_size)
    return (choice, stamp, input_shape)
