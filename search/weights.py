"""Resolve the backbones a space chooses among and each one's weights, before any trial
starts: through their entries in spaces/backbones.py, so this module knows no particular
network or space.

Weights are "imagenet" (Keras's cache, ~/.keras/models/, downloaded if absent), "random"
(untrained, for latency-only studies) or a no_top weights file. `--weights VALUE` alone names
MobileNetV2's file (as it always has) or, as imagenet or random, every backbone's weights;
`--weights NAME=VALUE` one backbone's.
"""

from __future__ import annotations

import http.client
import urllib.error
from collections.abc import Mapping, Sequence
from pathlib import Path

from search.data import keras_home
from search.errors import UsageError, first_line
from spaces.backbones import BACKBONES, Backbone, build_backbone, get_backbone
from spaces.context import DEFAULT_BACKBONE, BackboneWeights

# What a weights file that does not fit raises: h5py's OSError for a file it cannot read,
# Keras's ValueError (or a KeyError) for other shapes or layers. Anything else (a CUDA or
# out-of-memory error) is not about the file, and propagates.
NOT_LOADABLE = (OSError, ValueError, KeyError)
RANDOM = "random"  # untrained backbones: what --weights random asks for
EVERY_BACKBONE = "all"  # --backbones all


def backbone_names(requested: Sequence[str]) -> list[str]:
    """--backbones as registry names, in the order given (MobileNetV2 first where named): the
    documents' MobileNetV2 when none is named, every one for "all"; an unknown name is one
    line listing the names."""
    if not requested:
        return [DEFAULT_BACKBONE.name]
    if list(requested) == [EVERY_BACKBONE]:
        return list(BACKBONES)
    unknown = [name for name in requested if name not in BACKBONES]
    if unknown:
        raise UsageError(
            f"--backbones: unknown {', '.join(map(repr, unknown))}; choose among "
            f"{', '.join(BACKBONES)} (or all)"
        )
    names = list(dict.fromkeys(requested))
    # The documents' network first where it is searched: a choice's first value is its default.
    return sorted(names, key=lambda name: name != DEFAULT_BACKBONE.name)


def named_weights(pairs: Sequence[str]) -> dict[str, str]:
    """--weights NAME=VALUE pairs by backbone; a name not in the registry is one line."""
    named: dict[str, str] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in BACKBONES or not value:
            raise UsageError(
                f"--weights {pair}: give NAME=PATH (or NAME=imagenet, NAME=random) with NAME "
                f"one of {', '.join(BACKBONES)}"
            )
        named[name] = value
    return named


def _weights_for(name: str, weights: str, named: Mapping[str, str]) -> str:
    """What `name` loads: its own --weights NAME=VALUE, else a bare imagenet or random, else
    a bare file for MobileNetV2 (its meaning before there were other backbones), else
    ImageNet."""
    if name in named:
        return named[name]
    if weights in ("imagenet", RANDOM) or name == DEFAULT_BACKBONE.name:
        return weights
    return "imagenet"


def resolve_backbones(
    names: Sequence[str], weights: str, named: Mapping[str, str], *, image_size: int
) -> tuple[BackboneWeights, ...]:
    """Each backbone of `names` with the weights it loads and the variant they fit, in that
    order; a --weights NAME=VALUE for a backbone not searched, or any weights that cannot be
    had, is one line before any trial."""
    unused = sorted(set(named) - set(names))
    if unused:
        raise UsageError(
            f"--weights {unused[0]}=...: {unused[0]} is not among the backbones searched "
            f"({', '.join(names)}); add it to --backbones or leave its --weights out"
        )
    return tuple(
        backbone_weights(_weights_for(name, weights, named), image_size, name, named=name in named)
        for name in names
    )


def _not_downloaded(error: Exception) -> bool:
    """Whether `error` says the ImageNet weights could not be fetched or read: a network or
    file error, or keras.utils.get_file's bare Exception wrapping urllib's URLError."""
    if isinstance(error, (*NOT_LOADABLE, http.client.HTTPException)):
        return True
    return type(error) is Exception and isinstance(error.__context__, urllib.error.URLError)


def backbone_weights(
    weights: str,
    image_size: int,
    backbone: str = DEFAULT_BACKBONE.name,
    *,
    named: bool = False,
) -> BackboneWeights:
    """`backbone` with the weights to load ("imagenet", an absolute path, or None for
    "random") and the variant they fit, found by building it once; else a UsageError in one
    line. `named`: the weights came as --weights NAME=VALUE, which messages repeat."""
    entry = get_backbone(backbone)
    shape = (image_size, image_size, 3)
    if weights == RANDOM:
        return entry.choice(None)
    if weights == "imagenet":
        return _imagenet(entry, shape)
    flag = f"--weights {entry.name}={weights}" if named else f"--weights {weights}"
    path = Path(weights).expanduser().resolve()
    if not path.is_file():
        raise UsageError(f"{flag}: no such file; pass a {entry.weights_file}, imagenet or random")
    for variant in entry.variants:
        choice = entry.choice(str(path), variant)
        try:
            build_backbone(choice, shape)
            return choice
        except NOT_LOADABLE:  # another variant's file (MobileNetV2: another width): try the next
            continue
    tried = ", ".join(" ".join(f"{k}={v}" for k, v in variant) for variant in entry.variants)
    variants = f" at any of {tried}" if tried else ""
    raise UsageError(
        f"{flag} does not load into {entry.title} (include_top=False){variants}; pass a "
        f"{entry.weights_file}"
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
            f"be downloaded ({first_line(error)}); pass --weights {entry.name}=PATH to a "
            f"{entry.weights_file} (or --weights random for untrained backbones)"
        ) from None
    return choice
