"""`--fix NAME=VALUE`: pin hyperparameters of a space, as Keras Tuner's `hp.Fixed` does.

The values, and those of the `--enqueue` sets, are checked against the space's declared
hyperparameters, so a typo or an out-of-range value is refused before any trial runs. Keras
Tuner gets the declared space with the pinned ones replaced by `Fixed` under the same
conditions; the Optuna back end records a pinned value as a one-value categorical, so the study
still lists it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import keras_tuner as kt
import numpy as np

from search.errors import UsageError
from search.schema import TUNER_PREFIX

HP = kt.engine.hyperparameters
GRID_POINTS = 10  # of a range the space gives no step, as Keras Tuner's grid takes


def _parse_value(hp, text: str, where: str = "--fix") -> object:
    """`text` as a value `hp` can take, or a UsageError, starting with `where`, saying which
    values it can take."""
    said = f"{where} {hp.name}={text}"
    if isinstance(hp, HP.Boolean):
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise UsageError(f"{said}: choose true or false")
    if isinstance(hp, HP.Fixed):
        if str(hp.value) == text:
            return hp.value
        raise UsageError(f"{said}: the space fixes it at {hp.value}")
    if isinstance(hp, HP.Choice):
        for value in hp.values:
            if str(value) == text or _same_number(value, text):
                return value
        choices = ", ".join(str(v) for v in hp.values)
        raise UsageError(f"{said}: choose one of {choices}")
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{said}: give a number") from None
    if isinstance(hp, HP.Int):
        if not value.is_integer():
            raise UsageError(f"{said}: give a whole number")
        value = int(value)
    if not hp.min_value <= value <= hp.max_value:
        raise UsageError(f"{said}: outside the space's range {hp.min_value}..{hp.max_value}")
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
        fixed[name] = _parse_value(_declared_hp(by_name, name, f"--fix {pair}:"), text)
    return fixed


def check_enqueued(
    sets: Sequence[dict], declared: kt.HyperParameters, fixed: dict[str, object], *, source: str
) -> list[dict]:
    """`sets` (from `source`) with each value as the space holds it. A name the space lacks, a
    value it cannot take, or one that contradicts --fix is refused before any trial runs:
    Optuna would silently sample an unknown name and fail the trial on the others."""
    by_name = {hp.name: hp for hp in declared.space}
    checked = []
    for number, values in enumerate(sets, 1):
        where = f"{source}, set {number}:"
        point = {}
        for name, value in values.items():
            point[name] = _parse_value(_declared_hp(by_name, name, where), _as_text(value), where)
            if name in fixed and point[name] != fixed[name]:
                raise UsageError(
                    f"{where} {name}={point[name]} contradicts --fix {name}={fixed[name]}; "
                    f"drop one of the two"
                )
        checked.append(point)
    return checked


def agreeing(sets: Sequence[dict], fixed: dict[str, object]) -> list[dict]:
    """The sets whose values agree with every --fix value (a set without the name agrees)."""
    return [s for s in sets if all(s.get(name, value) == value for name, value in fixed.items())]


def _declared_hp(by_name: dict, name: str, where: str):
    """The declared hyperparameter `name`, or a UsageError, starting with `where`, that lists
    the names the space has."""
    if name not in by_name:
        names = ", ".join(sorted(by_name))
        raise UsageError(f"{where} the space has no {name!r}; it has {names}")
    return by_name[name]


def _as_text(value: object) -> str:
    """A JSON value as it would be written after --fix NAME=."""
    return str(value).lower() if isinstance(value, bool) else str(value)


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
                pinned.merge([hp], overwrite=False)  # keeps its own conditions
    return pinned


def grid_space(declared: kt.HyperParameters) -> dict[str, list]:
    """Optuna's grid from the declared space, with Keras Tuner's own grid values: a numeric
    range gives the values its step declares (10 evenly spaced ones when it has no step)."""
    grid = {}
    for hp in declared.space:
        if isinstance(hp, HP.Fixed):
            grid[hp.name] = [hp.value]
        elif isinstance(hp, HP.Boolean):
            grid[hp.name] = [False, True]
        else:
            grid[hp.name] = _grid_values(hp)
    return grid


def _grid_values(hp) -> list:
    """A choice's values; a stepped linear range's steps, its maximum included (Keras Tuner's
    own `values` loses it to rounding: 0-0.5 by 0.05 gives 10 values, not 11); any other range
    (learning rates, sampled on a log scale) gets GRID_POINTS evenly spaced on its scale, both
    ends included, to 3 significant digits."""
    if not isinstance(hp, HP.Int | HP.Float):
        return sorted(hp.values)
    if hp.step and hp.sampling == "linear":
        count = math.floor((hp.max_value - hp.min_value) / hp.step + 1e-9) + 1
        values = [hp.min_value + i * hp.step for i in range(count)]
    else:
        spaced = np.geomspace if hp.sampling == "log" else np.linspace
        values = spaced(hp.min_value, hp.max_value, GRID_POINTS).tolist()
    if isinstance(hp, HP.Int):
        return sorted({round(v) for v in values})
    rounded = (float(f"{v:.3g}") for v in values)
    return [min(max(v, hp.min_value), hp.max_value) for v in rounded]  # ends stay in range


def grid_size(grid: dict[str, list]) -> int:
    return math.prod(len(values) for values in grid.values())


def hyperparameters_of(values: dict) -> kt.HyperParameters:
    """A stored point's values as HyperParameters that a space reads back as it builds;
    Keras Tuner Hyperband's `tuner/` bookkeeping left out."""
    hp = kt.HyperParameters()
    hp.values.update({k: v for k, v in values.items() if not k.startswith(TUNER_PREFIX)})
    return hp
