"""Every option and choice that `--help` documents, run end to end through the command line on
real tiny data (32 px photos from ../shared/data), each run checked for what its options promise.

`test_every_documented_option_has_an_end_to_end_test` reads the parsers and fails when one of
their options or choices is run neither here (RUNS) nor by a test named in ELSEWHERE, so a new
option cannot land untested.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from conftest import REPO, cli_env, error_lines, run_cli

from search.data import load_image_data
from search.schema import HP_PREFIX
from search.store import RunStore

TESTS = Path(__file__).parent
ONE_GB = 2**30


@dataclass(frozen=True)
class Run:
    """One command line, and what its run directory must then show."""

    name: str
    argv: tuple[str, ...]
    check: Callable[[RunStore, subprocess.CompletedProcess], None]
    needs: str | None = None  # a module that must be importable, else the run is skipped


def complete(store: RunStore, count: int) -> pd.DataFrame:
    trials = store.trials()
    assert (trials["status"] == "complete").sum() == count, trials[["status", "error"]]
    return trials


def hparams(trials: pd.DataFrame, *names: str) -> list[tuple]:
    return list(trials[[HP_PREFIX + n for n in names]].itertuples(index=False, name=None))


def clean_figures(store: RunStore, trials: pd.DataFrame) -> tuple[bool, bool]:
    """Whether every epoch, and every complete trial's best epoch, has its clean training
    accuracy (--clean-train-eval every: both; best: the trials only; off: neither)."""
    done = trials[trials["status"] == "complete"]
    epochs = store.epochs()
    epochs = epochs[epochs["trial_id"].isin(done["trial_id"])]

    def measured(frame: pd.DataFrame) -> bool:
        values = frame.get("train_accuracy_clean", pd.Series(dtype=float))
        assert values.notna().all() or values.isna().all(), values
        return bool(len(values)) and bool(values.notna().all())

    return measured(epochs), measured(done)


def check_baselines_tensorboard_images(store: RunStore, result) -> None:
    """--with-baselines runs the space's presets first; --tensorboard writes per-trial logs with
    HParams; --no-feature-cache trains the frozen base on images; --cache-dir holds the cache."""
    from spaces.baselines import preset_of

    trials = complete(store, 2)
    for _, trial in trials.iterrows():
        values = {k.removeprefix(HP_PREFIX): v for k, v in trial.items() if k.startswith(HP_PREFIX)}
        assert preset_of("transfer", values) is not None, values
    assert trials["features"].isna().all(), "no trial trained on cached features"
    for trial_id in trials["trial_id"]:
        events = list((store.run_dir / "tb" / f"trial_{trial_id}").rglob("events.out.tfevents*"))
        assert events, f"no TensorBoard events for trial {trial_id}"
        assert any(b"hparams" in e.read_bytes() for e in events), "no HParams record"
    assert list((store.run_dir.parent / "shared-cache").rglob("*.npy")), "--cache-dir unused"
    assert not (store.run_dir / "cache").exists(), "the run's own cache was used"


def check_verbose_seeds_and_report(store: RunStore, result) -> None:
    """--verbose shows Keras's progress; the seeds and budget are the ones asked for; `report`
    ranks by the penalised score when asked."""
    trials = complete(store, 3)
    assert re.search(r"^Epoch 1/2", result.stdout, re.M), "--verbose showed no progress"
    assert clean_figures(store, trials) == (False, True), "--clean-train-eval best"
    assert "--gpu-memory-mb 512 ignored: no GPU is visible" in result.stdout
    info = json.loads((store.run_dir / "run.json").read_text(encoding="utf-8"))
    assert (info["seed"], info["split_seed"], info["batch_size"]) == (3, 5, 16)
    assert info["jit"] == "on" and info["max_consecutive_failures"] == 2
    for rank_by in ("val_accuracy", "penalised"):
        report = run_cli(
            "report", str(store.run_dir), "--rank-by", rank_by, "--penalty", "0.5", "--onset-k", "3"
        )
        assert report.returncode == 0, error_lines(report)
        assert (store.run_dir / "report.html").exists()
        board = pd.read_csv(store.run_dir / "leaderboard.csv")
        assert len(board) == 3
        if rank_by == "penalised":
            gap = board["gap"].clip(lower=0)
            score = board["val_accuracy"] - 0.5 * gap
            assert score.is_monotonic_decreasing, board


def check_hyperband_hand_over(store: RunStore, result) -> None:
    """A Hyperband trial that continues an earlier one starts from that trial's stored weights:
    at a learning rate of 1e-5 its own stored weights stay within 1e-3 of its parent's, while
    two trials that started apart differ by far more."""
    trials = complete(store, len(store.trials()))
    column = HP_PREFIX + "tuner/trial_id"
    children = trials[trials[column].notna()]
    assert len(children), "no trial continued another"
    checkpoint = {
        int(path.parent.name.removeprefix("trial_")): path
        for path in (store.run_dir / "kt").rglob("checkpoint.weights.h5")
    }
    epochs = store.epochs()
    for _, child in children.iterrows():
        parent = int(child[column])
        first = epochs[epochs["trial_id"] == child["trial_id"]]["epoch"].min()
        assert first == child[HP_PREFIX + "tuner/initial_epoch"] + 1, "restarted at epoch 1"
        assert _weights_apart(checkpoint[parent], checkpoint[child["trial_id"]]) < 1e-3
    fresh = sorted(set(trials[trials[column].isna()]["trial_id"]))
    assert _weights_apart(checkpoint[fresh[0]], checkpoint[fresh[1]]) > 1e-2


def _weights_apart(a: Path, b: Path) -> float:
    """The largest difference between two weight files' layer weights (not the optimizer's
    state, which a continuing trial starts afresh)."""

    def arrays(path: Path) -> dict[str, np.ndarray]:
        found = {}
        with h5py.File(path, "r") as f:
            f.visititems(
                lambda name, item: (
                    found.__setitem__(name, item[()])
                    if isinstance(item, h5py.Dataset) and name.startswith("layers/")
                    else None
                )
            )
        return found

    first, second = arrays(a), arrays(b)
    assert first.keys() == second.keys() and first
    return max(float(np.abs(first[k] - second[k]).max()) for k in first)


def check_lazy_grid(store: RunStore, result) -> None:
    """Keras Tuner's grid is walked lazily: sized, then the first --max-trials points run."""
    trials = complete(store, 2)
    assert re.search(
        r"^grid search: [\d,]+ points; this run tries the first 2$", result.stdout, re.M
    )
    points = trials[[c for c in trials.columns if c.startswith(HP_PREFIX)]]
    assert not points.duplicated().any(), points
    assert clean_figures(store, trials) == (False, False), "--clean-train-eval off"
    info = json.loads((store.run_dir / "run.json").read_text(encoding="utf-8"))
    assert info["precision"] == "mixed_float16", "--mixed-precision on was not applied"


def check_optuna_grid(store: RunStore, result) -> None:
    """An Optuna grid of 2 poolings x 4 head widths runs each of its 8 points exactly once,
    although --max-trials allows 20."""
    assert "grid search: 8 points; this run tries all of them" in result.stdout
    trials = complete(store, 8)
    points = hparams(trials, "pooling", "dense_units")
    assert sorted(points) == sorted((p, u) for p in ("avg", "max") for u in (0, 32, 64, 128))


def check_pruned_or_complete(count: int) -> Callable[[RunStore, subprocess.CompletedProcess], None]:
    def check(store: RunStore, result) -> None:
        trials = store.trials()
        assert len(trials) == count, trials
        assert set(trials["status"]) <= {"complete", "pruned"}, trials[["status", "error"]]
        assert "complete" in set(trials["status"])

    return check


def check_enqueued_then_cmaes(store: RunStore, result) -> None:
    """The enqueued set runs first; CMA-ES (whose `cmaes` module Optuna imports only when it
    first samples) then proposes every later trial, none failing."""
    check_pruned_or_complete(3)(store, result)
    assert clean_figures(store, store.trials()) == (True, True), "--clean-train-eval every"
    first = store.trials().iloc[0]
    for name, value in ENQUEUED[0].items():
        assert first[HP_PREFIX + name] == value, (name, first[HP_PREFIX + name])


def check_confirmed_and_refit(store: RunStore, result) -> None:
    """--confirm-top 2 --confirm-seeds 2: the two best trials ran twice more each; the ranking
    follows the mean of their three runs, and best_model.keras is the winner's exported run.
    --refit: refit_model.keras trained on training + validation images, scored on test."""
    import keras

    from search.confirm import summarise

    trials = complete(store, 3)
    runs = pd.read_csv(store.run_dir / "confirm.csv")
    assert len(runs) == 6 and sorted(set(runs["run"])) == [0, 1, 2], runs
    summary = summarise(runs).set_index("trial_id")
    finalists = trials.set_index("trial_id").loc[summary.index]
    assert np.allclose(finalists["confirm_mean"], summary["confirm_mean"])
    assert (finalists["confirm_runs"] == 3).all()
    info = json.loads((store.run_dir / "run.json").read_text(encoding="utf-8"))
    winner = info["confirm"]["winner"]
    assert winner == summary["confirm_mean"].idxmax() == int(store.best_trial()["trial_id"])
    exported = runs[(runs["trial_id"] == winner) & (runs["run"] == info["confirm"]["exported_run"])]
    data = load_image_data(Path(info["data"]), 32, split_seed=info["split_seed"])
    model = keras.saving.load_model(store.best_model_path, safe_mode=True)
    _, accuracy = model.evaluate(data.validation.x, data.validation.y, verbose=0)
    assert accuracy == pytest.approx(float(exported["val_accuracy"].iloc[0]), abs=1e-6)
    refit = info["refit"]
    assert refit["trial_id"] == winner
    assert refit["train_images"] == len(data.train) + len(data.validation)
    refitted = keras.saving.load_model(store.run_dir / "refit_model.keras", safe_mode=True)
    _, test_accuracy = refitted.evaluate(data.test.x, data.test.y, verbose=0)
    assert test_accuracy == pytest.approx(refit["test_accuracy"], abs=1e-6)
    assert refit["test_accuracy_low"] <= refit["test_accuracy"] <= refit["test_accuracy_high"]


def check_all_complete(count: int) -> Callable[[RunStore, subprocess.CompletedProcess], None]:
    return lambda store, result: complete(store, count)


def check_one_baseline(store: RunStore, result) -> None:
    trials = complete(store, 1)
    assert list(trials[HP_PREFIX + "baseline"]) == ["seed000_cnn"]


TRANSFER_POINT = (  # every transfer hyperparameter but pooling and dense_units
    *("--fix", "flip=none", "--fix", "rotation=0", "--fix", "zoom=0", "--fix", "translation=0"),
    *("--fix", "contrast=0", "--fix", "dropout=0.2", "--fix", "dropout_position=after_dense"),
    *("--fix", "learning_rate=0.001", "--fix", "mode=frozen"),
    *("--fix", "fine_tune_at=0.65", "--fix", "fine_tune_learning_rate=1e-05"),
)
ONE_ARCHITECTURE = (
    *("--fix", "flip=none", "--fix", "rotation=0", "--fix", "zoom=0", "--fix", "translation=0"),
    *("--fix", "contrast=0", "--fix", "mode=frozen", "--fix", "pooling=avg"),
    *("--fix", "dense_units=0"),
)
OPTUNA = ("--backend", "optuna")
WEIGHTS = "WEIGHTS"  # replaced by the shared MobileNetV2 weights file
ENQUEUE = "ENQUEUE"  # replaced by a file holding ENQUEUED
ENQUEUED = [{"conv_blocks": 1, "filters_1": 32, "scaling": "mobilenet_v2", "flip": "none"}]

RUNS = [
    Run(
        "keras-tuner-baselines-tensorboard-images",
        (
            *("--space", "transfer", "--weights", WEIGHTS, "--algorithm", "random"),
            *("--with-baselines", "--tensorboard", "--no-feature-cache"),
            *("--max-trials", "2", "--epochs", "1", "--mixed-precision", "off", "--jit", "auto"),
            *("--cache-dir", "CACHE"),
        ),
        check_baselines_tensorboard_images,
    ),
    Run(
        "optuna-baselines-tensorboard-images",
        (
            *OPTUNA,
            *("--space", "transfer", "--weights", WEIGHTS, "--sampler", "tpe"),
            *("--pruner", "median", "--with-baselines", "--tensorboard", "--no-feature-cache"),
            *("--max-trials", "2", "--epochs", "1", "--cache-dir", "CACHE"),
        ),
        check_baselines_tensorboard_images,
    ),
    Run(
        "keras-tuner-bayesian-verbose-seeds",
        (
            *("--space", "scratch", "--algorithm", "bayesian", "--max-trials", "3"),
            *("--epochs", "2", "--patience", "1", "--seed", "3", "--split-seed", "5"),
            *("--batch-size", "16", "--max-consecutive-failures", "2", "--verbose", "--jit", "on"),
            *("--backend", "keras-tuner", "--mixed-precision", "auto", "--gpu-memory-mb", "512"),
            *("--clean-train-eval", "best"),
        ),
        check_verbose_seeds_and_report,
    ),
    Run(
        "keras-tuner-confirm-refit",
        (
            *("--space", "scratch", "--max-trials", "3", "--epochs", "2", "--batch-size", "16"),
            *("--confirm-top", "2", "--confirm-seeds", "2", "--refit"),
        ),
        check_confirmed_and_refit,
    ),
    Run(
        "keras-tuner-hyperband-hand-over",
        (
            *("--space", "transfer", "--weights", WEIGHTS, "--algorithm", "hyperband"),
            # One architecture for every trial (only the dropout rate is searched), so any
            # two trials' weights compare; a learning rate of 1e-5 barely moves them.
            *("--epochs", "3", "--fix", "learning_rate=1e-05", *ONE_ARCHITECTURE),
        ),
        check_hyperband_hand_over,
    ),
    Run(
        "keras-tuner-grid",
        (
            *("--space", "augment", "--algorithm", "grid", "--max-trials", "2", "--epochs", "1"),
            *("--mixed-precision", "on", "--clean-train-eval", "off"),
        ),
        check_lazy_grid,
    ),
    Run(
        "keras-tuner-baselines-space",
        ("--space", "baselines", "--weights", WEIGHTS, "--fix", "baseline=seed000_cnn"),
        check_one_baseline,
    ),
    Run(
        "optuna-grid",
        (
            *OPTUNA,
            *("--space", "transfer", "--weights", WEIGHTS, "--sampler", "grid"),
            *("--pruner", "none", "--max-trials", "20", "--epochs", "1", *TRANSFER_POINT),
        ),
        check_optuna_grid,
    ),
    Run(
        "optuna-random-hyperband-pruner",
        (
            *OPTUNA,
            *("--space", "xception", "--sampler", "random", "--pruner", "hyperband"),
            *("--max-trials", "2", "--epochs", "2", "--jit", "off"),
        ),
        check_pruned_or_complete(2),
    ),
    Run(
        "optuna-cmaes-successive-halving",
        (
            *OPTUNA,
            *("--space", "preprocess", "--sampler", "cmaes", "--pruner", "successive-halving"),
            *("--max-trials", "3", "--epochs", "1", "--enqueue", ENQUEUE),
            *("--clean-train-eval", "every"),
        ),
        check_enqueued_then_cmaes,
    ),
    Run(
        "optuna-gp",
        (
            *OPTUNA,
            *("--space", "transfer", "--weights", WEIGHTS, "--sampler", "gp", "--pruner", "none"),
            # GPSampler samples at random for its first 10 trials: the 11th is the GP's.
            *("--max-trials", "11", "--epochs", "1", "--fix", "mode=frozen"),
        ),
        check_all_complete(11),
        needs="torch",
    ),
]


def _argv(run: Run, data: Path, runs_dir: Path, weights: Path) -> list[str]:
    enqueue = runs_dir / "enqueue.json"
    enqueue.write_text(json.dumps(ENQUEUED), encoding="utf-8")
    swap = {WEIGHTS: str(weights), "CACHE": str(runs_dir / "shared-cache"), ENQUEUE: str(enqueue)}
    common = ["--data", str(data), "--image-size", "32", "--runs-dir", str(runs_dir)]
    return [swap.get(a, a) for a in run.argv] + [*common, "--name", run.name]


@pytest.mark.parametrize("run", RUNS, ids=[r.name for r in RUNS])
def test_documented_options_end_to_end(run, tiny_folder, weights_file, tmp_path):
    if run.needs and importlib.util.find_spec(run.needs) is None:
        pytest.skip(f"{run.needs} is not installed (pip install -e '.[gp]')")
    result = run_cli(*_argv(run, tiny_folder, tmp_path, weights_file))
    assert result.returncode == 0, (result.stdout[-2000:], error_lines(result)[-20:])
    assert re.search(r"^best trial \d+: val_acc=", result.stdout, re.M), result.stdout[-2000:]
    run.check(RunStore(tmp_path / run.name), result)


def peak_rss_of(argv: list[str]) -> tuple[subprocess.CompletedProcess, int]:
    """Run the CLI in a fresh process whose only child it is, and return its peak RSS (bytes)."""
    probe = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stdout.write(done.stdout); sys.stderr.write(done.stderr)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(done.returncode)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, sys.executable, str(REPO / "run_search.py"), *argv],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env=cli_env(),
    )
    return result, int(result.stdout.strip().splitlines()[-1]) * 1024


@pytest.mark.bad_input
@pytest.mark.parametrize("space", ["scratch", "transfer"])
def test_an_oversized_optuna_grid_is_refused_in_one_line_under_1_gb(
    space, tiny_folder, weights_file, tmp_path
):
    """Optuna's GridSampler lists every point: for the scratch space, 2.6e12 of them, which took
    24 GB and the OOM killer. The grid is sized first and refused, naming how to shrink it."""
    argv = [*OPTUNA, "--space", space, "--sampler", "grid", "--data", str(tiny_folder)]
    argv += ["--image-size", "32", "--weights", str(weights_file), "--runs-dir", str(tmp_path)]
    result, peak = peak_rss_of(argv)
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = error_lines(result)
    assert "--sampler grid: this space has" in line and "grid points, over the 10,000" in line
    assert "--fix NAME=VALUE" in line
    assert peak < ONE_GB, f"peak RSS {peak / 2**20:.0f} MiB"
    assert not list(tmp_path.rglob("trials.csv")), "a trial started"


# Options run end to end by other tests, each named with the test that runs it.
ELSEWHERE = {
    "--backbones": "test_backbones.py::test_every_backbone_searched_through_the_cli",
    "--resume": "test_search.py::test_resume_takes_the_stored_settings_from_the_cli",
    "--allow-changed-space": "test_user_space.py::test_resume_refuses_a_changed_space_file",
    "--labels": "test_labels.py::test_a_labels_csv_run",
    "--quiet": "test_cli.py::test_quiet_prints_only_the_result",
    "--measure-deploy": "test_deploy.py::measured",
    "--max-size-kb": "test_deploy.py::test_a_trial_over_a_size_limit",
    "--max-latency-ms": "test_deploy.py::test_optuna_samplers_learn_the_limits",
    "--max-params": "test_deploy.py::test_optuna_samplers_learn_the_limits",
    "--objective=val_accuracy": "test_objective.py::test_a_run_ranks_and_picks_by_its_objective",
    "--objective=val_loss": "test_objective.py::test_a_run_ranks_and_picks_by_its_objective",
    "--objective=val_auc": "test_objective.py::test_a_run_ranks_and_picks_by_its_objective",
    "--objective=val_f1": "test_objective.py::test_a_run_ranks_and_picks_by_its_objective",
    "--class-weight=none": "test_class_weight.py::test_class_weight_runs_from_the_command_line",
    "--class-weight=balanced": "test_class_weight.py::test_class_weight_runs_from_the_command",
    "--warmup-epochs": "test_early_stopping.py::test_a_search_with_a_warmup_keeps",
    "--checkpoint-every": "test_epoch_checkpoint.py::test_checkpoint_ctrl_c_then_resume_goes_on",
    "--max-memory-growth": "test_reliability.py::test_failure_a_process_that_grows",
    "--storage": "test_optuna.py::test_workers_on_two_machines",
    "--workers": "test_optuna.py::test_workers_on_two_machines",
    "--heartbeat": "test_optuna.py::test_a_trial_killed_before_its_first_heartbeat",
    "--rank-by=val_accuracy": "test_options.py::check_verbose_seeds_and_report",
    "--rank-by=penalised": "test_options.py::check_verbose_seeds_and_report",
    "--penalty": "test_options.py::check_verbose_seeds_and_report",
    "--onset-k": "test_options.py::check_verbose_seeds_and_report",
    "--format=keras": "test_export.py::exports",
    "--format=savedmodel": "test_export.py::exports",
    "--format=tflite": "test_export.py::cli_tflite",
    "--output": "test_export.py::cli_tflite",
    "--objectives": "test_pareto.py::front_run",
    "--image-sizes": "test_pareto.py::front_run",
    "--sampler=auto": "test_pareto.py::front_run",
    "--sampler=nsga2": "test_pareto.py::test_nsga2_learns_the_limits",
    "--trial": "test_quantize.py::test_the_best_trial_exports_by_its_number",
    "--quantize=dynamic": "test_quantize.py::quantized",
    "--quantize=float16": "test_quantize.py::quantized",
    "--quantize=int8": "test_quantize.py::quantized",
    "--startup-trials": "test_startup_trials.py::test_tpe_models_the_results",
    "--keras-backend": "test_keras_backends.py::test_a_jax_search",
    "--format=onnx": "test_backend_export.py::test_onnx_export_on_jax_goes_through",
}


def documented(parser: argparse.ArgumentParser) -> set[str]:
    """Every option of `parser` that --help shows, and `--option=choice` for each choice."""
    found = set()
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or not action.option_strings:
            continue
        if isinstance(action, argparse._HelpAction):
            continue
        option = max(action.option_strings, key=len)
        found.add(option)
        found |= {f"{option}={choice}" for choice in action.choices or ()}
    return found


def covered_by_runs() -> set[str]:
    covered = {"--data", "--image-size", "--runs-dir", "--name"}  # every run passes them
    for run in RUNS:
        for option, value in zip(run.argv, (*run.argv[1:], ""), strict=True):
            if option.startswith("--"):
                covered |= {option, f"{option}={value}"}
    return covered


def _test_source(reference: str) -> str:
    """The source of the test `file.py::name_prefix` refers to (the name may be shortened)."""
    file, name = reference.split("::")
    tree = ast.parse((TESTS / file).read_text(encoding="utf-8"))
    found = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith(name)
    ]
    assert len(found) == 1, f"{reference}: no single test of that name"
    return ast.get_source_segment((TESTS / file).read_text(encoding="utf-8"), found[0])


def test_every_documented_option_has_an_end_to_end_test():
    from search.cli import export_parser, predict_parser, report_parser, search_parser

    wanted = set()
    for parser in (search_parser(), report_parser(), export_parser(), predict_parser()):
        wanted |= documented(parser)
    covered = covered_by_runs()
    for option, reference in ELSEWHERE.items():
        source = _test_source(reference)
        flag, _, choice = option.partition("=")
        assert f'"{flag}"' in source, f"{reference} does not run {flag}"
        assert not choice or f'"{choice}"' in source, f"{reference} does not run {option}"
        covered |= {option, flag}
    missing = sorted(wanted - covered)
    assert not missing, f"documented but never run end to end: {missing}"


BLOCKED_IMPORT = """
import sys
from importlib.abc import MetaPathFinder

class Uninstalled(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == sys.argv[1]:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Uninstalled())
from search.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.bad_input
@pytest.mark.parametrize(("sampler", "module"), [("cmaes", "cmaes"), ("gp", "torch")])
def test_a_sampler_whose_package_is_missing_is_refused_before_any_trial(
    sampler, module, tiny_folder, tmp_path
):
    """Optuna imports cmaes (and torch) only when it first samples: without them the first trial
    ran and every later one failed. Here the package cannot be imported, as on a machine
    without it, and the run is refused in one line naming what to install."""
    argv = [*OPTUNA, "--sampler", sampler, "--space", "scratch", "--data", str(tiny_folder)]
    argv += ["--image-size", "32", "--runs-dir", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORT, module, *argv],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=cli_env(),
    )
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = error_lines(result)
    assert f"--sampler {sampler} needs the {module} package" in line
    assert "pip install" in line
    assert not any(tmp_path.iterdir()), "a run directory was created"
