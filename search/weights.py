"""Find the MobileNetV2 weights a transfer search needs, before any trial starts."""

from __future__ import annotations

import http.client
import urllib.error
from pathlib import Path

from search.data import keras_home
from search.errors import UsageError, first_line
from spaces import transfer
from spaces.context import SpaceContext

# Keras publishes MobileNetV2 weights at these widths; 1.0 is the documents' and is tried first.
ALPHAS = (1.0, 0.35, 0.5, 0.75, 1.3, 1.4)
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


def backbone_weights(weights: str, image_size: int) -> tuple[str, float]:
    """The weights to load ("imagenet" or an absolute path) and their alpha; else a UsageError."""
    if weights == "imagenet":
        try:
            transfer.backbone(SpaceContext(image_size, 2, "imagenet", 1.0))
        except Exception as error:
            if not _not_downloaded(error):
                raise
            raise UsageError(
                f"MobileNetV2 ImageNet weights are not in {keras_home() / 'models'} and could not "
                f"be downloaded ({first_line(error)}); pass --weights PATH to a "
                f"MobileNetV2 no_top weights file"
            ) from None
        return weights, 1.0
    path = Path(weights).expanduser().resolve()
    if not path.is_file():
        raise UsageError(
            f"--weights {weights}: no such file; pass a MobileNetV2 no_top weights "
            f"file (.h5) or 'imagenet'"
        )
    for alpha in ALPHAS:
        try:
            transfer.backbone(SpaceContext(image_size, 2, str(path), alpha))
            return str(path), alpha
        except NOT_LOADABLE:  # wrong width for this file: try the next one
            continue
    raise UsageError(
        f"--weights {weights} does not load into MobileNetV2 (include_top=False) at "
        f"any alpha in {ALPHAS}; pass a MobileNetV2 no_top weights file"
    )
