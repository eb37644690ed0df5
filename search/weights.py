"""Resolve the weights of the backbone a space builds, before any trial starts: through its
entry in spaces/backbones.py, so this module knows no particular network or space."""

from __future__ import annotations

import http.client
import urllib.error
from pathlib import Path

from search.data import keras_home
from search.errors import UsageError, first_line
from spaces.backbones import Backbone, build_backbone, get_backbone
from spaces.context import DEFAULT_BACKBONE, BackboneWeights

# What a weights file that does not fit raises: h5py's OSError for a file it cannot read,
# Keras's ValueError (or a KeyError) for other shapes or layers. Anything else (a CUDA or
# out-of-memory error) is not about the file, and propagates.
NOT_LOADABLE = (OSError, ValueError, KeyError)


def _not_downloaded(error: Exception) -> bool:
    """Whether `error` says the ImageNet weights could not be fetched or read: a network or
    file error, or keras.utils.get_file's bare Exception wrapping urllib's URLError."""
    if isinstance(error, (*NOT_LOADABLE, http.client.HTTPException)):
        return True
    return type(error) is Exception and isinstance(error.__context__, urllib.error.URLError)


def backbone_weights(
    weights: str, image_size: int, backbone: str = DEFAULT_BACKBONE.name
) -> BackboneWeights:
    """`backbone` with the weights to load ("imagenet" or an absolute path) and the variant
    they fit, found by building it once; else a UsageError in one line."""
    entry = get_backbone(backbone)
    shape = (image_size, image_size, 3)
    if weights == "imagenet":
        return _imagenet(entry, shape)
    path = Path(weights).expanduser().resolve()
    if not path.is_file():
        raise UsageError(
            f"--weights {weights}: no such file; pass a {entry.weights_file} or 'imagenet'"
        )
    for variant in entry.variants:
        choice = entry.choice(str(path), variant)
        try:
            build_backbone(choice, shape)
            return choice
        except NOT_LOADABLE:  # another variant's file (MobileNetV2: another width): try the next
            continue
    tried = ", ".join(" ".join(f"{k}={v}" for k, v in variant) for variant in entry.variants)
    raise UsageError(
        f"--weights {weights} does not load into {entry.title} (include_top=False) at any of "
        f"{tried}; pass a {entry.weights_file}"
    )


def _imagenet(entry: Backbone, shape: tuple[int, int, int]) -> BackboneWeights:
    """The ImageNet weights from Keras's cache, downloaded if absent."""
    choice = entry.choice("imagenet")
    try:
        build_backbone(choice, shape)
    except Exception as error:
        if not _not_downloaded(error):
            raise
        raise UsageError(
            f"{entry.title} ImageNet weights are not in {keras_home() / 'models'} and could not "
            f"be downloaded ({first_line(error)}); pass --weights PATH to a {entry.weights_file}"
        ) from None
    return choice
