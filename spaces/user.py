"""Your own model as a space: `--space FILE.py:FUNCTION`, `--space package.module:FUNCTION`, or
`--space FILE.py` (its `build`), or a callable or HyperModel given to `search.run`.

What FUNCTION may be:
- `build(hp, ctx)`, like the built-in spaces (`ctx` is a `spaces.context.SpaceContext`);
- a Keras Tuner-style `build_model(hp)` that knows nothing of this project;
- a `keras_tuner.HyperModel` subclass (built with no arguments) or instance.

The model takes `(image_size, image_size, 3)` raw RGB pixels in [0, 255] and ends in one unit
per class, or one sigmoid unit for two classes; `check_contract` refuses any other shape before
the search. A model returned uncompiled is compiled with Adam and the loss that fits its output.
Labels are integers, as `image_dataset_from_directory` gives them; a model compiled with
`categorical_crossentropy` is given one-hot labels (`wants_one_hot`). The last layer gives
probabilities (sigmoid or softmax), which the run stores per image and ranks by.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spaces import Space
from spaces.context import SpaceContext

if TYPE_CHECKING:
    import keras
    import keras_tuner as kt

DEFAULT_FUNCTION = "build"
ONE_HOT_LOSSES = ("categorical_crossentropy", "categorical_focal_crossentropy")


class SpaceError(ValueError):
    """A user space that cannot be loaded or breaks the model contract; one line, to show."""


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def is_user_space(spec: str) -> bool:
    """Whether `spec` names a user space (FILE.py, FILE.py:FUNCTION, module:FUNCTION)."""
    return spec.endswith(".py") or ":" in spec


def _split(spec: str) -> tuple[str, str]:
    where, _, function = spec.rpartition(":") if ":" in spec else (spec, "", "")
    return where, function or DEFAULT_FUNCTION


def source_file(spec: str) -> Path:
    """The file that defines the space `spec` names."""
    where, _ = _split(spec)
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise SpaceError(f"--space {spec}: no file {where}; pass FILE.py:FUNCTION")
        return path.resolve()
    try:
        found = importlib.util.find_spec(where)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.origin or not found.origin.endswith(".py"):
        raise SpaceError(f"--space {spec}: no module {where} to import; pass FILE.py:FUNCTION")
    return Path(found.origin).resolve()


# The source of each space registered from Python in this process (python_space), by name.
_PYTHON_SOURCES: dict[str, dict[str, str]] = {}


def source_digest(spec: str) -> dict[str, str]:
    """The space's file (or, for one defined in a notebook, its source) and its sha256,
    recorded in run.json so a resume can tell it changed."""
    if spec in _PYTHON_SOURCES:
        return _PYTHON_SOURCES[spec]
    path = source_file(spec)
    return {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def python_space(found: object) -> str:
    """The `--space` name of a builder handed over from Python: `module:name` when its module
    can be imported again by name (so --workers processes load it too), otherwise a name for
    this process only ("python:name"), its space registered here."""
    from spaces import register_space

    named = found if inspect.isclass(found) or inspect.isfunction(found) else type(found)
    module, qualname = named.__module__, named.__qualname__
    spec = f"{module}:{qualname}"
    importable = (
        named is found
        and module != "__main__"
        and "<" not in qualname
        and "." not in qualname
        and getattr(importlib.util.find_spec(module), "origin", "").endswith(".py")
    )
    if importable:
        return spec
    name = f"python:{qualname}"
    try:
        text = inspect.getsource(named)
    except (OSError, TypeError):
        text = repr(found)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    _PYTHON_SOURCES[name] = {"path": f"<{module}>", "sha256": digest}
    register_space(user_space(found, name=name))
    return name


def _import(spec: str) -> object:
    where, function = _split(spec)
    path = source_file(spec)
    try:
        if where.endswith(".py"):
            name = f"user_space_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
            loader = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(loader)
            sys.modules[name] = module  # dataclasses and pickling look modules up by name
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except Exception as error:
        message = f"{type(error).__name__}: {first_line(error)}"
        raise SpaceError(f"--space {spec}: importing it failed: {message}") from None
    if not hasattr(module, function):
        raise SpaceError(f"--space {spec}: {path.name} defines no {function}")
    return getattr(module, function)


def load_user_space(spec: str) -> Space:
    """The space named by `spec`, its builder adapted to `build(hp, ctx)`."""
    return user_space(_import(spec), name=spec)


def user_space(found: object, name: str) -> Space:
    """A space from a `build(hp, ctx)`, a `build_model(hp)`, or a HyperModel class or instance."""
    return Space(name=name, build=_compiling(_as_build(found, name)))


def _as_build(found: object, name: str) -> Callable[[kt.HyperParameters, SpaceContext], object]:
    import keras_tuner as kt

    if inspect.isclass(found) and issubclass(found, kt.HyperModel):
        found = found()
    if isinstance(found, kt.HyperModel):
        hypermodel = found
        return lambda hp, ctx: hypermodel.build(hp)
    if not callable(found):
        raise SpaceError(f"--space {name}: not a function or a keras_tuner.HyperModel")
    try:
        parameters = inspect.signature(found).parameters
    except (TypeError, ValueError):
        parameters = {}
    required = [p for p in parameters.values() if p.default is inspect.Parameter.empty]
    if len(required) == 1:  # Keras Tuner's build_model(hp)
        return lambda hp, ctx: found(hp)
    if len(required) == 2:
        return found
    raise SpaceError(f"--space {name}: expected build(hp, ctx) or build_model(hp)")


def _compiling(build: Callable) -> Callable[[kt.HyperParameters, SpaceContext], keras.Model]:
    def build_compiled(hp, ctx: SpaceContext) -> keras.Model:
        model = build(hp, ctx)
        if not model.built:  # a Sequential model without an Input learns its shape here
            model.build((None, *ctx.input_shape))
        if not getattr(model, "compiled", False):
            compile_for_output(model)
        elif "accuracy" not in _metric_names(model):
            # The run records and ranks "accuracy": the user's optimizer and loss, measured.
            model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"])
        return model

    return build_compiled


def compile_for_output(model: keras.Model) -> None:
    """Adam and the loss that fits the output: binary cross-entropy for one sigmoid unit,
    sparse categorical cross-entropy for a softmax."""
    import keras

    loss = (
        "binary_crossentropy" if model.output_shape[-1] == 1 else "sparse_categorical_crossentropy"
    )
    model.compile(optimizer=keras.optimizers.Adam(), loss=loss, metrics=["accuracy"])


def _metric_names(model: keras.Model) -> set[str]:
    metrics = model.get_compile_config().get("metrics") or []
    return {m if isinstance(m, str) else m.get("config", {}).get("name") for m in metrics}


def _output_activation(model: keras.Model) -> str:
    return getattr(getattr(model.layers[-1], "activation", None), "__name__", "")


def labels_for(model: keras.Model, y: np.ndarray, num_classes: int) -> np.ndarray:
    """The run's integer labels as `model` was compiled to take them: one-hot rows for
    categorical cross-entropy, integers otherwise."""
    return np.eye(num_classes, dtype="float32")[y] if wants_one_hot(model) else y


def wants_one_hot(model: keras.Model) -> bool:
    """Whether `model` was compiled for one-hot labels (categorical cross-entropy)."""
    loss = getattr(model, "loss", None)
    name = getattr(loss, "name", None) or getattr(loss, "__name__", None) or loss
    return isinstance(name, str) and name in ONE_HOT_LOSSES


def check_contract(model: keras.Model, ctx: SpaceContext, name: str) -> None:
    """Refuse, in one line naming both shapes, a model that does not take the run's images or
    does not end in one unit per class (one unit for two classes)."""
    wanted_input = (None, *ctx.input_shape)
    got_input = tuple(model.input_shape) if not isinstance(model.input_shape, list) else None
    if got_input != wanted_input:
        raise SpaceError(
            f"--space {name}: the model takes inputs of shape {model.input_shape}, but the "
            f"run's images are {wanted_input}: build it for ctx.image_size or pass "
            f"--image-size to match"
        )
    units = model.output_shape[-1]
    allowed = (1, 2) if ctx.num_classes == 2 else (ctx.num_classes,)
    if len(model.output_shape) != 2 or units not in allowed:
        raise SpaceError(
            f"--space {name}: the model outputs shape {model.output_shape}, but the data has "
            f"{ctx.num_classes} classes: end it in Dense({ctx.num_classes})"
            + (" or one sigmoid unit" if ctx.num_classes == 2 else "")
        )
    wanted = "sigmoid" if units == 1 else "softmax"
    activation = _output_activation(model)
    activation = "logits" if activation in ("", "linear") else activation
    if activation != wanted:
        raise SpaceError(
            f"--space {name}: the model's last layer outputs {activation}, but the run stores "
            f'and ranks probabilities: end it in Dense({units}, activation="{wanted}")'
        )
