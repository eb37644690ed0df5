"""The store's files: epochs.csv is appended to (not rewritten), a line a kill cut short is
ignored by readers and dropped by the next writer, and atomic writes keep suffixes last."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pandas as pd
import pytest

from search.atomic import atomic_folder, atomic_write, temporary_path
from search.schema import EPOCH_COLUMNS
from search.store import RunStore


def epoch(trial_id: int, number: int, phase: str = "head") -> dict:
    return {
        "trial_id": trial_id,
        "epoch": number,
        "loss": 0.5 / number,
        "accuracy": 0.6,
        "val_loss": 0.7 / number,
        "val_accuracy": 0.55,
        "seconds": 1.25,
        "phase": phase,
    }


def file_id(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns


def test_appending_epochs_leaves_trials_csv_alone_and_appends_to_epochs_csv(tmp_path):
    store = RunStore(tmp_path / "run")
    store.begin_trial(1, {"units": 8})
    trials_before = file_id(store.trials_csv)
    epochs_inode = store.epochs_csv.stat().st_ino
    rows = [epoch(1, number, phase="a,b" if number == 2 else "head") for number in (1, 2, 3)]
    for row in rows:
        store.append_epoch(row)
    assert file_id(store.trials_csv) == trials_before
    assert store.epochs_csv.stat().st_ino == epochs_inode, "appended, not renamed over"
    store.finish_trial(1, {"status": "complete", "val_accuracy": 0.55, "val_loss": 0.35})
    assert file_id(store.trials_csv) != trials_before
    epochs = store.epochs()
    assert list(epochs.columns) == EPOCH_COLUMNS
    assert list(epochs["epoch"]) == [1, 2, 3]
    assert epochs.loc[1, "phase"] == "a,b"
    assert epochs["train_loss_clean"].isna().all()
    # pandas reads the appended lines as it reads its own to_csv of the same rows.
    written = pd.DataFrame(rows, columns=EPOCH_COLUMNS).to_csv(index=False)
    pd.testing.assert_frame_equal(pd.read_csv(store.epochs_csv), pd.read_csv(io.StringIO(written)))


def test_a_retried_trial_starts_its_epochs_anew(tmp_path):
    store = RunStore(tmp_path / "run")
    store.begin_trial(1, {})
    store.append_epoch(epoch(1, 1))
    store.begin_trial(2, {})
    store.append_epoch(epoch(2, 1))
    store.append_epoch(epoch(2, 2))
    store.begin_trial(2, {})  # after a crash
    store.append_epoch(epoch(2, 1))
    assert store.epochs()[["trial_id", "epoch"]].values.tolist() == [[1, 1], [2, 1]]


def test_a_torn_last_epoch_line_is_ignored_then_replaced(tmp_path):
    store = RunStore(tmp_path / "run")
    store.begin_trial(1, {})
    store.append_epoch(epoch(1, 1))
    with open(store.epochs_csv, "a", encoding="utf-8") as handle:
        handle.write("1,2,0.25,0.6")  # a kill mid-write: no newline
    epochs = store.epochs()
    assert list(epochs["epoch"]) == [1]
    store.append_epoch(epoch(1, 2))
    assert store.epochs()[["trial_id", "epoch"]].values.tolist() == [[1, 1], [1, 2]]
    assert store.epochs_csv.read_text(encoding="utf-8").endswith("head\n")


def test_an_epochs_csv_with_an_older_header_is_rewritten_under_the_current_one(tmp_path):
    store = RunStore(tmp_path / "run")
    store.run_dir.mkdir()
    old = [c for c in EPOCH_COLUMNS if "clean" not in c]
    pd.DataFrame([epoch(1, 1)], columns=old).to_csv(store.epochs_csv, index=False)
    store.append_epoch(epoch(1, 2))
    assert list(pd.read_csv(store.epochs_csv).columns) == EPOCH_COLUMNS
    assert list(store.epochs()["epoch"]) == [1, 2]


@pytest.mark.parametrize(
    ("name", "per_process", "expected"),
    [
        ("best_model.keras", False, ".best_model.tmp.keras"),
        ("abc.weights.h5", True, ".abc.{pid}.tmp.weights.h5"),
        (".trial_3.keras", False, ".trial_3.tmp.keras"),
    ],
)
def test_temporary_names_keep_every_suffix_last(tmp_path, name, per_process, expected):
    # The pid is filled in here, not in the ids: pytest-xdist workers must collect alike.
    expected = expected.format(pid=os.getpid())
    assert temporary_path(tmp_path / name, per_process=per_process).name == expected


def test_atomic_writes_leave_only_the_result(tmp_path):
    atomic_write(tmp_path / "a.json", lambda p: p.write_text("{}", encoding="utf-8"))
    atomic_folder(tmp_path / "f", lambda p: (p / "x.npy").write_bytes(b"1"))
    atomic_folder(tmp_path / "f", lambda p: (p / "y.npy").write_bytes(b"2"))  # kept: first wins
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.json", "f", "x.npy"]
    atomic_folder(tmp_path / "f", lambda p: (p / "y.npy").write_bytes(b"2"), replace=True)
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["y.npy"]
