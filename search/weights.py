"""Find the MobileNetV2 weights a transfer search needs, before any trial starts."""

from __future__ import annotations

from pathlib import Path

from search.data import keras_home
from search.errors import UsageError, first_line
from spaces import transfer
from spaces.context import SpaceContext

# Keras publishes MobileNetV2 weights at these widths; 1.0 is the documents' and is tried first.
ALPHAS = (1.0, 0.35, 0.5, 0.75, 1.3, 1.4)


def backbone_weights(weights: str, image_size: int) -> tuple[str, float]:
    """The weights to load ("imagenet" or an absolute path) and their alpha; else a UsageError."""
    if weights == "imagenet":
        try:
            transfer.backbone(SpaceContext(image_size, 2, "imagenet", 1.0))
        except Exception as error:
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
        except Exception:  # wrong width for this file: try the next one
            continue
    raise UsageError(
        f"--weights {weights} does not load into MobileNetV2 (include_top=False) at "
        f"any alpha in {ALPHAS}; pass a MobileNetV2 no_top weights file"
    )
