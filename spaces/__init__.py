"""Search spaces: what is searched, written against Keras Tuner's `HyperParameters` API.

A space knows nothing of the back end that samples it. Each module declares one `Space`
(`SPACE = Space(...)` at its end) around its `build(hp, ctx) -> keras.Model`; the optional
parts of a space are the `Space` fields with defaults, documented below.
Adding a space: one module here plus one line in `SPACES`.

Modules are imported on first use, so listing the spaces (as `--help` does) needs no Keras.
"""

from __future__ import annotations

import functools
import importlib
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from spaces.context import SpaceContext

if TYPE_CHECKING:
    import keras
    import keras_tuner as kt

SPACES: dict[str, str] = {
    "scratch": "the documents' small CNN: conv depth, filters, kernel, BatchNorm, dropout",
    "augment": "scratch plus augmentation strengths (flip, rotation, zoom, translation, contrast)",
    "preprocess": "augment plus input scaling (1/255, MobileNetV2 [-1, 1], none)",
    "transfer": "pretrained MobileNetV2, frozen or fine-tuned, with a searched head",
    "xception": "keras.io's small Xception: entry, block and exit widths, depth, dropout",
    "baselines": "the documents' own models as fixed presets of the spaces above, each run once",
}

# The backbone contract: a pretrained base is one nested model named BACKBONE, built from its
# entry in spaces/backbones.py (BACKBONES) as `ctx.backbone` names it. When it is frozen and
# only weightless, deterministic layers stand before it, the runner computes its features once
# per run and trains only the head on them (search/features.py).
BACKBONE = "backbone"
# The share of a base's layers that fine-tuning keeps frozen by default: the TF tutorial's
# layer 100 of MobileNetV2's 154.
FINE_TUNE_AT = 0.65


def _never(hp: kt.HyperParameters) -> bool:
    return False


@dataclass(frozen=True)
class Space:
    """One search space.

    Required:
        name: the space's name, as `--space` takes it.
        build(hp, ctx): declares its hyperparameters on `hp` (Keras Tuner's API) and returns
            a compiled model for the run's `ctx`.

    Optional, for a space with a second training stage (transfer's fine-tuning):
        fine_tune(hp, model): prepares the trained `model` for a second stage and recompiles
            it; False when this point has none. The runner trains the second stage for up to
            --epochs more epochs and keeps the first stage's weights if it never beats them.
        fine_tunes(hp): whether the point `hp` has a second stage, known without a model.
        second_stage: names of the hyperparameters only the second stage reads: two points
            that differ only in them share their first stage (a reused head).
        uses_backbone: the space builds the pretrained base `ctx.backbone` names (under the
            BACKBONE contract), so the run resolves --weights before anything is created.
    """

    name: str
    build: Callable[[kt.HyperParameters, SpaceContext], keras.Model]
    fine_tune: Callable[[kt.HyperParameters, keras.Model], bool] | None = None
    fine_tunes: Callable[[kt.HyperParameters], bool] = _never
    second_stage: tuple[str, ...] = ()
    uses_backbone: bool = False


IMAGE_SIZE = "image_size"  # the hyperparameter --image-sizes adds to a space


def sized_space(space: Space, sizes: Sequence[int], default: int) -> Space:
    """`space` with its input size searched too, as the hyperparameter IMAGE_SIZE: each point
    builds its model for its own size (ctx.image_size), and the trial trains it on the images
    decoded at that size."""

    def build(hp: kt.HyperParameters, ctx: SpaceContext) -> keras.Model:
        size = hp.Choice(IMAGE_SIZE, list(sizes), default=default)
        return space.build(hp, replace(ctx, image_size=size))

    return replace(space, build=build)


# Spaces handed over in this process (search.run(space=build_model) from a notebook), by name.
_REGISTERED: dict[str, Space] = {}


def register_space(space: Space) -> str:
    """Make `space` reachable by its name in this process, and return the name."""
    _REGISTERED[space.name] = space
    return space.name


def get_space(name: str) -> Space:
    """A built-in space by name, a space registered in this process, or a user space by
    FILE.py[:FUNCTION] or module:FUNCTION (spaces/user.py; a spaces.user.SpaceError says why
    one cannot be loaded)."""
    if name in SPACES:
        return importlib.import_module(f"spaces.{name}").SPACE
    if name in _REGISTERED:
        return _REGISTERED[name]
    from spaces.user import is_user_space

    if not is_user_space(name):
        raise ValueError(
            f"unknown space {name!r}; choose one of {', '.join(SPACES)} or FILE.py:FUNCTION"
        )
    return _user_space(name)


@functools.cache  # one import per process, so the space is one object (declared_space's key)
def _user_space(spec: str) -> Space:
    from spaces.user import load_user_space

    return load_user_space(spec)


def as_hypermodel(space: Space, ctx: SpaceContext) -> kt.HyperModel:
    """`space` for the run's `ctx` as a Keras Tuner HyperModel."""
    import keras_tuner as kt

    class SpaceHyperModel(kt.HyperModel):
        def build(self, hp):
            return space.build(hp, ctx)

    return SpaceHyperModel(name=space.name)


def declared_space(space: Space, ctx: SpaceContext) -> kt.HyperParameters:
    """Every hyperparameter a space declares, conditional ones included, found the way Keras
    Tuner finds them (building the model until every conditional scope has been active)."""
    return _declared(space, ctx).copy()


@functools.cache  # each discovery builds the model several times
def _declared(space: Space, ctx: SpaceContext) -> kt.HyperParameters:
    import keras_tuner as kt

    oracle = kt.oracles.RandomSearchOracle(objective="val_accuracy", max_trials=1)
    # Pretrained weights never change which hyperparameters are declared; loading them would.
    hypermodel = as_hypermodel(space, ctx.without_weights())
    with tempfile.TemporaryDirectory() as scratch:
        kt.engine.base_tuner.BaseTuner(oracle, hypermodel, directory=scratch, overwrite=True)
    return oracle.get_space()
