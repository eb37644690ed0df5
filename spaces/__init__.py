"""Search spaces. Each module declares one space with `build(hp, ctx) -> keras.Model`.

Spaces are written against Keras Tuner's `HyperParameters` API and know nothing of the back
end that samples them. A space with a second training stage also has `fine_tune(hp, model)`.
Adding a space: one module here plus one line in `SPACES`.

Modules are imported on first use, so listing the spaces (as `--help` does) needs no Keras.
"""

from __future__ import annotations

import importlib
from types import ModuleType

SPACES: dict[str, str] = {
    "scratch": "the documents' small CNN: conv depth, filters, kernel, BatchNorm, dropout",
    "augment": "scratch plus augmentation strengths (flip, rotation, zoom, translation, contrast)",
    "preprocess": "augment plus input scaling (1/255, MobileNetV2 [-1, 1], none)",
    "transfer": "pretrained MobileNetV2, frozen or fine-tuned, with a searched head",
    "xception": "keras.io's small Xception: entry, block and exit widths, depth, dropout",
    "baselines": "the documents' own models as fixed presets of the spaces above, each run once",
}


def get_space(name: str) -> ModuleType:
    if name not in SPACES:
        raise ValueError(f"unknown space {name!r}; choose one of {', '.join(SPACES)}")
    return importlib.import_module(f"spaces.{name}")
