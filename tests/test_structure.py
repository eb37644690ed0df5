"""The code's shape, as DESIGN.md describes it: data flows one way (spaces/ imports nothing of
search/ or reports/, and search/ reaches reports/ only from its entry points), every back end
and space provides its documented interface, defaults are written once, and functions stay
short, taking keyword arguments beyond three."""

from __future__ import annotations

import ast
import inspect
from dataclasses import fields
from pathlib import Path

import pytest

from search.backends import BACKENDS, Backend, Trials, get_backend
from search.cli import parse_search, search_parser
from search.config import SearchConfig
from search.store import RunStore
from search.trial import TrainSettings, TrialRunner
from search.trial_edge import TrialOutcome
from spaces import SPACES, Space, get_space
from spaces.context import SpaceContext

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("search", "spaces", "reports")
MAX_FUNCTION_LINES = 60
# The declarative argparse table: one add_argument call per option, nothing to split.
LONG_ALLOWED = {("search/cli.py", "search_parser")}
MAX_POSITIONAL = 3
ENTRY_POINTS = ("search/cli.py", "search/api.py")


def _modules(package: str) -> dict[str, ast.Module]:
    return {
        str(path.relative_to(REPO)): ast.parse(path.read_text(encoding="utf-8"))
        for path in sorted((REPO / package).rglob("*.py"))
    }


def _functions(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def _imported_packages(tree: ast.Module) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_no_function_is_over_60_lines():
    long = [
        f"{path}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for package in PACKAGES
        for path, tree in _modules(package).items()
        for node in _functions(tree)
        if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
        and (path, node.name) not in LONG_ALLOWED
    ]
    assert not long, "\n".join(long)


def test_functions_take_keyword_arguments_beyond_three():
    offences = []
    for package in PACKAGES:
        for path, tree in _modules(package).items():
            for node in _functions(tree):
                positional = [*node.args.posonlyargs, *node.args.args]
                if positional and positional[0].arg in ("self", "cls"):
                    positional = positional[1:]
                if len(positional) > MAX_POSITIONAL:
                    offences.append(f"{path}:{node.lineno} {node.name}({len(positional)})")
    assert not offences, "\n".join(offences)


@pytest.mark.parametrize(
    ("package", "may_not_import"),
    [("spaces", {"search", "reports"}), ("search", {"reports"})],
)
def test_data_flows_one_way(package, may_not_import):
    """spaces/ only declares; the search gets the report as a hook from its entry points, the
    command line (cli.py) and the Python API (api.py), the modules of search/ that may import
    reports/."""
    offences = [
        f"{path} imports {sorted(_imported_packages(tree) & may_not_import)}"
        for path, tree in _modules(package).items()
        if path not in ENTRY_POINTS and _imported_packages(tree) & may_not_import
    ]
    assert not offences, "\n".join(offences)


@pytest.mark.parametrize("name", list(BACKENDS))
def test_every_back_end_provides_the_backend_protocol(name):
    """Each function of the Protocol, with its parameters, in the registered module."""
    backend = get_backend(name)
    for method, declared in vars(Backend).items():
        if method.startswith("_") or not callable(declared):
            continue
        wanted = list(inspect.signature(declared).parameters)[1:]  # without self
        provided = getattr(backend, method, None)
        assert callable(provided), f"{BACKENDS[name].module} has no {method}()"
        assert list(inspect.signature(provided).parameters) == wanted, method


@pytest.mark.parametrize("name", list(SPACES))
def test_every_space_declares_a_space_of_its_name(name):
    space = get_space(name)
    assert isinstance(space, Space) and space.name == name
    assert space.fine_tune is not None or not space.second_stage, "a second stage needs fine_tune"


def test_defaults_are_written_once():
    """The command line and the trial settings take their defaults from SearchConfig."""
    parsed = parse_search([])
    built = SearchConfig(name=parsed.name)
    command_only = {"max_memory_growth"}  # a command can be restarted, a Python call cannot
    for field in fields(SearchConfig):
        if field.name not in command_only:
            assert getattr(parsed, field.name) == getattr(built, field.name), field.name
    assert parsed.max_memory_growth > 0 and built.max_memory_growth == 0
    settings = TrainSettings()
    derived = {"precision", "limits"}  # from the devices, and from SearchConfig.limits()
    for field in fields(TrainSettings):
        if field.name not in derived:
            assert getattr(settings, field.name) == getattr(built, field.name), field.name
    assert settings.limits == tuple(built.limits().items())
    shown = {a.dest: a.default for a in search_parser()._actions}
    assert shown["epochs"] == SearchConfig.epochs and shown["space"] == SearchConfig.space


def _module_name(path: str) -> str:
    """search/backends/optuna.py -> search.backends.optuna; a package's __init__ is the package."""
    parts = path.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.Module) -> set[int]:
    """The ids of the import nodes under `if TYPE_CHECKING:`, which never run."""
    return {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        for statement in node.body
        for child in ast.walk(statement)
    }


def _imported_modules(node: ast.Import | ast.ImportFrom, package: str, known: set[str]) -> set[str]:
    """The modules of `known` that `node` runs: relative imports resolved against `package`,
    and `from a import b` counted as module a.b where b is one, else as a."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names} & known
    base = node.module or ""
    if node.level:
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*anchor, *([base] if base else [])])
    found = {f"{base}.{alias.name}" for alias in node.names} & known
    if len(found) < len(node.names):  # some names are attributes of `base` itself
        found |= {base} & known
    return found


def _search_import_graph() -> dict[str, set[str]]:
    """Each module of search/ -> the modules of search/ it imports, at its top or inside a
    function (only `if TYPE_CHECKING:` blocks left out, as they never run)."""
    trees = {_module_name(path): (path, tree) for path, tree in _modules("search").items()}
    graph = {}
    for name, (path, tree) in trees.items():
        package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
        skipped = _type_checking_only(tree)
        graph[name] = set().union(
            *(
                _imported_modules(node, package, set(trees))
                for node in ast.walk(tree)
                if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in skipped
            )
        )
    return graph


def _shortest_cycle(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """The shortest import path from `start` back to itself, or None."""
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for target in sorted(graph[path[-1]]):
            if target == start:
                return [*path, start]
            if target not in seen:
                seen.add(target)
                paths.append([*path, target])
    return None


def test_the_import_graph_resolves_relative_imports_and_modules_imported_from_packages():
    known = {"search", "search.compat", "search.backends", "search.backends.optuna"}

    def imports(source: str, package: str) -> set[str]:
        return _imported_modules(ast.parse(source).body[0], package, known)

    assert imports("from . import compat", "search") == {"search.compat"}
    assert imports("from .. import compat", "search.backends") == {"search.compat"}
    assert imports("from .optuna import OptunaBackend", "search.backends") == {
        "search.backends.optuna"
    }
    assert imports("from search import compat, run", "search") == {"search.compat", "search"}
    assert imports("import search.backends.optuna, os", "search") == {"search.backends.optuna"}


def test_the_import_graph_of_search_has_no_cycle():
    """A cycle hidden by an import inside a function still ties both modules together: neither
    can be understood, tested or moved alone. Each module's shortest cycle is printed once."""
    graph = _search_import_graph()
    assert "search.labels" in graph["search.data"], "a top-level import is missed"
    assert "search.api" in graph["search"], "`from search import api` in a function is missed"
    cycles, seen = [], set()
    for module in sorted(graph):
        cycle = _shortest_cycle(graph, module)
        if cycle and frozenset(cycle) not in seen:
            seen.add(frozenset(cycle))
            cycles.append(" -> ".join(cycle))
    assert not cycles, "import cycles among search/ modules:\n" + "\n".join(cycles)


MAX_CLASS_LINES = 250
# What only TensorFlow can do lives behind the runtime seam (search/runtime/, DESIGN.md).
MAX_TENSORFLOW_MODULES = 2
SHIPPING = {"search.deploy", "search.export", "search.predict", "search.quantize"}


def test_no_class_in_search_is_over_250_lines():
    long = [
        f"{path}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path, tree in _modules("search").items()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES
    ]
    assert not long, "\n".join(long)


def test_the_training_loop_imports_nothing_that_ships_a_model():
    """Deployment figures reach a trial through a hook the run's preparation installs
    (search/deployment_hook.py): search/trial.py imports none of deploy, export, predict or
    quantize, nor does any module it imports."""
    graph = _search_import_graph()
    reached, todo = set(), ["search.trial"]
    while todo:
        for module in graph.get(todo.pop(), ()):
            if module not in reached:
                reached.add(module)
                todo.append(module)
    assert not reached & SHIPPING, sorted(reached & SHIPPING)


def test_at_most_two_modules_of_search_import_tensorflow():
    importing = sorted(
        path
        for path, tree in _modules("search").items()
        if "tensorflow" in _imported_packages(tree)
    )
    assert len(importing) <= MAX_TENSORFLOW_MODULES, importing


def _runner_attributes(tree: ast.Module) -> set[str]:
    """The attributes a back-end module reads of the runner it is given (`runner.x`, and
    `self.runner.x` in a Keras Tuner tuner)."""
    read = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        owner = node.value
        if (isinstance(owner, ast.Name) and owner.id == "runner") or (
            isinstance(owner, ast.Attribute) and owner.attr == "runner"
        ):
            read.add(node.attr)
    return read


def _contract(protocol: type) -> set[str]:
    members = {name for name in vars(protocol) if not name.startswith("_")}
    return members | set(getattr(protocol, "__annotations__", {}))


@pytest.mark.parametrize("name", list(BACKENDS))
def test_back_ends_use_only_the_trial_edge(name):
    """A back end reaches the runner through `Trials` alone (run, view, check_memory, space,
    ctx): never its store, checkpoints or settings."""
    path = BACKENDS[name].module.replace(".", "/") + ".py"
    read = _runner_attributes(_modules("search")[path])
    assert read, f"{path} never uses its runner"
    assert read <= _contract(Trials), sorted(read - _contract(Trials))


def test_the_trial_runner_provides_the_trial_edge(tiny_data, tmp_path):
    """A real runner has every member of `Trials`, each function with its parameters; a
    request and an outcome are one value each, and the view reads the run's own store."""
    store = RunStore(tmp_path / "run")
    store.create()
    runner = TrialRunner(
        get_space("scratch"), SpaceContext(32, 2), tiny_data, store=store, settings=TrainSettings()
    )
    for member in _contract(Trials):
        assert hasattr(runner, member), member
        declared = getattr(Trials, member, None)
        if callable(declared):
            wanted = list(inspect.signature(declared).parameters)[1:]
            assert list(inspect.signature(getattr(runner, member)).parameters) == wanted, member
    assert list(inspect.signature(runner.run).parameters) == ["request"]
    assert TrialOutcome._fields == ("result", "model")
    view = runner.view
    assert (view.run_dir, view.objective, view.direction) == (store.run_dir, "val_accuracy", "max")
    assert view.completed(0) is None and not view.has_checkpoint(0)
    assert not any(hasattr(view, name) for name in ("store", "settings", "checkpoints"))
