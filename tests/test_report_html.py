"""report.html and leaderboard.csv render from run stores of every shape, fast and escaped."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reports import plots
from reports.html import TOP_TRIALS, format_value, write_report
from search.stats import accuracy_interval
from search.store import RunStore

XSS = "<img src=x onerror=alert(1)>"
INFO = {
    "name": "report-test",
    "space": "scratch",
    "backend": "keras-tuner",
    "algorithm": "random",
    "max_trials": 10,
    "epochs": 6,
    "patience": 3,
    "image_size": 32,
    "batch_size": 16,
    "seed": 42,
    "split_seed": 1337,
    "weights": "imagenet",
    "data": "/data/pets",
    "layout": "train/validation",
    "command": ["run_search.py", "--space", "scratch"],
    "class_names": ["cats", "dogs"],
    "counts": {
        "train": {"cats": 24, "dogs": 24},
        "validation": {"cats": 16, "dogs": 16},
        "test": {"cats": 4, "dogs": 4},
    },
    "skipped": [{"split": "train", "path": "train/cats/empty.jpg", "reason": "empty file"}],
    "versions": {"python": "3.11", "pandas": "3.1.1"},
    "devices": ["CPU"],
    "started_at": "2026-11-25T10:00:00+00:00",
    "finished_at": "2026-11-25T10:05:30+00:00",
    "status": "finished",
}
# Per-epoch (loss, accuracy, val_loss, val_accuracy).
OVERFITTING = [
    (0.9, 0.6, 0.8, 0.6),
    (0.6, 0.75, 0.6, 0.7),
    (0.4, 0.9, 0.7, 0.68),
    (0.3, 0.95, 0.8, 0.66),
]
STEADY = [(0.8, 0.6, 0.7, 0.65), (0.6, 0.7, 0.5, 0.75), (0.5, 0.78, 0.45, 0.8)]


def trial(trial_id, status="complete", epochs=STEADY, error=None, clean=None, **hparams) -> dict:
    """A trial to store; `clean` is its per-epoch (train_loss_clean, train_accuracy_clean), as
    --clean-train-eval every records them (without it, the trial is stored as older runs were,
    under the old column names)."""
    return {
        "trial_id": trial_id,
        "status": status,
        "epochs": epochs,
        "clean": clean,
        "error": error,
        "hp": hparams,
    }


def make_run(run_dir: Path, trials: list[dict], **info) -> Path:
    """A run store written through RunStore, as a search writes it."""
    store = RunStore(run_dir)
    store.create()
    store.write_run_info(INFO | info)
    for t in trials:
        store.begin_trial(t["trial_id"], t["hp"])
        clean = t["clean"] or [(None, None)] * len(t["epochs"])
        for epoch, (loss, acc, val_loss, val_acc) in enumerate(t["epochs"], start=1):
            store.append_epoch(
                {
                    "trial_id": t["trial_id"],
                    "epoch": epoch,
                    "loss": loss,
                    "accuracy": acc,
                    "val_loss": val_loss,
                    "val_accuracy": val_acc,
                    "train_loss_clean": clean[epoch - 1][0],
                    "train_accuracy_clean": clean[epoch - 1][1],
                    "seconds": 1.5,
                    "phase": "train",
                }
            )
        if t["status"] == "complete":
            best = min(range(len(t["epochs"])), key=lambda i: t["epochs"][i][2])
            _, acc, val_loss, val_acc = t["epochs"][best]
            results = {
                "best_epoch": best + 1,
                "val_accuracy": val_acc,
                "val_loss": val_loss,
                "n_params": 1234,
            }
            if t["clean"]:
                clean_loss, clean_acc = t["clean"][best]
                results |= {
                    "train_accuracy_fit": acc,
                    "gap_fit": acc - val_acc,
                    "train_accuracy_clean": clean_acc,
                    "train_loss_clean": clean_loss,
                    "gap_clean": clean_acc - val_acc,
                }
            else:
                results |= {"train_accuracy": acc, "gap": acc - val_acc}
        else:
            results = {}
        if t["status"] != "running":
            store.finish_trial(
                t["trial_id"],
                results | {"status": t["status"], "error": t["error"], "duration_s": 9.5},
            )
    return run_dir


def images(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]*)"', html)


def test_report_of_a_run_without_trials(tmp_path):
    path = write_report(make_run(tmp_path, []))
    html = path.read_text()
    assert "No complete trial yet." in html
    assert "No trial yet." in html
    assert images(html) == []
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    assert board.empty
    assert {"rank", "trial_id", "gap", "onset_epoch", "verdict"} <= set(board.columns)


def test_report_while_the_first_trial_runs(tmp_path):
    run = make_run(tmp_path, [trial(0, "running", epochs=STEADY[:2], lr=0.01)], status="running")
    unfinished = json.loads((run / "run.json").read_text()) | {"finished_at": None}
    (run / "run.json").write_text(json.dumps(unfinished))
    html = write_report(run).read_text()
    assert "No complete trial yet." in html
    assert "trial 0: running" in html
    assert "not yet" in html  # no finish time


def test_report_of_one_complete_trial(tmp_path):
    run = make_run(tmp_path, [trial(0, epochs=OVERFITTING, lr=0.01, pooling="avg")])
    html = write_report(run).read_text()
    board = pd.read_csv(run / "leaderboard.csv")
    assert list(board["trial_id"]) == [0]
    row = board.iloc[0]
    assert (row["best_epoch"], row["onset_epoch"], row["wasted_epochs"]) == (2, 2, 2)
    assert row["gap"] == pytest.approx(0.05)
    assert row["max_gap"] == pytest.approx(0.29)
    assert "Needs complete trials that differ" in html
    assert 'id="curve-0"' in html
    # Learning curves, scatter, gap per epoch, hyperparameter panels, history.
    assert len(images(html)) == 5
    assert "5m 30s" in html  # wall time from run.json


def test_the_summary_names_how_trials_were_proposed(tmp_path):
    setting = '<th class="text">{}</th>'.format
    kt_run = make_run(tmp_path / "kt", [trial(0)])
    html = write_report(kt_run).read_text()
    assert "keras-tuner (random)," in html
    assert setting("algorithm") in html and setting("sampler") not in html
    optuna_run = make_run(
        tmp_path / "optuna", [trial(0)], backend="optuna", sampler="cmaes", pruner="none"
    )
    html = write_report(optuna_run).read_text()
    assert "optuna (cmaes sampler, none pruner)," in html
    assert setting("sampler") in html and setting("pruner") in html
    assert setting("algorithm") not in html, "Keras Tuner's oracle did not propose these"


def test_failed_and_pruned_trials(tmp_path):
    run = make_run(
        tmp_path,
        [
            trial(0, lr=0.01),
            trial(1, "failed", epochs=[], error="oom: ResourceExhaustedError", lr=0.1),
            trial(2, "pruned", epochs=OVERFITTING[:2], lr=0.001),
            trial(3, "failed", epochs=OVERFITTING[:1], error="nan_loss", lr=1.0),
            trial(4, epochs=OVERFITTING, lr=0.003),
        ],
    )
    html = write_report(run).read_text()
    board = pd.read_csv(run / "leaderboard.csv")
    assert list(board["trial_id"]) == [0, 4]
    assert "3 complete" not in html and "2 complete, 2 failed, 1 pruned" in html
    assert "trial 1</a>: oom: ResourceExhaustedError" in html
    assert "trial 1: failed</summary>" in html  # no measures, no verdict
    assert not re.search(r"\bnan\b", html, re.IGNORECASE)
    assert "trial 3</a>: nan_loss" in html
    # The pruned trial's measures come from its epochs.
    pruned = html[html.index('id="trial-2"') :]
    assert "trial 2: pruned" in pruned
    assert "+0.0500" in pruned[: pruned.index("</details>")]


def test_rank_by_penalised_score(tmp_path):
    big_gap = [(0.5, 0.99, 0.4, 0.82)]  # val 0.82, gap 0.17
    small_gap = [(0.5, 0.82, 0.4, 0.80)]  # val 0.80, gap 0.02
    run = make_run(tmp_path, [trial(0, epochs=big_gap), trial(1, epochs=small_gap)])
    write_report(run)
    assert list(pd.read_csv(run / "leaderboard.csv")["trial_id"]) == [0, 1]
    html = write_report(run, rank_by="penalised", penalty=0.5).read_text()
    board = pd.read_csv(run / "leaderboard.csv")
    assert list(board["trial_id"]) == [1, 0]
    assert list(board["score"]) == pytest.approx([0.79, 0.735])
    assert "ranked by score = val accuracy &minus; 0.5 &times; max(gap, 0)" in html


def card(html: str, title: str) -> str:
    """A summary card's text, tags dropped."""
    found = re.search(rf'<div class="card">{title}<b>(.*?)</b>(.*?)</div>', html)
    assert found, f"no {title} card"
    return re.sub(r"<[^>]*>", "", " ".join(found.groups()).replace("<br>", " "))


def test_the_test_card_says_why_a_finished_run_has_no_test_score(tmp_path):
    big_gap, small_gap = [(0.5, 0.99, 0.4, 0.82)], [(0.5, 0.82, 0.4, 0.80)]
    run = make_run(tmp_path / "scored", [trial(0, epochs=big_gap), trial(1, epochs=small_gap)])
    assert card(write_report(run).read_text(), "test accuracy") == (
        "not scored no best_model.keras in the run directory"
    )
    (run / "best_model.keras").write_bytes(b"a model")
    RunStore(run).set_test_accuracy(0, 0.875)
    html = write_report(run).read_text()
    assert card(html, "test accuracy") == (
        "0.8750 best model, on the test split (95% CI 0.5291\u20130.9776, n = 8)"  # 7 of 8
    )
    ranked_otherwise = write_report(run, rank_by="penalised", penalty=0.5).read_text()
    assert card(ranked_otherwise, "best trial").startswith("1 ")
    assert card(ranked_otherwise, "test accuracy") == (
        "- scored only for the best model by val accuracy"
    )
    no_test = INFO["counts"] | {"test": {}}
    bare = make_run(tmp_path / "bare", [trial(0)], counts=no_test)
    assert card(write_report(bare).read_text(), "test accuracy") == (
        "not scored the data has no test images"
    )
    running = make_run(tmp_path / "running", [trial(0)], status="running")
    assert card(write_report(running).read_text(), "test accuracy") == (
        "not yet best model, once the search ends"
    )


# STEADY's (train_loss_clean, train_accuracy_clean) per epoch: without augmentation and dropout
# training accuracy is higher, so at the kept epoch (3) the clean gap is +0.10, an overfit,
# where the fit-time one is -0.02.
STEADY_CLEAN = [(0.7, 0.66), (0.5, 0.8), (0.4, 0.9)]


def leaderboard_headers(html: str) -> dict[str, str]:
    """The page leaderboard's header names and their tooltips."""
    head = html[html.index('id="leaderboard-table"') :]
    head = head[: head.index("</thead>")]
    return {
        name: title for title, name in re.findall(r'<th scope="col" title="([^"]*)">([^<]*)<', head)
    }


def test_the_report_says_which_gap_its_verdicts_judged(tmp_path):
    mixed = make_run(
        tmp_path / "mixed",
        [trial(0, clean=STEADY_CLEAN, lr=0.01), trial(1, epochs=OVERFITTING, lr=0.1)],
    )
    html = write_report(mixed).read_text()
    board = pd.read_csv(mixed / "leaderboard.csv").set_index("trial_id")
    clean, fit = board.loc[0], board.loc[1]
    assert (clean["gap_basis"], clean["verdict"]) == ("clean", "overfit")
    assert (clean["gap"], clean["gap_clean"], clean["gap_fit"]) == pytest.approx((0.1, 0.1, -0.02))
    assert fit["gap_basis"] == "fit" and pd.isna(fit["gap_clean"])
    assert fit["gap"] == pytest.approx(fit["gap_fit"])
    headers = leaderboard_headers(html)
    assert "gap" not in headers, "gap_basis names which of the two shown gaps was judged"
    assert {"gap_clean", "gap_fit", "gap_basis"} <= set(headers)
    assert "the one judged" in headers["gap_clean"] and "augmentation" in headers["gap_fit"]
    basis = re.search(r'<p id="gap-basis">(.*?)</p>', html, re.S)[1]
    assert "1 trial judged on the clean gap" in basis
    assert "1 trial without clean figures is judged on the fit-time gap" in basis
    assert "trial 1 (" in basis
    assert "clean, or fit-time for the 1 without clean figures" in html  # the scatter's caption
    assert "fit-time for the others (named in the legend)" in html  # the gap per epoch's
    assert card(html, re.escape("clean gap (train &minus; val)")) == "+0.1000 overfit"
    details = html[html.index('id="trial-0"') :]
    details = details[: details.index("</details>")]
    assert re.search(
        r'<th class="text" title="clean gap, the one judged[^"]*">gap_clean</th>', details
    )
    assert re.search(r'title="fit-time gap, for comparison[^"]*">gap_fit</th><td>-0.0200<', details)
    assert 'id="confirmed"' not in html and "refit_model.keras" not in html

    older = write_report(make_run(tmp_path / "older", [trial(0)])).read_text()
    assert "<b>This run has no clean figures</b>" in older
    assert card(older, re.escape("fit-time gap (train &minus; val)")) == (
        "-0.0200 underfit, judged on the fit-time gap: no clean figures"
    )
    assert "fit-time: these trials have no clean figure for every epoch" in older
    every = write_report(make_run(tmp_path / "every", [trial(0, clean=STEADY_CLEAN)])).read_text()
    assert "Every verdict in this run judges the clean gap (1 trial)." in every
    assert "clean (inference-mode training accuracy every epoch)" in every


def test_the_gap_per_epoch_never_mixes_clean_and_fit_time_figures_in_a_line():
    epochs = pd.DataFrame(
        {
            "trial_id": [0, 0, 1, 1, 2],
            "train_accuracy_clean": [0.7, 0.8, None, 0.9, None],  # trial 1: the best epoch only
        }
    )
    assert plots.gap_bases_per_trial(epochs, [0, 1, 2, 3]) == {
        0: "clean",
        1: "fit",
        2: "fit",
        3: "fit",
    }
    assert plots.gap_bases_per_trial(epochs.drop(columns="train_accuracy_clean"), [0]) == {0: "fit"}


CONFIRM = {"top": 2, "seeds": 3, "winner": 0, "exported_run": 2, "exported_seed": 200048}


def test_a_confirmed_run_shows_the_finalists_means_and_the_exported_run(tmp_path):
    trials = [
        trial(0, lr=0.01),  # val 0.80
        trial(1, epochs=OVERFITTING, lr=0.1),  # val 0.70, not a finalist
        trial(2, epochs=[(0.6, 0.7, 0.5, 0.72)], lr=0.3),  # val 0.72
    ]
    run = make_run(tmp_path, trials, confirm=CONFIRM)
    store = RunStore(run)
    for trial_id, mean, sd in [(0, 0.79, 0.012), (2, 0.71, 0.02)]:
        confirmed = {"confirm_mean": mean, "confirm_sd": sd, "confirm_val_loss": 0.5}
        store.finish_trial(trial_id, confirmed | {"confirm_runs": 4})
    html = write_report(run).read_text()
    board = pd.read_csv(run / "leaderboard.csv")
    assert list(board["trial_id"]) == [0, 2, 1]
    assert list(board["confirm_mean"].fillna(0)) == pytest.approx([0.79, 0.71, 0])
    assert list(board["confirm_runs"].fillna(0)) == [4, 4, 0]
    headers = leaderboard_headers(html)
    assert "confirm" in headers and "confirm_mean" not in headers
    column = list(headers).index("confirm")
    rows = re.findall(r"<tr>(<td.*?)</tr>", html[html.index('id="leaderboard-table"') :])[:3]
    cells = [
        re.findall(r'<td class="[^"]*" data-sort="([^"]*)">([^<]*)</td>', r)[column] for r in rows
    ]
    assert cells == [
        ("0.79", "0.7900 \u00b1 0.0120 (4 runs)"),  # sorted on the mean
        ("0.71", "0.7100 \u00b1 0.0200 (4 runs)"),
        ("", ""),
    ]
    note = re.search(r'<p class="note" id="confirmed">(.*?)</p>', html, re.S)[1]
    assert note.startswith(
        "Confirmed with 3 seeds: the 2 best trials (<code>--confirm-top 2</code>)"
    )
    assert "Trial 0 won; <code>best_model.keras</code> is its run 2, seed 200048." in note
    assert card(html, "best trial") == "0 ranked by mean val accuracy of its runs"
    assert card(html, "val accuracy").endswith("; mean of its runs 0.7900 \u00b1 0.0120 (4 runs)")
    details = html[html.index('id="trial-2"') :]
    assert ">confirm_runs</th><td>4</td>" in details[: details.index("</details>")]


def test_the_test_card_shows_the_refit_models_score_beside_the_best_models(tmp_path):
    low, high = accuracy_interval(1.0, 8)
    refit = {
        "trial_id": 0,
        "first_epochs": 3,
        "fine_tune_epochs": 0,
        "train_images": 80,
        "test_accuracy": 1.0,
        "test_accuracy_low": low,
        "test_accuracy_high": high,
    }
    run = make_run(tmp_path / "refit", [trial(0)], refit=refit)
    (run / "best_model.keras").write_bytes(b"a model")
    RunStore(run).set_test_accuracy(0, 0.875)
    shown = card(write_report(run).read_text(), "test accuracy")
    assert shown == (
        "0.8750 best model, on the test split (95% CI 0.5291\u20130.9776, n = 8) "
        "refit_model.keras, trial 0 retrained on train + validation (80 images) for 3 epochs: "
        "1.0000 (95% CI 0.6756\u20131.0000, n = 8)"
    )
    tuned = refit | {"first_epochs": 1, "fine_tune_epochs": 4, "test_accuracy": None}
    run = make_run(tmp_path / "tuned", [trial(0)], refit=tuned)
    assert card(write_report(run).read_text(), "test accuracy").endswith(
        "for 1 epoch, then 4 fine-tuning: not scored, the data has no test images"
    )


def test_baselines_are_summarised_and_drawn_when_the_run_has_them(tmp_path):
    trials = [trial(i, epochs=STEADY, lr=0.01 * (i + 1), baseline=None) for i in range(7)]
    trials.append(trial(7, epochs=OVERFITTING, lr=0.5, baseline="tf_image_classification"))
    html = write_report(make_run(tmp_path, trials)).read_text()
    assert "Baselines from the documents" in html
    assert "baseline tf_image_classification: trial 7" in html
    assert 'id="curve-7"' in html
    assert html.count('id="curve-') == TOP_TRIALS + 1
    board = pd.read_csv(tmp_path / "leaderboard.csv")
    assert board.set_index("trial_id").loc[7, "baseline"] == "tf_image_classification"
    assert "hp_baseline" not in board


def test_importance_is_drawn_and_names_what_it_leaves_out(tmp_path):
    curves = [STEADY, OVERFITTING, [(0.5, 0.9, 0.45, 0.9)], [(0.6, 0.7, 0.5, 0.72)]]
    trials = [
        trial(
            i,
            epochs=c,
            lr=10.0**-i,
            pooling=["avg", "max"][i % 2],
            dense_dropout=[0.1, None][i % 2],
        )
        for i, c in enumerate(curves)
    ]
    html = write_report(make_run(tmp_path, trials)).read_text()
    assert 'alt="hyperparameter importance"' in html
    assert "Left out, as some trials did not use them: dense_dropout." in html


def test_no_baselines_section_without_baselines(tmp_path):
    html = write_report(make_run(tmp_path, [trial(0, lr=0.1)])).read_text()
    assert "Baselines from the documents" not in html
    assert "baseline" not in pd.read_csv(tmp_path / "leaderboard.csv")


def test_tuner_bookkeeping_stays_in_the_csv_only(tmp_path):
    trials = [
        trial(i, lr=0.01 * (i + 1), **{"tuner/epochs": 2, "tuner/bracket": 1}) for i in range(3)
    ]
    html = write_report(make_run(tmp_path, trials)).read_text()
    assert "hp_tuner/epochs" in pd.read_csv(tmp_path / "leaderboard.csv")
    assert "tuner/epochs" not in html


def test_every_string_from_the_user_or_the_data_is_escaped(tmp_path):
    run = make_run(
        tmp_path,
        [trial(0, lr=0.1, pooling=XSS), trial(1, "failed", epochs=[], error=f"bad {XSS}")],
        name=f"run {XSS}",
        class_names=[XSS, "dogs"],
        counts={"train": {XSS: 3, "dogs": 3}},
        skipped=[{"split": "train", "path": f"train/{XSS}/a.jpg", "reason": XSS}],
        data=f"/data/{XSS}",
        command=["run_search.py", XSS],
    )
    html = write_report(run).read_text()
    assert XSS not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert html.count("&lt;img src=x") >= 8


def test_the_report_is_self_contained(tmp_path):
    trials = [trial(i, lr=0.01 * (i + 1), pooling=["avg", "max"][i % 2]) for i in range(4)]
    html = write_report(make_run(tmp_path, trials)).read_text()
    assert images(html)
    assert all(src.startswith("data:image/png;base64,") for src in images(html))
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)
    assert "default-src 'none'" in html


def test_cell_formats():
    assert format_value("gap", -0.1) == "-0.1000"
    assert format_value("gap", 0.05) == "+0.0500"
    assert format_value("val_accuracy", 0.8) == "0.8000"
    assert format_value("val_accuracy", float("nan")) == ""
    assert format_value("onset_epoch", pd.NA) == ""
    assert format_value("n_params", 1234567) == "1,234,567"
    assert format_value("hp_learning_rate", 0.00012345678) == "0.0001235"
    assert format_value("hp_batch_norm", True) == "True"


def synthetic_run(run_dir: Path, n_trials: int = 200, n_epochs: int = 50) -> Path:
    """A finished Hyperband-like run: noisy curves, conditional and bookkeeping columns."""
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(n_trials), n_epochs)
    epoch = np.tile(np.arange(1, n_epochs + 1), n_trials)
    rate = rng.uniform(0.02, 0.2, n_trials)[ids]
    loss = np.exp(-rate * epoch) + rng.normal(0, 0.01, ids.size)
    val_loss = loss + 0.002 * epoch**1.5 * rng.uniform(0, 1, n_trials)[ids]
    accuracy = 1 - loss / 2
    epochs = pd.DataFrame(
        {
            "trial_id": ids,
            "epoch": epoch,
            "loss": loss,
            "accuracy": accuracy,
            "val_loss": val_loss,
            "val_accuracy": 1 - val_loss / 2,
            "seconds": 1.0,
            "phase": np.where(epoch > n_epochs // 2, "fine_tune", "train"),
        }
    )
    best = epochs.loc[epochs.groupby("trial_id")["val_loss"].idxmin()].set_index("trial_id")
    status = rng.choice(["complete", "failed", "pruned"], n_trials, p=[0.9, 0.05, 0.05])
    blocks = rng.integers(1, 5, n_trials)
    trials = pd.DataFrame(
        {
            "trial_id": np.arange(n_trials),
            "status": status,
            "hp_blocks": blocks,
            "hp_filters_3": np.where(blocks > 2, rng.choice([32, 64], n_trials), np.nan),
            "hp_learning_rate": 10 ** rng.uniform(-5, -2, n_trials),
            "hp_dropout": rng.uniform(0, 0.5, n_trials),
            "hp_pooling": rng.choice(["flatten", "global_avg"], n_trials),
            "hp_batch_norm": rng.choice([True, False], n_trials),
            "hp_tuner/epochs": 50,
            "hp_tuner/bracket": rng.integers(0, 3, n_trials),
            "best_epoch": best["epoch"],
            "val_accuracy": best["val_accuracy"],
            "val_loss": best["val_loss"],
            "train_accuracy": best["accuracy"],
            "gap": best["accuracy"] - best["val_accuracy"],
            "test_accuracy": np.nan,
            "duration_s": rng.uniform(5, 50, n_trials),
            "n_params": rng.integers(10_000, 1_000_000, n_trials),
            "error": np.where(status == "failed", "nan_loss", None),
        }
    )
    metrics = ["best_epoch", "val_accuracy", "val_loss", "train_accuracy", "gap"]
    trials.loc[status != "complete", metrics] = np.nan
    run_dir.mkdir()
    trials.to_csv(run_dir / "trials.csv", index=False)
    epochs.to_csv(run_dir / "epochs.csv", index=False)
    (run_dir / "run.json").write_text(json.dumps(INFO | {"algorithm": "hyperband"}))
    return run_dir


def test_200_trials_of_50_epochs_render_every_trial(tmp_path):
    """The large store renders whole: every trial's details, the top trials' curves, and a
    leaderboard row per complete trial. Its render time is bench/report_render.py's figure."""
    run = synthetic_run(tmp_path / "big")
    html = write_report(run).read_text()
    assert html.count('id="curve-') == TOP_TRIALS
    assert html.count('<details id="trial-') == 200
    assert (
        len(pd.read_csv(run / "leaderboard.csv"))
        == (pd.read_csv(run / "trials.csv")["status"] == "complete").sum()
    )


def test_rendering_imports_no_tensorflow(tmp_path):
    run = make_run(tmp_path, [trial(0, lr=0.1), trial(1, epochs=OVERFITTING, lr=0.01)])
    script = (
        "import sys\n"
        "from reports.html import write_report\n"
        f"write_report({str(run)!r})\n"
        "heavy = ('tensorflow', 'keras', 'keras_tuner', 'search.trial', 'search.backends')\n"
        "dotted = tuple(h + '.' for h in heavy)\n"
        "print(sorted(m for m in sys.modules if m in heavy or m.startswith(dotted)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]"
