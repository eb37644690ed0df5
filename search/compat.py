"""Every use of a private Keras Tuner, Optuna or Keras API, and only here.

Each item names the internal it relies on, why the public API does not do, and the versions
it was checked with; tests/test_compat.py exercises each one against the installed library, so
an upgrade that changes one fails there, by name, instead of somewhere in a search.
tests/test_compat.py also fails when a private third-party API is used outside this module.

Checked with Keras 3.15.0, Keras Tuner 1.4.8 and Optuna 5.0.0.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import keras
import keras_tuner as kt
from keras_tuner.src import utils as kt_utils
from keras_tuner.src.engine import tuner_utils

from search.atomic import atomic_write

if TYPE_CHECKING:  # Optuna is imported only by runs that use it
    import optuna


# Keras Tuner


class KnownSpaceTuner(kt.engine.base_tuner.BaseTuner):
    """A tuner whose oracle is given a space learnt beforehand (`known_space`), instead of
    building the model several times over to learn it.

    Also relies on `BaseTuner._run_and_update_trial` (run_trial, then the oracle's update),
    the one place a trial's errors pass before Keras Tuner records them, so `fatal` can stop
    the search for some of them.

    Relies on `BaseTuner._populate_initial_space`, which `BaseTuner.__init__` calls on a new
    (not reloaded) project to fill the oracle's space. Its docstring keeps it as the override
    point for AutoKeras, but it is private and no public hook exists: the space cannot be passed
    in, as the tuner learns it before any public method runs.
    """

    def known_space(self) -> kt.HyperParameters:
        raise NotImplementedError

    def _populate_initial_space(self) -> None:
        self.oracle.update_space(self.known_space())

    def fatal(self, error: Exception) -> Exception | None:
        """The error that stops the search instead of failing the trial for `error`, or None."""
        return None

    def _run_and_update_trial(self, trial, *fit_args, **fit_kwargs):
        # BaseTuner records any error of a trial, its own bookkeeping writes after run_trial
        # (oracle.update_trial) included, as a failed or invalid trial; `fatal` picks the
        # errors that must stop the search instead (a refused write).
        try:
            return super()._run_and_update_trial(trial, *fit_args, **fit_kwargs)
        except Exception as error:
            fatal = None if isinstance(error, kt.errors.FatalError) else self.fatal(error)
            if fatal is None:
                raise
            raise fatal from error


class RegisteringHyperParameters(kt.HyperParameters):
    """Keras Tuner's `HyperParameters` with a hook, `on_register`, run as a space declares each
    hyperparameter for the first time, before its default value is given.

    Relies on `HyperParameters._register(hp, overwrite)`: every declaration (Int, Float,
    Choice, Boolean, Fixed, merge) passes through it, and it keeps a value already in `values`
    instead of the default. The public declaring methods offer no hook, and overriding all five
    would rebuild each hyperparameter from the private current conditions.
    """

    def on_register(self, hyperparameter: kt.engine.hyperparameters.HyperParameter) -> None:
        """Called with each newly declared hyperparameter; it may set `self.values[name]`."""

    def _register(
        self, hyperparameter: kt.engine.hyperparameters.HyperParameter, overwrite: bool = False
    ) -> object:
        self.on_register(hyperparameter)
        return super()._register(hyperparameter, overwrite)


def _atomic_save_json(path: str, obj: object) -> str:
    text = json.dumps(obj)
    atomic_write(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return text


def atomic_keras_tuner_files() -> None:
    """Make Keras Tuner write its state files (kt/oracle.json, tuner0.json, each
    trial_*/trial.json) whole or not at all, as the run store writes its own.

    Relies on `keras_tuner.src.utils.save_json`, the one function through which `Stateful.save`
    (tuner, oracle, trial) writes: Keras Tuner writes in place, so a full disk left an empty
    trial.json on which the resumed run's `Oracle.reload` failed, and no public hook says how
    it writes. Our runs keep kt/ on a local path, which Python's open serves as TensorFlow's
    file system would.
    """
    kt_utils.save_json = _atomic_save_json


def too_many_failures(error: BaseException) -> bool:
    """Whether `error` is a Keras Tuner oracle's stop after `max_consecutive_failed_trials`
    failed trials in a row.

    Relies on the text of the `RuntimeError` `Oracle._check_consecutive_failures` raises
    ("Number of consecutive failures exceeded the limit of N"): Keras Tuner raises no dedicated
    error class for it, and other RuntimeErrors must still propagate.
    """
    return isinstance(error, RuntimeError) and "consecutive failures" in str(error)


def tensorboard_hparams(hp: kt.HyperParameters, hparams_api: object) -> dict:
    """TensorBoard's HParams domain and value of each active hyperparameter of `hp`, as Keras
    Tuner's own TensorBoard logging writes them.

    Relies on `keras_tuner.src.engine.tuner_utils.convert_hyperparams_to_hparams`, which Keras
    Tuner uses internally and does not export; rewriting it would have to follow its mapping of
    each hyperparameter type to a domain for the HParams dashboard to match Keras Tuner's.
    """
    return tuner_utils.convert_hyperparams_to_hparams(hp, hparams_api)


# Optuna


def study_storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage `study` reads and writes (Optuna's cached wrapper of the one it was opened
    with), for heartbeats.

    Relies on `Study._storage`: a study does not expose its storage, and the heartbeats must go
    through the one the study uses. Optuna's own `optuna.storages.fail_stale_trials(study)`
    reads it the same way.
    """
    return study._storage


def trial_system_attrs(trial: optuna.Trial) -> dict:
    """A running trial's system attributes (a retry's `retry_history`): Optuna 4 took
    `Trial.system_attrs` away, and its storage reads them by the trial's internal id."""
    return study_storage(trial.study).get_trial_system_attrs(trial._trial_id)


# Keras


class Consumer(NamedTuple):
    """A call of a layer (or other operation) on a tensor in a functional graph."""

    operation: keras.Operation
    output: keras.KerasTensor


def call_count(layer: keras.layers.Layer) -> int:
    """How many times `layer` is called in the functional graphs built so far.

    Relies on `Operation._inbound_nodes`, one node per call; Keras 3 has no public count.
    """
    return len(layer._inbound_nodes)


def call_output(layer: keras.layers.Layer) -> keras.KerasTensor:
    """The output of `layer`'s first call in the outer functional graph.

    Relies on `Operation._inbound_nodes[0].output_tensors`: for a nested model `layer.output`
    is its inner graph's output, which cannot start a model on the outer graph.
    """
    return layer._inbound_nodes[0].output_tensors[0]


def consumers(layer: keras.layers.Layer) -> list[Consumer]:
    """The calls that take `layer`'s output, each with its (first) output.

    Relies on `Operation._outbound_nodes` and each node's `operation` and `output_tensors`:
    Keras 3 has no public way to walk a functional graph forward from a layer.
    """
    return [Consumer(node.operation, node.output_tensors[0]) for node in layer._outbound_nodes]


def all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """`model`, its layers and every layer nested in them.

    Relies on `Layer._flatten_layers()`, the walk Keras's own XLA check (`model_supports_jit`)
    makes: `model.layers` lists only the top level, and matching Keras's check means naming
    exactly the layers that keep a model from compiling.
    """
    return list(model._flatten_layers())


def import_optional_tensorflow() -> bool:
    """Import TensorFlow now if it is installed, as Keras does lazily on every backend the first
    time it seeds (`keras.utils.set_random_seed`): on PyTorch and JAX that import would
    otherwise write TensorFlow's native start-up lines in the middle of the first trial, after
    the start-up's quiet scratch file is gone. Relies on `keras.src.utils.module_utils
    .tensorflow`, the LazyModule Keras checks (`available` imports it, False when missing)."""
    from keras.src.utils import module_utils

    return module_utils.tensorflow.available
