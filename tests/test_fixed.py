"""`--fix NAME=VALUE` pins a hyperparameter for both back ends, and refuses what the space lacks."""

from __future__ import annotations

import optuna
import pytest
from conftest import error_lines, run_cli

from search.errors import UsageError
from search.fixed import agreeing, check_enqueued, parse_fixed, pinned_space
from search.steps import SearchConfig, run_search
from spaces import declared_space, get_space
from spaces.context import DEFAULT_BACKBONE, SpaceContext


@pytest.fixture(scope="module")
def transfer_space(weights_file):
    ctx = SpaceContext(32, 2, DEFAULT_BACKBONE.with_weights(str(weights_file)))
    return declared_space(get_space("transfer"), ctx)


def test_values_are_read_as_the_space_declares_them(transfer_space):
    fixed = parse_fixed(
        ["mode=fine_tune", "fine_tune_at=0.5", "rotation=0", "dense_units=64", "zoom=0.25"],
        transfer_space,
    )
    assert fixed == {
        "mode": "fine_tune",
        "fine_tune_at": 0.5,
        "rotation": 0.0,
        "dense_units": 64,
        "zoom": 0.25,
    }
    # A pinned conditional hyperparameter keeps its condition, and nothing is declared twice.
    pinned = pinned_space(transfer_space, fixed)
    names = [hp.name for hp in pinned.space]
    assert len(names) == len(set(names)) == len(transfer_space.space)
    fine_tune_at = next(hp for hp in pinned.space if hp.name == "fine_tune_at")
    assert type(fine_tune_at).__name__ == "Fixed" and fine_tune_at.conditions


@pytest.mark.bad_input
@pytest.mark.parametrize(
    "pair, message",
    [
        ("mode", "write NAME=VALUE"),
        ("nope=1", "the space has no 'nope'"),
        ("mode=thawed", "choose one of frozen, fine_tune"),
        ("rotation=0.9", "outside the space's range 0.0..0.25"),
        ("fine_tune_at=many", "give a number"),
    ],
)
def test_bad_values_are_refused_with_what_to_do(transfer_space, pair, message):
    with pytest.raises(UsageError, match=message):
        parse_fixed([pair], transfer_space)


@pytest.mark.bad_input
def test_the_cli_refuses_an_unknown_name_in_one_line_before_any_trial(tiny_folder, tmp_path):
    result = run_cli(
        *("--space", "scratch", "--data", str(tiny_folder), "--image-size", "32"),
        *("--fix", "filterz=16", "--runs-dir", str(tmp_path), "--name", "bad"),
    )
    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1 and "no 'filterz'" in lines[0] and "conv_blocks" in lines[0]
    assert not (tmp_path / "bad" / "trials.csv").exists()


def test_enqueued_values_are_read_as_the_space_declares_them(transfer_space):
    sets = [{"mode": "frozen", "dense_units": 64.0, "zoom": 0, "flip": "horizontal"}]
    checked = check_enqueued(sets, transfer_space, {"mode": "frozen"}, source="--enqueue sets.json")
    assert checked == [{"mode": "frozen", "dense_units": 64, "zoom": 0.0, "flip": "horizontal"}]
    assert type(checked[0]["dense_units"]) is int


@pytest.mark.bad_input
@pytest.mark.parametrize(
    "values, fixed, message",
    [
        ({"lerning_rate": 0.001}, {}, "set 2: the space has no 'lerning_rate'; it has"),
        ({"flip": "diagonal"}, {}, "set 2: flip=diagonal: choose one of none, horizontal"),
        ({"dense_units": 12.5}, {}, "set 2: dense_units=12.5: choose one of 0, 32, 64, 128"),
        ({"rotation": 0.5}, {}, "set 2: rotation=0.5: outside the space's range 0.0..0.25"),
        ({"flip": "horizontal"}, {"flip": "none"}, "set 2: flip=horizontal contradicts --fix"),
    ],
)
def test_bad_enqueued_sets_are_refused_with_what_to_do(transfer_space, values, fixed, message):
    sets = [{"mode": "frozen"}, values]
    with pytest.raises(UsageError, match=f"^--enqueue sets.json, {message}"):
        check_enqueued(sets, transfer_space, fixed, source="--enqueue sets.json")


def test_baselines_that_contradict_a_pinned_value_are_left_out():
    frozen = {"mode": "frozen", "learning_rate": 0.001}
    fine_tune = {"mode": "fine_tune", "fine_tune_at": 0.65}
    assert agreeing([frozen, fine_tune], {"mode": "frozen"}) == [frozen]
    assert agreeing([frozen, fine_tune], {"fine_tune_at": 0.5}) == [frozen]
    assert agreeing([frozen, fine_tune], {}) == [frozen, fine_tune]


@pytest.mark.bad_input
def test_the_cli_refuses_an_enqueued_set_against_fix_before_any_trial(tiny_folder, tmp_path):
    queued = tmp_path / "queued.json"
    queued.write_text('[{"conv_blocks": 2}, {"conv_blocks": 3}]', encoding="utf-8")
    result = run_cli(
        *("--space", "scratch", "--data", str(tiny_folder), "--image-size", "32"),
        *("--backend", "optuna", "--fix", "conv_blocks=2", "--enqueue", str(queued)),
        *("--runs-dir", str(tmp_path), "--name", "bad"),
    )
    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1 and "set 2: conv_blocks=3 contradicts --fix conv_blocks=2" in lines[0]
    assert not (tmp_path / "bad" / "trials.csv").exists()


@pytest.mark.parametrize("backend", ["keras-tuner", "optuna"])
def test_both_back_ends_keep_the_pinned_values(tiny_folder, tmp_path, backend):
    config = SearchConfig(
        space="scratch",
        data=str(tiny_folder),
        backend=backend,
        pruner="none",
        max_trials=3,
        epochs=1,
        image_size=32,
        batch_size=16,
        runs_dir=str(tmp_path),
        name=backend,
        fix=("conv_blocks=2", "batch_norm=true"),
    )
    trials = run_search(config).trials()
    assert list(trials["status"]) == ["complete"] * 3
    assert set(trials["hp_conv_blocks"]) == {2}
    assert set(trials["hp_batch_norm"].astype(str).str.lower()) == {"true"}
    assert "hp_filters_3" not in trials or trials["hp_filters_3"].isna().all()
    if backend == "optuna":
        study = optuna.load_study(
            study_name=backend, storage=f"sqlite:///{tmp_path / backend / 'study.db'}"
        )
        assert all(t.params["conv_blocks"] == 2 for t in study.trials)
