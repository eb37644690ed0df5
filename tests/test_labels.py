"""`--labels FILE.csv`: classes from a CSV beside one folder of real photos, with a split
column for some rows, and the rows and files that cannot be used listed, never fatal."""

from __future__ import annotations

import csv

import pytest
from conftest import CATS_AND_DOGS, error_lines, need, run_cli

from search.store import RunStore


@pytest.fixture(scope="module")
def kaggle_folder(tmp_path_factory):
    """Photos in one folder, named anonymously, with a labels CSV: 20 per class split by the
    seed, 4 per class fixed to validation and 2 to test by the split column, and five rows or
    files that cannot be used."""
    root = tmp_path_factory.mktemp("kaggle")
    (root / "images").mkdir()
    rows = []
    source = need(CATS_AND_DOGS)
    for name in ("cats", "dogs"):
        photos = sorted((source / "train" / name).iterdir())[:26]
        for number, photo in enumerate(photos):
            target = root / "images" / f"{name[0]}{number:03d}.jpg"
            target.symlink_to(photo)
            split = "validation" if number < 4 else "test" if number < 6 else ""
            rows.append({"filename": f"images/{target.name}", "label": name, "split": split})
    broken = {"images/d011.jpg": {"label": ""}, "images/d012.jpg": {"split": "holdout"}}
    rows = [r | broken.get(r["filename"], {}) for r in rows]  # an empty label, a bad split
    rows += [
        {"filename": "images/gone.jpg", "label": "cats", "split": ""},
        {"filename": "images/c010.jpg", "label": "cats", "split": ""},  # listed twice
    ]
    (root / "images" / "unlisted.jpg").symlink_to(sorted((source / "train" / "cats").iterdir())[30])
    with open(root / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["filename", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_a_labels_csv_run_uses_its_split_and_lists_what_it_skipped(kaggle_folder, tmp_path):
    argv = ["--space", "scratch", "--data", str(kaggle_folder), "--labels"]
    argv += [str(kaggle_folder / "labels.csv"), "--image-size", "32", "--epochs", "1"]
    result = run_cli(*argv, "--max-trials", "1", "--runs-dir", str(tmp_path), "--name", "csv")
    assert result.returncode == 0, error_lines(result)[-5:]
    info = RunStore(tmp_path / "csv").read_run_info()
    assert info["layout"] == "labels" and info["class_names"] == ["cats", "dogs"]
    counts = info["counts"]
    # 4 fixed validation + 2 fixed test per class; the seeded 20 (dogs: 18 usable) split 16/3/1.
    assert counts["test"]["cats"] >= 2 and counts["test"]["dogs"] >= 2
    assert counts["validation"]["cats"] >= 4 and counts["validation"]["dogs"] >= 4
    assert sum(sum(c.values()) for c in counts.values()) == 26 + 24
    reasons = sorted(s["reason"].split(": ", 1)[-1] for s in info["skipped"])
    assert reasons == [
        "empty label",
        "listed twice",
        "no such file",
        "not in labels.csv",
        "unknown split 'holdout'",
    ], info["skipped"]


@pytest.mark.bad_input
def test_a_labels_file_without_its_columns_is_refused_in_one_line(kaggle_folder, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name,class\nimages/c000.jpg,cats\n", encoding="utf-8")
    result = run_cli(
        "--space",
        "scratch",
        "--data",
        str(kaggle_folder),
        "--labels",
        str(bad),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--name",
        "bad",
    )
    assert result.returncode == 2
    [line] = error_lines(result)
    assert "--labels" in line and "no filename or label column" in line
    assert not (tmp_path / "runs" / "bad").exists()
