"""search/compat.py against the installed libraries: each test runs the real internal an item
relies on (no mocks), so an upgrade that changes or removes it fails here, by name. The last
tests fail when a private third-party API is used outside search/compat.py."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import keras
import keras_tuner as kt
import optuna
import pytest
from conftest import REPO, cli_env, no_tensorflow_env

from search import compat

# Keras Tuner


class _Unbuildable(kt.HyperModel):
    def build(self, hp):
        raise AssertionError("the space was known: the model must not be built to learn it")


def test_known_space_tuner_fills_the_oracle_space_without_building(tmp_path):
    known = kt.HyperParameters()
    known.Int("units", 8, 64, step=8)

    class Tuner(compat.KnownSpaceTuner):
        def known_space(self):
            return known

    oracle = kt.oracles.RandomSearchOracle(objective="val_accuracy", max_trials=1)
    Tuner(oracle, _Unbuildable(), directory=str(tmp_path), overwrite=True)
    assert [hp.name for hp in oracle.get_space().space] == ["units"]


def test_registering_hyperparameters_sees_each_declaration_once_and_keeps_its_value():
    class Recording(compat.RegisteringHyperParameters):
        def __init__(self):
            super().__init__()
            self.seen: list[tuple[str, bool]] = []

        def on_register(self, hyperparameter):
            self.seen.append((hyperparameter.name, self.is_active(hyperparameter)))
            if self.is_active(hyperparameter):
                self.values[hyperparameter.name] = {"units": 48, "kind": "b"}.get(
                    hyperparameter.name, self.values.get(hyperparameter.name)
                )

    hp = Recording()
    assert hp.Int("units", 8, 64, step=8) == 48  # the hook's value, not the default 8
    assert hp.Choice("kind", ["a", "b"]) == "b"
    hp.Float("rate", 0.1, 0.5)
    hp.Boolean("flag")
    hp.Fixed("size", 3)
    with hp.conditional_scope("kind", ["a"]):
        assert hp.Int("depth", 1, 3) is None  # declared inside an inactive scope
    hp.Int("units", 8, 64, step=8)  # declared again: not registered again
    assert hp.seen == [
        ("units", True),
        ("kind", True),
        ("rate", True),
        ("flag", True),
        ("size", True),
        ("depth", False),
    ]


class _OneChoice(kt.HyperModel):
    def build(self, hp):
        hp.Choice("kind", ["a", "b"])
        return None


def test_too_many_failures_recognises_keras_tuners_consecutive_failure_stop(tmp_path):
    class Failing(kt.engine.base_tuner.BaseTuner):
        def run_trial(self, trial, *args, **kwargs):
            raise kt.errors.FailedTrialError("every trial fails")

    oracle = kt.oracles.RandomSearchOracle(
        objective="val_accuracy", max_trials=5, max_consecutive_failed_trials=2
    )
    tuner = Failing(oracle, _OneChoice(), directory=str(tmp_path), overwrite=True)
    with pytest.raises(RuntimeError) as stopped:
        tuner.search(verbose=0)
    assert compat.too_many_failures(stopped.value)
    assert not compat.too_many_failures(RuntimeError("out of memory"))
    assert not compat.too_many_failures(ValueError("consecutive failures"))


def test_tensorboard_hparams_maps_each_active_value():
    from tensorboard.plugins.hparams import api as hparams_api

    hp = kt.HyperParameters()
    hp.Choice("kind", ["a", "b"])
    hp.Int("units", 8, 64, step=8)
    hp.Float("rate", 0.1, 0.5)
    hp.Boolean("flag")
    with hp.conditional_scope("kind", ["b"]):
        hp.Int("depth", 1, 3)  # inactive: not written
    hparams = compat.tensorboard_hparams(hp, hparams_api)
    assert all(isinstance(key, hparams_api.HParam) for key in hparams)
    assert {key.name: value for key, value in hparams.items()} == hp.values
    domains = {key.name: key.domain for key in hparams}
    assert isinstance(domains["kind"], hparams_api.Discrete)
    assert isinstance(domains["rate"], hparams_api.RealInterval)


# Optuna


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_study_storage_is_the_storage_the_study_uses(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=60)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    used = compat.study_storage(study)
    assert isinstance(used, optuna.storages.BaseStorage)
    assert used.get_heartbeat_interval() == 60
    study_id = used.get_study_id_from_name("s")
    trial_id = used.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    used.record_heartbeat(trial_id)
    assert [t.number for t in used.get_all_trials(study_id)] == [trial.number]


# Keras


def _backbone() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    return keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs), name="backbone")


def test_call_count_output_and_consumers_of_a_nested_model():
    base = _backbone()
    inputs = keras.Input((8, 8, 3))
    features = base(keras.layers.Rescaling(1 / 255)(inputs))
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    model = keras.Model(inputs, keras.layers.Dense(2)(pooled))

    assert compat.call_count(base) == 1
    output = compat.call_output(base)
    assert output is features and output is not base.output  # the outer graph's, not the inner
    assert keras.Model(model.inputs, output).output_shape == (None, 6, 6, 4)
    [consumer] = compat.consumers(base)
    assert isinstance(consumer.operation, keras.layers.GlobalAveragePooling2D)
    assert consumer.output is pooled

    base(keras.Input((8, 8, 3)))  # a second call
    assert compat.call_count(base) == 2
    assert len(compat.consumers(base)) == 1  # the second call's output is unused


@pytest.mark.filterwarnings("ignore:Model doesn't support `jit_compile=True`")
def test_all_layers_walks_nested_layers_as_kerass_jit_check_does():
    augment = keras.Sequential([keras.layers.RandomRotation(0.1)], name="augment")
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(augment(inputs)), name="outer")
    names = [layer.name for layer in compat.all_layers(model)]
    assert {"outer", "augment", augment.layers[0].name} <= set(names)
    blocking = [layer for layer in compat.all_layers(model) if not layer.supports_jit]
    assert blocking == [augment.layers[0]]
    model.jit_compile = True  # Keras refuses XLA for the same nested layer
    assert not model.jit_compile


# No private third-party API outside search/compat.py

THIRD_PARTY = ("keras", "keras_tuner", "optuna", "optuna_integration", "tensorflow", "tensorboard")
PRIVATE_MODULES = ("src", "python")  # keras.src, keras_tuner.src, tensorflow.python
ERROR_TEXTS = ("consecutive failures",)  # third-party error messages that compat matches
PACKAGES = ("search", "spaces", "reports")
COMPAT = REPO / "search" / "compat.py"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _sources() -> dict[Path, ast.Module]:
    paths = [p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))]
    return {p: ast.parse(p.read_text(), str(p)) for p in paths if p != COMPAT}


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return []


def _defined(trees: list[ast.Module]) -> set[str]:
    """Every name our own code defines: functions, classes, assigned names and attributes."""
    names = set()
    for node in (n for tree in trees for n in ast.walk(tree)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
    return names


def test_no_private_third_party_api_outside_compat():
    """A grep over the abstract syntax trees of search/, spaces/ and reports/ (compat.py
    aside): no import from a third-party module's private path (`keras.src`, `optuna._x`), no
    access to a leading-underscore attribute our own code does not define, and no matching of
    a third-party error message. Private methods overridden are checked by the next test."""
    sources = _sources()
    ours = _defined(list(sources.values()))
    offences = []
    for path, tree in sources.items():
        where = path.relative_to(REPO)
        for node in ast.walk(tree):
            for module in _imported(node):
                top, *rest = module.split(".")
                if top in THIRD_PARTY and any(_private(p) or p in PRIVATE_MODULES for p in rest):
                    offences.append(f"{where}:{node.lineno} imports {module}")
            if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in ours:
                offences.append(f"{where}:{node.lineno} uses .{node.attr}")
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                matched = [text for text in ERROR_TEXTS if text in node.value]
                offences += [f"{where}:{node.lineno} matches {text!r}" for text in matched]
    assert not offences, "private third-party API outside search/compat.py:\n" + "\n".join(offences)


def test_no_private_third_party_method_overridden_outside_compat():
    """No class of ours outside search/compat.py defines a leading-underscore attribute that a
    third-party base class of it already has (an override of a private method). Classes
    defined inside functions are not reached."""
    offences = []
    for package in PACKAGES:
        modules = pkgutil.walk_packages([str(REPO / package)], prefix=f"{package}.")
        for info in [pkgutil.ModuleInfo(None, package, True), *modules]:
            module = importlib.import_module(info.name)
            if module is compat:
                continue
            for cls in vars(module).values():
                if not inspect.isclass(cls) or cls.__module__ != module.__name__:
                    continue
                for base in cls.__mro__[1:]:
                    if base.__module__.split(".")[0] not in THIRD_PARTY:
                        continue
                    overridden = [n for n in vars(cls) if _private(n) and n in vars(base)]
                    offences += [f"{cls.__module__}.{cls.__name__}.{n}" for n in overridden]
    assert not offences, "private third-party method overridden outside search/compat.py: " + (
        ", ".join(offences)
    )


def test_import_optional_tensorflow_imports_it_where_it_is_installed_and_not_elsewhere():
    code = "import keras; from search import compat; print(compat.import_optional_tensorflow())"
    env = {"KERAS_BACKEND": "torch"}
    for environment, expected in ((cli_env() | env, "True"), (no_tensorflow_env(**env), "False")):
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=environment, cwd=REPO
        )
        assert result.stdout.strip().splitlines()[-1:] == [expected], result.stderr[-2000:]


def test_atomic_keras_tuner_files_route_keras_tuners_own_saves(tmp_path, monkeypatch):
    """Stateful.save (trial, oracle, tuner) writes through utils.save_json, so once replaced
    every Keras Tuner state file goes through atomic_write (tests/test_write_faults.py fills a
    real disk under it)."""
    written = []
    real = compat.atomic_write
    monkeypatch.setattr(
        compat, "atomic_write", lambda path, write: written.append(path) or real(path, write)
    )
    compat.atomic_keras_tuner_files()
    trial = kt.engine.trial.Trial(kt.HyperParameters(), trial_id="3")
    trial.save(str(tmp_path / "trial.json"))
    assert written == [tmp_path / "trial.json"]
    assert kt.engine.trial.Trial.load(str(tmp_path / "trial.json")).trial_id == "3"
