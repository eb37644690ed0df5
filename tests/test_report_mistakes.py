"""Intervals, ties with the best trial and the best model's mistakes, from a real tiny search
whose data holds a file named as markup; the report checked in headless Chromium."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pandas as pd
import pytest
from conftest import CATS_AND_DOGS, link_images
from matplotlib.figure import Figure
from test_report_browser import Page, devtools  # noqa: F401  (devtools: a fixture)
from test_report_html import make_run, trial

from reports.html import write_report
from reports.mistakes import GALLERY_CAP, split_outcome
from reports.plots import _hyperparameter_panel
from search.stats import predicted_classes, wilson_interval
from search.steps import SearchConfig, run_search
from search.store import RunStore

HOSTILE = "<img src=x onerror=alert(1)>.jpg"


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory) -> RunStore:
    """A finished two-trial scratch search at 32 px; 8 validation and 2 test images per class.

    The same photo sits under the markup name in both class folders of validation: the model
    gives both copies one prediction, so exactly one of them is a mistake, shown in a gallery.
    """
    folder = link_images(tmp_path_factory.mktemp("hostile"), {"train": 12, "validation": 9})
    photo = CATS_AND_DOGS / "validation" / "cats" / "cat.2100.jpg"
    for name in ("cats", "dogs"):
        (folder / "validation" / name / HOSTILE).symlink_to(photo)
    config = SearchConfig(
        space="scratch",
        data=str(folder),
        max_trials=2,
        epochs=1,
        image_size=32,
        batch_size=16,
        name="hostile",
        runs_dir=str(tmp_path_factory.mktemp("runs")),
    )
    return run_search(config, report=write_report)


def test_a_search_stores_intervals_and_predictions(hostile_run):
    store = hostile_run
    counts = store.read_run_info()["counts"]
    n_val, n_test = (sum(counts[s].values()) for s in ("validation", "test"))
    assert (n_val, n_test) == (16, 4)
    trials = store.trials()
    done = trials[trials["status"] == "complete"]
    assert len(done) == 2
    for row in done.to_dict("records"):
        low, high = wilson_interval(round(row["val_accuracy"] * n_val), n_val)
        assert (row["val_accuracy_low"], row["val_accuracy_high"]) == pytest.approx((low, high))
        validation = store.predictions(row["trial_id"], "validation")
        assert validation.shape == (n_val,) and validation.dtype == np.float32
    best = store.read_best_hparams()["trial_id"]
    files, labels = store.split_images("test")
    assert len(files) == n_test
    correct = predicted_classes(store.predictions(best, "test")) == labels
    scored = trials.set_index("trial_id").loc[best]
    assert scored["test_accuracy"] == pytest.approx(correct.mean())
    low, high = wilson_interval(int(correct.sum()), n_test)
    assert (scored["test_accuracy_low"], scored["test_accuracy_high"]) == pytest.approx((low, high))
    assert trials.loc[trials["trial_id"] != best, "test_accuracy_low"].isna().all()

    board = pd.read_csv(store.run_dir / "leaderboard.csv")
    for column in ("val_accuracy_low", "val_accuracy_high", "tied_with_best", "p_vs_best"):
        assert board[column].notna().all(), column
    assert (board.loc[0, "tied_with_best"], board.loc[0, "p_vs_best"]) == (True, 1.0)
    assert board["p_vs_best"].between(0, 1).all()
    assert board.loc[board["trial_id"] == best, "test_accuracy_high"].notna().all()


def section(page: str, name: str) -> str:
    return page[page.index(f'<section id="{name}">') :].split("</section>", 1)[0]


def test_the_report_shows_matrices_tables_and_the_gallery(hostile_run):
    page = (hostile_run.run_dir / "report.html").read_text(encoding="utf-8")
    mistakes = section(page, "mistakes")
    for split, n in (("validation", 16), ("test", 4)):
        matrix = mistakes[mistakes.index(f'id="confusion-{split}"') :].split("</table>", 1)[0]
        cells = [int(c) for c in re.findall(r"<td[^>]*>(\d+)</td>", matrix)]
        assert len(cells) == 4 and sum(cells) == n
        assert f'id="per-class-{split}"' in mistakes
    assert f"at most {GALLERY_CAP} per split" in mistakes
    # One of the two copies of the markup-named photo is a mistake: shown escaped, never as a tag.
    assert html.escape(HOSTILE, quote=False) in mistakes
    assert "<img src=x" not in page
    assert "95% CI" in section(page, "summary")


@pytest.fixture(scope="module")
def page(devtools, hostile_run) -> Page:  # noqa: F811  (devtools: the imported fixture)
    return Page(devtools, (hostile_run.run_dir / "report.html").resolve().as_uri())


def test_the_gallery_in_a_browser_shows_the_markup_name_as_text(page):
    assert page.errors() == []
    assert page.events("Page.javascriptDialogOpening") == []
    assert page.evaluate("document.querySelectorAll('img[src=\"x\"], img:not([src])').length") == 0
    names = page.evaluate(
        "Array.from(document.querySelectorAll('figure.mistake .file'), (e) => e.textContent)"
    )
    assert sum(name.endswith(HOSTILE) for name in names) == 1
    # Every thumbnail decoded under the page's policy (data: images only).
    widths = page.evaluate(
        "Array.from(document.querySelectorAll('figure.mistake img'), (i) => i.naturalWidth)"
    )
    assert len(widths) == len(names) and all(0 < w <= 96 for w in widths)
    requested = [e["request"]["url"] for e in page.events("Network.requestWillBeSent")]
    assert all(url.startswith(("file:", "data:")) for url in requested)
    cells = page.evaluate(
        "Array.from(document.querySelectorAll('#confusion-validation td'), (c) => +c.textContent)"
    )
    assert sum(cells) == 16


def test_the_gallery_is_capped_most_confident_first(tmp_path):
    photos = sorted((CATS_AND_DOGS / "validation" / "cats").iterdir())[:40]
    store = RunStore(tmp_path)
    # Every cat called a dog, with rising confidence; the last file is gone since the run.
    store.save_predictions(0, "validation", np.linspace(0.51, 0.99, 40))
    files = [*map(str, photos[:-1]), str(tmp_path / "gone.jpg")]
    store.save_split_images("validation", files, np.zeros(40, int))
    outcome = split_outcome(
        store, 0, "validation", class_names=["cats", "dogs"], data_dir=str(CATS_AND_DOGS)
    )
    assert (outcome.n, outcome.correct, outcome.mistakes) == (40, 0, 40)
    assert len(outcome.gallery) == GALLERY_CAP
    shown = [m.probability for m in outcome.gallery]
    assert shown == sorted(shown, reverse=True) and shown[0] == pytest.approx(0.99)
    assert outcome.gallery[0].thumbnail is None  # the missing file: said, not fatal
    assert outcome.gallery[1].thumbnail.startswith("data:image/jpeg;base64,")
    assert outcome.gallery[1].name == f"validation/cats/{photos[-2].name}"
    assert outcome.matrix == [[0, 40], [0, 0]]
    assert (
        split_outcome(store, 0, "test", class_names=["cats", "dogs"], data_dir=str(CATS_AND_DOGS))
        is None
    )


def test_a_store_without_predictions_says_why_its_marks_are_empty(tmp_path):
    run = make_run(tmp_path, [trial(0, lr=0.01), trial(1, lr=0.001)])
    # A run stored before predictions were kept: its best model, no predictions/ folder.
    best = {"trial_id": 0, "hyperparameters": {"lr": 0.01}}
    (run / "best_hparams.json").write_text(json.dumps(best), encoding="utf-8")
    page = write_report(run).read_text(encoding="utf-8")
    board = pd.read_csv(run / "leaderboard.csv")
    assert board["tied_with_best"].isna().all() and board["p_vs_best"].isna().all()
    assert "The mark is empty for trials without stored validation predictions" in page
    assert "predictions are not stored yet" in section(page, "mistakes")


def test_learning_rates_are_drawn_on_a_log_axis():
    done = pd.DataFrame(
        {
            "val_accuracy": [0.7, 0.8, 0.75],
            "hp_learning_rate": [2e-4, 6e-4, 1.5e-3],  # under a decade
            "hp_dropout": [0.1, 0.25, 0.4],
            "hp_weight": [1e-4, 1e-3, 1e-1],  # three decades
        }
    )
    axes = Figure().subplots(1, 3)
    for ax, column in zip(axes, ["hp_learning_rate", "hp_dropout", "hp_weight"], strict=True):
        _hyperparameter_panel(ax, done, column)
    assert [ax.get_xscale() for ax in axes] == ["log", "linear", "log"]
