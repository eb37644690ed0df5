"""--startup-trials: the random trials a model-based sampler tries before it models the results,
on both back ends, end to end through the CLI on real tiny images. Two runs with the same seed
propose the same random first trials; the one told to stop its random start-up sooner proposes
its next trial from the model instead, so that trial differs."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import error_lines, run_cli

from search.schema import HP_PREFIX
from search.store import RunStore

TINY = ("--epochs", "1", "--image-size", "32", "--batch-size", "16", "--max-memory-growth", "0")


def search(folder, runs, name: str, *extra: str) -> list[dict]:
    """The run's trials' hyperparameters, in trial order (one process: no restart reseeds)."""
    result = run_cli(
        *("--space", "scratch", "--data", str(folder), "--runs-dir", str(runs), "--name", name),
        *TINY,
        *extra,
    )
    assert result.returncode == 0, error_lines(result)[-5:]
    trials = RunStore(runs / name).trials()
    assert (trials["status"] == "complete").all()
    # A hyperparameter only a later trial used is a column, empty in the earlier rows.
    points = trials.filter(like=HP_PREFIX).to_dict("records")
    return [{name: v for name, v in point.items() if pd.notna(v)} for point in points]


def test_tpe_models_the_results_after_its_startup_trials(tiny_folder, tmp_path):
    optuna = ("--backend", "optuna", "--sampler", "tpe", "--max-trials", "3", "--seed", "5")
    default = search(tiny_folder, tmp_path, "default", *optuna)  # TPE's 10: all 3 random
    sooner = search(tiny_folder, tmp_path, "sooner", *optuna, "--startup-trials", "2")
    assert sooner[:2] == default[:2], "the random start-up is the same seeded draw"
    assert sooner[2] != default[2], "trial 2 comes from TPE's model, not its random start-up"
    assert RunStore(tmp_path / "sooner").read_run_info()["startup_trials"] == 2


def test_the_bayesian_oracle_models_the_results_after_its_startup_trials(tiny_folder, tmp_path):
    bayesian = ("--backend", "keras-tuner", "--algorithm", "bayesian", "--max-trials", "2")
    default = search(tiny_folder, tmp_path, "default", *bayesian)  # 3 per hyperparameter
    sooner = search(tiny_folder, tmp_path, "sooner", *bayesian, "--startup-trials", "1")
    assert sooner[0] == default[0]
    assert sooner[1] != default[1], "trial 1 comes from the Gaussian process"
    (oracle,) = (tmp_path / "sooner").glob("kt/**/oracle.json")
    assert json.loads(oracle.read_text())["num_initial_points"] == 1


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (("--backend", "optuna", "--sampler", "random"), "--sampler random has no start-up"),
        (("--backend", "optuna", "--sampler", "nsga2"), "--sampler nsga2 has no start-up"),
        (("--backend", "keras-tuner", "--algorithm", "hyperband"), "--algorithm hyperband has"),
    ],
)
def test_a_sampler_without_a_random_startup_refuses_it_in_one_line(
    argv, named, tiny_folder, tmp_path
):
    result = run_cli(
        *argv,
        *("--startup-trials", "2", "--space", "scratch", "--data", str(tiny_folder)),
        *("--runs-dir", str(tmp_path), "--name", "refused"),
    )
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "--startup-trials" in line and named in line
    assert not (tmp_path / "refused").exists()
