"""Write faults on real filesystems: a small tmpfs that fills (and is then enlarged) and a
read-only bind mount of a finished run. Each fault must end in one line naming the path and
what to do, with exit status 74, and leave a run that resumes with its finished trials kept.

Mounting needs root, as CI and this project's machines run; elsewhere these tests skip, saying
why, except in CI, where they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, cli_env, error_lines, run_cli

from search.errors import WRITE_FAULT_STATUS

if os.geteuid() != 0:
    if os.environ.get("CI") == "true":
        pytest.fail("write-fault tests mount filesystems: CI must run them as root")
    pytest.skip("mounting a tmpfs or a read-only bind needs root", allow_module_level=True)

PAGE = os.sysconf("SC_PAGE_SIZE")
# Small models (under 1 MB each), so a runs folder of a few MB holds a search, and quick trials.
SMALL = ("--fix", "pooling=global_avg", "--fix", "conv_blocks=1", "--fix", "dense_units=64")
SEARCH = ("--space", "scratch", "--image-size", "32", "--batch-size", "16", *SMALL)


@contextlib.contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@contextlib.contextmanager
def read_only(folder: Path, at: Path) -> Iterator[Path]:
    at.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(folder), str(at)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(at)], check=True)
        yield at
    finally:
        subprocess.run(["umount", "-l", str(at)], check=True)


def enlarge(folder: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True)


def free_pages(folder: Path) -> int:
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize // PAGE


def fill(folder: Path, *, leave_pages: int = 0) -> None:
    """Take all of `folder`'s filesystem but `leave_pages` pages, in one ballast file (again
    while a search running there frees some)."""
    with open(folder / "ballast", "ab") as handle:
        while (pages := free_pages(folder) - leave_pages) > 0:
            with contextlib.suppress(OSError):  # the search took some meanwhile: measure again
                os.posix_fallocate(handle.fileno(), os.fstat(handle.fileno()).st_size, pages * PAGE)


def assert_one_line(result: subprocess.CompletedProcess, *expected: str) -> str:
    """The run ended in one line of ours with the write-fault status, and no traceback."""
    lines = error_lines(result)
    assert result.returncode == WRITE_FAULT_STATUS, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("run_search.py: error: "), lines
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def complete(run: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The complete trials' rows (id, duration) and their epoch rows."""
    trials = pd.read_csv(run / "trials.csv")
    done = trials[trials["status"] == "complete"][["trial_id", "duration_s"]]
    epochs = pd.read_csv(run / "epochs.csv")
    return done.reset_index(drop=True), epochs[epochs["trial_id"].isin(done["trial_id"])]


@pytest.mark.parametrize("backend", ["keras-tuner", "optuna"])
def test_write_fault_disk_full_mid_search_is_one_line_and_resumes(backend, tiny_folder, tmp_path):
    """The runs folder fills once the first trial is recorded, during the second of 4 trials;
    after it is enlarged, --resume finishes the search without training a finished trial
    again (same duration_s, same epoch rows)."""
    runs = tmp_path / "runs"
    search = (*SEARCH, "--data", str(tiny_folder), "--backend", backend, "--epochs", "3")
    if backend == "optuna":
        # The cut-off trial stays RUNNING in the study (SQLite refused its end too) and the
        # resume retries it once its heartbeat is stale: two beats, 120 s by default.
        search += ("--heartbeat", "3")
    named = ("--runs-dir", str(runs), "--name", "full")
    with tmpfs(runs, "4m"):
        process = subprocess.Popen(
            [sys.executable, str(REPO / "run_search.py"), *search, *named, "--max-trials", "4"],
            cwd=REPO,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        trials = runs / "full" / "trials.csv"
        while process.poll() is None and not (
            trials.exists() and "complete" in trials.read_text(encoding="utf-8")
        ):
            time.sleep(0.05)
        fill(runs)
        stdout, stderr = process.communicate(timeout=600)
        faulted = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        line = assert_one_line(faulted, str(runs), "--resume --name full")
        assert "No space left on device" in line or "disk is full" in line, line
        kept, kept_epochs = complete(runs / "full")
        assert 1 <= len(kept) < 4, kept

        enlarge(runs, "64m")
        resumed = run_cli("--resume", *named)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        done, epochs = complete(runs / "full")
        assert len(done) == 4, done
        before = done[done["trial_id"].isin(kept["trial_id"])].reset_index(drop=True)
        pd.testing.assert_frame_equal(before, kept)
        pd.testing.assert_frame_equal(
            epochs[epochs["trial_id"].isin(kept["trial_id"])].reset_index(drop=True),
            kept_epochs.reset_index(drop=True),
        )


def test_write_fault_disk_full_before_the_first_trial_is_one_line(tiny_folder, tmp_path):
    """A runs folder with no room at all: one line, and, once enlarged, the same command runs
    (there is no run.json to resume yet, and the line says so)."""
    runs = tmp_path / "runs"
    command = (*SEARCH, "--data", str(tiny_folder), "--epochs", "1", "--max-trials", "1")
    command += ("--runs-dir", str(runs), "--name", "none")
    with tmpfs(runs, "1m"):
        fill(runs)
        assert_one_line(run_cli(*command), str(runs), "run the same command again")
        enlarge(runs, "64m")
        again = run_cli(*command)
        assert again.returncode == 0, again.stderr[-3000:]


def test_write_fault_a_cache_without_room_is_refused_before_decoding(tiny_folder, tmp_path):
    """--cache-dir on a filesystem with less room than images x size^2 x 3 bytes: one line
    naming --cache-dir, and nothing decoded there."""
    cache = tmp_path / "cache"
    command = (*SEARCH[:2], "--image-size", "128", "--data", str(tiny_folder), "--epochs", "1")
    command += ("--max-trials", "1", "--runs-dir", str(tmp_path / "runs"), "--name", "big")
    with tmpfs(cache, "1m"):
        line = assert_one_line(run_cli(*command, "--cache-dir", str(cache)), "--cache-dir")
        assert "MB free" in line and str(cache) in line, line
        assert list(cache.iterdir()) == []


def test_write_fault_a_disk_that_fills_while_images_are_decoded_is_no_sigbus(tiny_folder, tmp_path):
    """Room for the decoded pixels (the check before decoding passes) but not for the cache's
    files, rounded up to pages: the memory-mapped cache fills the disk. Its space is reserved
    before it is written, so this is one line (writing into a sparse map would be SIGBUS, exit
    135), and the half-made cache is removed."""
    cache = tmp_path / "cache"
    command = (*SEARCH, "--data", str(tiny_folder), "--epochs", "1", "--max-trials", "1")
    command += ("--runs-dir", str(tmp_path / "runs"), "--name", "fills")
    images = sum(1 for _ in tiny_folder.rglob("*.jpg"))
    with tmpfs(cache, "1m"):
        pixels = -(-images * 32 * 32 * 3 // PAGE)
        fill(cache, leave_pages=pixels)
        assert free_pages(cache) == pixels
        result = run_cli(*command, "--cache-dir", str(cache))
        assert result.returncode != 135 and result.returncode != -7
        assert_one_line(result, str(cache), "No space left on device")
        assert [p.name for p in cache.iterdir()] == ["ballast"]


@pytest.fixture(scope="module")
def read_only_run(tiny_run, tmp_path_factory) -> Iterator[Path]:
    """The shared finished run (tests/conftest.py's tiny_run), mounted read-only."""
    config, _ = tiny_run
    with read_only(Path(config.runs_dir), tmp_path_factory.mktemp("ro")) as runs:
        yield runs


def test_write_fault_export_of_a_read_only_run_suggests_output(read_only_run, tmp_path):
    line = assert_one_line(run_cli("export", str(read_only_run / "tiny")), "--output")
    assert "Read-only file system" in line and str(read_only_run) in line, line
    shipped = tmp_path / "shipped" / "model.keras"
    exported = run_cli("export", str(read_only_run / "tiny"), "--output", str(shipped))
    assert exported.returncode == 0 and shipped.exists(), exported.stderr[-3000:]


def test_write_fault_report_of_a_read_only_run_is_one_line(read_only_run):
    line = assert_one_line(run_cli("report", str(read_only_run / "tiny")), "Read-only")
    assert str(read_only_run / "tiny") in line, line


def test_write_fault_resume_of_a_read_only_run_is_one_line(read_only_run):
    resumed = run_cli("--resume", "--name", "tiny", "--runs-dir", str(read_only_run))
    line = assert_one_line(resumed, "Read-only file system", "--resume --name tiny")
    assert str(read_only_run / "tiny") in line, line


def test_write_fault_keras_tuner_files_are_written_whole(tmp_path):
    """Keras Tuner's state files go through search.compat's atomic save_json: on a full disk
    the earlier file stays whole and no temporary file is left."""
    from keras_tuner.src import utils as kt_utils

    from search import compat

    compat.atomic_keras_tuner_files()
    with tmpfs(tmp_path / "kt", "1m") as folder:
        kt_utils.save_json(str(folder / "trial.json"), {"trial_id": "0"})
        fill(folder)
        with pytest.raises(OSError, match="No space left"):
            kt_utils.save_json(str(folder / "trial.json"), {"trial_id": "0" * (2 * PAGE)})
        assert kt_utils.load_json(str(folder / "trial.json")) == {"trial_id": "0"}
        assert sorted(p.name for p in folder.iterdir()) == ["ballast", "trial.json"]
    shutil.rmtree(tmp_path / "kt", ignore_errors=True)
