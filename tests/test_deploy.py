"""--measure-deploy: every complete trial's float32 TFLite size and latency, measured on the
kept weights' inference model, through the real command line on real photos."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import error_lines, run_cli

from search.store import RunStore


@pytest.fixture(scope="module")
def measured(tiny_folder, tmp_path_factory):
    runs = tmp_path_factory.mktemp("deploy")
    argv = ["--space", "augment", "--data", str(tiny_folder), "--max-trials", "2"]
    argv += ["--epochs", "1", "--image-size", "32", "--runs-dir", str(runs), "--name", "d"]
    result = run_cli(*argv, "--measure-deploy")
    assert result.returncode == 0, error_lines(result)[-5:]
    return RunStore(runs / "d")


def test_every_complete_trial_has_its_size_and_latency(measured):
    trials = measured.trials()
    assert list(trials["status"]) == ["complete", "complete"]
    assert (trials["tflite_kb"] > 0).all() and (trials["latency_ms"] > 0).all()
    assert (trials["latency_iqr_ms"] >= 0).all() and (trials["deploy_s"] > 0).all()
    assert trials["n_params"].nunique() == 1 or trials["tflite_kb"].nunique() == 2, (
        "a model of another size converts to a file of another size"
    )


def test_the_size_is_the_exported_files(measured, tmp_path):
    """The best trial's tflite_kb is the size of what `export --format tflite` writes: the
    same inference model (augmentation removed), converted the same way."""
    output = tmp_path / "model.tflite"
    result = run_cli("export", str(measured.run_dir), "--format", "tflite", "--output", str(output))
    assert result.returncode == 0, error_lines(result)[-5:]
    best = measured.best_trial()
    assert best["tflite_kb"] == pytest.approx(output.stat().st_size / 1024, abs=0.1)


def test_a_trial_over_a_size_limit_is_infeasible_and_never_best(measured, tiny_folder, tmp_path):
    """The same two trials (same seed) with a limit between their sizes: the larger one is
    recorded as infeasible with its figures, and the best model is the other."""
    sizes = measured.trials().set_index("trial_id")["tflite_kb"]
    if sizes.nunique() < 2:
        pytest.skip("both trials converted to files of one size")
    limit = (sizes.min() + sizes.max()) / 2
    argv = ["--space", "augment", "--data", str(tiny_folder), "--max-trials", "2"]
    argv += ["--epochs", "1", "--image-size", "32", "--runs-dir", str(tmp_path), "--name", "lim"]
    result = run_cli(*argv, "--max-size-kb", f"{limit:.1f}")
    assert result.returncode == 0, error_lines(result)[-5:]
    store = RunStore(tmp_path / "lim")
    trials = store.trials().set_index("trial_id")
    over = int(sizes.idxmax())
    assert trials.loc[over, "status"] == "infeasible"
    assert trials.loc[over, "error"].startswith("over the limit: tflite_kb +")
    assert trials.loc[over, "tflite_kb"] == pytest.approx(sizes.max(), rel=0.01)
    assert store.read_best_hparams()["trial_id"] == int(sizes.idxmin())


def test_optuna_samplers_learn_the_limits_as_constraints(tiny_folder, tmp_path):
    """An unreachable latency limit: every trial is infeasible, and the study holds each one's
    constraint values (positive: over), set on the trial, with no warning of Optuna's
    deprecated `constraints_func`."""
    import optuna

    argv = ["--space", "scratch", "--data", str(tiny_folder), "--max-trials", "2"]
    argv += ["--epochs", "1", "--image-size", "32", "--runs-dir", str(tmp_path), "--name", "o"]
    argv += ["--backend", "optuna", "--sampler", "tpe", "--max-latency-ms", "0.000001"]
    argv += ["--max-params", "1000000000"]
    result = run_cli(*argv)
    assert result.returncode == 1 and "no trial completed" in result.stdout
    assert "constraints_func" not in result.stderr
    store = RunStore(tmp_path / "o")
    assert list(store.trials()["status"]) == ["infeasible", "infeasible"]
    study = optuna.load_study(study_name="o", storage=f"sqlite:///{tmp_path / 'o' / 'study.db'}")
    for trial in study.trials:
        assert list(trial.constraints) == ["latency_ms", "n_params"]
        assert trial.constraints["latency_ms"] > 0 and trial.constraints["n_params"] < 0


def test_the_report_shows_the_tradeoff_without_a_front(measured):
    """One objective: accuracy against latency and size, every trial hoverable, no front."""
    html = (measured.run_dir / "report.html").read_text(encoding="utf-8")
    assert '<section id="tradeoff">' in html and "shown without a front" in html
    for trial_id in measured.trials()["trial_id"]:
        assert f'<g id="trial-{trial_id}-latency_ms">' in html
        assert f'<g id="trial-{trial_id}-tflite_kb">' in html
    assert "(Pareto front)" not in html


def test_trials_of_one_inference_graph_are_converted_once(tiny_folder, tmp_path):
    """Only learning rate and dropout vary: every trial after the first takes its figures,
    saying from which trial, without converting again."""
    argv = ["--space", "scratch", "--data", str(tiny_folder), "--max-trials", "3"]
    argv += ["--epochs", "1", "--image-size", "32", "--runs-dir", str(tmp_path), "--name", "c"]
    pins = ["conv_blocks=1", "filters_1=16", "kernel_size=3", "batch_norm=False"]
    pins += ["padding=same", "pooling=global_avg", "dense_units=0"]
    result = run_cli(*argv, "--measure-deploy", *[a for pin in pins for a in ("--fix", pin)])
    assert result.returncode == 0, error_lines(result)[-5:]
    trials = RunStore(tmp_path / "c").trials()
    assert trials["hp_learning_rate"].nunique() == 3
    assert pd.isna(trials.loc[0, "deploy_same_as"])
    assert list(trials.loc[1:, "deploy_same_as"]) == [0, 0]
    assert trials["tflite_kb"].nunique() == 1 and trials["latency_ms"].nunique() == 1
    assert (trials.loc[1:, "deploy_s"] < trials.loc[0, "deploy_s"] / 5).all()


def test_the_signature_is_what_the_converter_sees():
    """Two models that differ in dropout rate and augmentation convert to files of the same
    size and share a signature; another dense width changes both, and so does another input
    size (a global pooling makes the weights the same at both)."""
    import keras_tuner as kt

    from search.deploy import architecture_signature, inference_model
    from search.runtime import get_runtime
    from spaces import augment
    from spaces.context import DEFAULT_BACKBONE, SpaceContext

    ctx = SpaceContext(32, 2, DEFAULT_BACKBONE.with_weights(None))

    def fixed(values: dict) -> kt.HyperParameters:
        hp = kt.HyperParameters()
        for name, value in values.items():
            hp.Fixed(name, value)
        return hp

    def built(**values):
        return inference_model(augment.SPACE.build(fixed(values), ctx))

    plain = built(dense_dropout=0.0, rotation=0.0, dense_units=64)
    other = built(dense_dropout=0.4, rotation=0.2, dense_units=64)
    wider = built(dense_dropout=0.0, rotation=0.0, dense_units=128)
    assert architecture_signature(plain) == architecture_signature(other)
    assert architecture_signature(plain) != architecture_signature(wider)
    # Global pooling gives both sizes the same weights; the work per image still differs.
    pooled = {"dense_dropout": 0.0, "rotation": 0.0, "dense_units": 64, "pooling": "global_avg"}
    small = built(**pooled)
    random_weights = SpaceContext(48, 2, DEFAULT_BACKBONE.with_weights(None))
    larger = inference_model(augment.SPACE.build(fixed(pooled), random_weights))
    assert [w.shape for w in small.weights] == [w.shape for w in larger.weights]
    assert architecture_signature(small) != architecture_signature(larger)
    tflite_bytes = get_runtime().tflite_bytes
    assert len(tflite_bytes(plain)) == len(tflite_bytes(other))
    assert len(tflite_bytes(plain)) < len(tflite_bytes(wider))
