"""`--fix NAME=VALUE`: pin hyperparameters of a space, as Keras Tuner's `hp.Fixed` does.

The values are checked against the space's declared hyperparameters, so a typo or an
out-of-range value is refused before any trial runs. Keras Tuner gets the declared space with
the pinned ones replaced by `Fixed` under the same conditions; the Optuna back end records a
pinned value as a one-value categorical, so the study still lists it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import keras_tuner as kt
from keras_tuner.src.engine import hyperparameters as HP

from search.errors import UsageError


def _parse_value(hp, text: str) -> object:
    """`text` as a value `hp` can take, or a UsageError saying which values it can take."""
    if isinstance(hp, HP.Boolean):
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise UsageError(f"--fix {hp.name}={text}: choose true or false")
    if isinstance(hp, HP.Fixed):
        if str(hp.value) == text:
            return hp.value
        raise UsageError(f"--fix {hp.name}={text}: the space fixes it at {hp.value}")
    if isinstance(hp, HP.Choice):
        for value in hp.values:
            if str(value) == text or _same_number(value, text):
                return value
        choices = ", ".join(str(v) for v in hp.values)
        raise UsageError(f"--fix {hp.name}={text}: choose one of {choices}")
    try:
        value = int(text) if isinstance(hp, HP.Int) else float(text)
    except ValueError:
        raise UsageError(f"--fix {hp.name}={text}: give a number") from None
    if not hp.min_value <= value <= hp.max_value:
        raise UsageError(
            f"--fix {hp.name}={text}: outside the space's range {hp.min_value}..{hp.max_value}"
        )
    return value


def _same_number(value, text: str) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isclose(float(text), value)
    except ValueError:
        return False


def parse_fixed(pairs: Sequence[str], declared: kt.HyperParameters) -> dict[str, object]:
    """{name: value} from NAME=VALUE strings, checked against the declared hyperparameters."""
    by_name = {hp.name: hp for hp in declared.space}
    fixed = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--fix {pair}: write NAME=VALUE, for example --fix mode=frozen")
        if name not in by_name:
            names = ", ".join(sorted(by_name))
            raise UsageError(f"--fix {pair}: the space has no {name!r}; it has {names}")
        fixed[name] = _parse_value(by_name[name], text)
    return fixed


def pinned_space(declared: kt.HyperParameters, fixed: dict[str, object]) -> kt.HyperParameters:
    """The declared space with each fixed hyperparameter replaced by `Fixed`, keeping its
    conditions, for a Keras Tuner oracle's `hyperparameters`."""
    pinned = kt.HyperParameters()
    for hp in declared.space:
        with contextlib.ExitStack() as scopes:
            for condition in hp.conditions:
                scopes.enter_context(pinned.conditional_scope(condition.name, condition.values))
            if hp.name in fixed:
                pinned.Fixed(hp.name, fixed[hp.name])
            else:
                pinned._register(hp)
    return pinned
