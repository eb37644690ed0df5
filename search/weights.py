"""Find the MobileNetV2 weights a transfer search needs, before any trial starts."""

from __future__ import annotations

from pathlib import Path

from search.data import keras_home
from search.errors import UsageError
from spaces import transfer
from spaces.context import SpaceContext

# Keras publishes MobileNetV2 weights at these widths; 1.0 is the documents' and is tried first.
ALPHAS = (1.0, 0.35, 0.5, 0.75, 1.3, 1.4)


def transfer_context(weights: str, image_size: int, num_classes: int) -> SpaceContext:
    """A context whose weights load, with the alpha they were trained at; else a UsageError."""
    if weights == "imagenet":
        ctx = SpaceContext(image_size, num_classes, "imagenet", 1.0)
        try:
            transfer.backbone(ctx)
        except Exception as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise UsageError(
                f"MobileNetV2 ImageNet weights are not in {keras_home() / 'models'} and could not "
                f"be downloaded ({type(error).__name__}: {reason}); pass --weights PATH to a "
                f"MobileNetV2 no_top weights file"
            ) from None
        return ctx
    path = Path(weights).expanduser().resolve()
    if not path.is_file():
        raise UsageError(
            f"--weights {weights}: no such file; pass a MobileNetV2 no_top weights "
            f"file (.h5) or 'imagenet'"
        )
    for alpha in ALPHAS:
        ctx = SpaceContext(image_size, num_classes, str(path), alpha)
        try:
            transfer.backbone(ctx)
            return ctx
        except Exception:  # wrong width for this file: try the next one
            continue
    raise UsageError(
        f"--weights {weights} does not load into MobileNetV2 (include_top=False) at "
        f"any alpha in {ALPHAS}; pass a MobileNetV2 no_top weights file"
    )
