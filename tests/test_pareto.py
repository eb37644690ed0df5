"""--objectives and --image-sizes: a multi-objective Optuna search whose trials.csv marks the
Pareto front, whose front models are kept, and whose input size is searched, through the real
command line on real photos."""

from __future__ import annotations

import json

import keras
import optuna
import pandas as pd
import pytest
from conftest import error_lines, run_cli

from search.pareto import front_ids
from search.store import RunStore

SIZES = (32, 40)


def dominated(row: dict, others: list[dict]) -> bool:
    """Worked out by hand for (val_accuracy up, tflite_kb down)."""
    return any(
        o["val_accuracy"] >= row["val_accuracy"]
        and o["tflite_kb"] <= row["tflite_kb"]
        and (o["val_accuracy"] > row["val_accuracy"] or o["tflite_kb"] < row["tflite_kb"])
        for o in others
    )


@pytest.fixture(scope="module")
def front_run(tiny_folder, tmp_path_factory):
    runs = tmp_path_factory.mktemp("pareto")
    first = runs / "first.json"  # both sizes among the trials, whatever the sampler draws
    first.write_text(json.dumps([{"image_size": 32}, {"image_size": 40}]))
    argv = ["--space", "scratch", "--data", str(tiny_folder), "--max-trials", "5"]
    argv += ["--epochs", "1", "--runs-dir", str(runs), "--name", "p", "--backend", "optuna"]
    argv += ["--objectives", "val_accuracy,tflite_kb", "--image-sizes", "32,40"]
    result = run_cli(*argv, "--enqueue", str(first), "--sampler", "auto")
    assert result.returncode == 0, error_lines(result)[-5:]
    return RunStore(runs / "p"), result


def test_the_pareto_column_is_the_front_worked_out_by_hand(front_run):
    store, _ = front_run
    trials = store.trials()
    assert (trials["status"] == "complete").all()
    rows = trials.to_dict("records")
    for row in rows:
        others = [o for o in rows if o["trial_id"] != row["trial_id"]]
        assert bool(row["pareto"]) == (not dominated(row, others)), row["trial_id"]
    assert trials["pareto"].any()
    html = (store.run_dir / "report.html").read_text(encoding="utf-8")
    assert html.count("(Pareto front)") >= len(store.pareto_front())


def test_the_front_is_optunas_own(front_run):
    """The study was multi-objective in the given directions, and Optuna's best_trials (its
    Pareto front) are the trials marked on it."""
    store, _ = front_run
    study = optuna.load_study(study_name="p", storage=f"sqlite:///{store.run_dir / 'study.db'}")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert type(study.sampler).__name__ == "TPESampler"  # load_study's; the run's is below
    optuna_front = {t.number for t in study.best_trials}
    assert optuna_front == store.pareto_front()
    values = {t.number: t.values for t in study.trials}
    for row in store.trials().to_dict("records"):
        assert values[row["trial_id"]] == [
            pytest.approx(row["val_accuracy"]),
            pytest.approx(row["tflite_kb"]),
        ]


def test_the_front_models_are_kept_and_take_their_own_size(front_run):
    store, _ = front_run
    front = store.pareto_front()
    kept = {int(p.stem.split("-")[1]) for p in store.models_dir.glob("trial-*.keras")}
    assert kept == front
    sizes = store.trials().set_index("trial_id")["hp_image_size"]
    for trial_id in front:
        model = keras.saving.load_model(store.model_path(trial_id), safe_mode=True)
        assert model.input_shape[1:3] == (sizes[trial_id], sizes[trial_id])


def test_each_size_is_searched_and_decoded_once(front_run):
    store, result = front_run
    trials = store.trials()
    assert set(trials["hp_image_size"]) == set(SIZES)
    assert len(list((store.run_dir / "cache").glob("images-*"))) == len(SIZES)
    info = store.read_run_info()
    assert info["objectives"] == ["val_accuracy", "tflite_kb"]
    assert info["image_sizes"] == list(SIZES) and info["image_size"] == max(SIZES)
    assert info["sampler"] == "auto"
    # The best trial is scored on the test images at its own size.
    best = store.best_trial()
    assert best["val_accuracy"] == trials["val_accuracy"].max()
    assert not pd.isna(best["test_accuracy"])
    assert "KB" in result.stderr + result.stdout  # each trial's line shows its size


def test_keras_tuner_searches_the_size_too(tiny_folder, tmp_path):
    argv = ["--space", "scratch", "--data", str(tiny_folder), "--max-trials", "3"]
    argv += ["--epochs", "1", "--runs-dir", str(tmp_path), "--name", "k"]
    result = run_cli(*argv, "--image-sizes", "32,40", "--fix", "image_size=40")
    assert result.returncode == 0, error_lines(result)[-5:]
    store = RunStore(tmp_path / "k")
    assert list(store.trials()["hp_image_size"]) == [40, 40, 40]
    model = keras.saving.load_model(store.best_model_path, safe_mode=True)
    assert model.input_shape[1:3] == (40, 40)


def test_nsga2_learns_the_limits(tiny_folder, tmp_path):
    """NSGA-II, named, with a parameter limit no model meets: each trial holds its excess as
    its constraint (no deprecated `constraints_func` warned of), and no trial is on the
    front."""
    argv = ["--space", "scratch", "--data", str(tiny_folder), "--max-trials", "2"]
    argv += ["--epochs", "1", "--image-size", "32", "--runs-dir", str(tmp_path), "--name", "n"]
    argv += ["--backend", "optuna", "--sampler", "nsga2", "--max-params", "10"]
    result = run_cli(*argv, "--objectives", "val_loss,n_params")
    assert result.returncode == 1 and "no trial completed" in result.stdout
    assert "constraints_func" not in result.stderr
    store = RunStore(tmp_path / "n")
    assert set(store.trials()["status"]) == {"infeasible"}
    assert not store.trials()["pareto"].any() and not store.pareto_front()
    study = optuna.load_study(study_name="n", storage=f"sqlite:///{store.run_dir / 'study.db'}")
    for trial in study.trials:
        assert list(trial.constraints) == ["n_params"] and trial.constraints["n_params"] > 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--objectives", "val_accuracy,latency_ms"], "Keras Tuner optimises one objective"),
        (
            ["--backend", "optuna", "--sampler", "cmaes", "--objectives", "val_loss,n_params"],
            "--sampler cmaes optimises one objective",
        ),
        (["--objectives", "val_accuracy,speed"], "unknown objective 'speed'"),
        (["--objectives", "val_accuracy"], "give two or more different objectives"),
        (["--objectives", "latency_ms,tflite_kb"], "name a validation objective too"),
        (
            ["--objective", "val_f1", "--objectives", "val_accuracy,n_params"],
            "--objective val_f1 is not among --objectives",
        ),
        (["--image-sizes", "32"], "give two or more different sizes"),
        (["--image-sizes", "32,40", "--image-size", "64"], "64 is not among --image-sizes"),
        (["--image-sizes", "32,40", "--refit"], "rerun them with --fix image_size=SIZE"),
    ],
)
def test_bad_combinations_get_one_line(tiny_folder, tmp_path, options, message):
    argv = ["--space", "scratch", "--data", str(tiny_folder), "--runs-dir", str(tmp_path)]
    result = run_cli(*argv, *options)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_front_ids_of_a_hand_made_table():
    """Maximised and minimised objectives; an infeasible trial dominates nothing; a tie stays
    on the front with its twin."""
    trials = pd.DataFrame(
        {
            "trial_id": [0, 1, 2, 3, 4, 5],
            "status": ["complete", "complete", "complete", "infeasible", "complete", "failed"],
            "val_loss": [0.5, 0.4, 0.6, 0.1, 0.4, None],
            "latency_ms": [2.0, 3.0, 1.0, 0.5, 3.0, None],
        }
    )
    assert front_ids(trials, ["val_loss", "latency_ms"]) == {0, 1, 2, 4}
    trials.loc[0, "latency_ms"] = 3.5  # now worse than trial 1 on both
    assert front_ids(trials, ["val_loss", "latency_ms"]) == {1, 2, 4}
