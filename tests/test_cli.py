"""The real command line, in subprocesses: --help, and every usage error as one line, status 2.

Argument errors exit before TensorFlow is imported; only the --weights check imports it."""

import re

import pytest
from conftest import error_lines, run_cli

from spaces import SPACES

ALGORITHMS = ("random", "bayesian", "hyperband", "grid")


pytestmark = pytest.mark.bad_input


def one_error_line(result, *needles: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = error_lines(result)
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("run_search.py"), line
    assert "error" in line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def test_help_lists_spaces_algorithms_and_defaults():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    assert error_lines(result) == []
    text = result.stdout
    for name, about in SPACES.items():
        assert re.search(rf"^\s+{name}\s+{re.escape(about)}$", text, re.M), name
    flat = " ".join(text.split())  # argparse wraps lines to the terminal width
    choices = re.search(r"--algorithm \{([a-z,-]+)\}", flat)
    assert choices is not None
    assert set(choices.group(1).split(",")) == set(ALGORITHMS)

    # One block per option: its "  --name VALUE" line and the indented lines under it.
    blocks = re.split(r"\n(?=  -)", text.split("\nspaces:")[0])

    def option_help(option: str) -> str:
        found = [b for b in blocks if re.match(rf"  {option} [A-Z_]+\b", b)]
        assert len(found) == 1, option
        return " ".join(found[0].split())

    assert "(default: 10)" in option_help("--epochs")
    assert "(default: 10)" in option_help("--max-trials")
    assert "(default: 160)" in option_help("--image-size")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("--space", "nosuchspace"), ("--space", "nosuchspace")),
        (("--epochs", "0"), ("--epochs", "0")),
        (("--max-trials", "0"), ("--max-trials", "0")),
        (("--image-size", "16"), ("--image-size", "16")),
        (("--image-size", "2000"), ("--image-size", "2000")),
        (("--batch-size", "0"), ("--batch-size", "0")),
    ],
    ids=["space", "epochs", "max-trials", "image-size-16", "image-size-2000", "batch-size"],
)
def test_bad_argument_is_one_line(tmp_path, args, needles):
    runs = tmp_path / "runs"
    result = run_cli(*args, "--runs-dir", str(runs), cwd=tmp_path)
    one_error_line(result, *needles)
    assert not runs.exists()


def test_missing_data_folder_creates_no_run(tmp_path):
    runs = tmp_path / "runs"
    missing = tmp_path / "no" / "such" / "folder"
    result = run_cli(
        "--data",
        str(missing),
        "--space",
        "scratch",
        "--name",
        "r1",
        "--runs-dir",
        str(runs),
        cwd=tmp_path,
    )
    one_error_line(result, "--data", str(missing))
    assert not runs.exists() or list(runs.iterdir()) == []
    assert not (tmp_path / "runs").exists()


def test_resume_of_an_unknown_run(tmp_path):
    runs = tmp_path / "runs"
    result = run_cli("--resume", "--name", "nosuchrun", "--runs-dir", str(runs), cwd=tmp_path)
    line = one_error_line(result, "--resume", "nosuchrun")
    assert "no run" in line
    assert not (runs / "nosuchrun").exists()


@pytest.mark.parametrize("command", ["report", "export"])
def test_command_on_a_folder_without_run_json(tmp_path, command):
    folder = tmp_path / "not-a-run"
    folder.mkdir()
    (folder / "notes.txt").write_text("no run here\n")
    line = one_error_line(run_cli(command, str(folder), cwd=tmp_path), str(folder), "run.json")
    assert "not a run directory" in line
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_missing_weights_file(tmp_path, tiny_folder):
    result = run_cli(
        "--space",
        "transfer",
        "--weights",
        "/no/such/file.h5",
        "--data",
        str(tiny_folder),
        "--image-size",
        "32",
        "--max-trials",
        "1",
        "--epochs",
        "1",
        "--runs-dir",
        str(tmp_path / "runs"),
        cwd=tmp_path,
    )
    one_error_line(result, "--weights", "/no/such/file.h5")
    assert not (tmp_path / "runs").exists(), "a usage error must leave no run directory"


@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "verbose"])
def test_a_fresh_run_starts_with_the_run_line(verbose, tiny_folder, tmp_path):
    """TensorFlow's native start-up lines (absl, oneDNN, CUDA probing) and Keras's per-trial
    warnings stay off the terminal; --verbose shows what TensorFlow said."""
    argv = ["--space", "scratch", "--data", str(tiny_folder), "--max-trials", "1"]
    argv += ["--epochs", "1", "--image-size", "32", "--runs-dir", str(tmp_path)]
    result = run_cli(*argv, *(["--verbose"] if verbose else []))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"run {tmp_path}/"), result.stdout[:300]
    native = ("I0000", "E0000", "W0000", "WARNING: All log messages", "oneDNN", "cuInit")
    shown = [line for line in result.stderr.splitlines() if line.startswith(native)]
    if verbose:
        # Which lines TensorFlow prints depends on the CPU: oneDNN's only where it is on (Intel),
        # CUDA probing only without a GPU driver; absl's first line, on every machine.
        assert shown, result.stderr[-2000:]
    else:
        assert result.stderr == "", result.stderr[-2000:]


def test_quiet_prints_only_the_result(tiny_folder, tmp_path):
    argv = ["--space", "scratch", "--data", str(tiny_folder), "--max-trials", "2", "--quiet"]
    result = run_cli(*argv, "--epochs", "1", "--image-size", "32", "--runs-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("best trial "), result.stdout[:300]
    assert len(result.stdout.splitlines()) == 1 and result.stderr == ""


def test_the_search_logger_is_the_python_callers_to_silence(tiny_folder, tmp_path, capsys):
    """Through logging, as Optuna does: the 'search' logger's level decides what is shown."""
    import logging

    import search

    logger = logging.getLogger("search")
    options = {"data": str(tiny_folder), "max_trials": 1, "epochs": 1, "image_size": 32}
    search.run(space="scratch", runs_dir=str(tmp_path), name="shown", **options)
    assert "trial 0 (1/1) complete" in capsys.readouterr().out
    logger.setLevel(logging.WARNING)
    try:
        search.run(space="scratch", runs_dir=str(tmp_path), name="silent", **options)
    finally:
        logger.setLevel(logging.INFO)
    assert capsys.readouterr().out == ""


def test_a_terminal_gets_a_live_progress_line(tiny_folder, tmp_path):
    """Under a pseudo-terminal a line is rewritten at each epoch (trial, epoch, phase, elapsed,
    ETA); redirected output, as in every other test here, gets plain lines only."""
    import os
    import pty
    import subprocess
    import sys

    from conftest import REPO, cli_env

    argv = ["--space", "scratch", "--data", str(tiny_folder), "--max-trials", "2"]
    argv += ["--epochs", "3", "--image-size", "32", "--runs-dir", str(tmp_path)]
    terminal, child_side = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, str(REPO / "run_search.py"), *argv],
        stdout=child_side,
        stderr=subprocess.DEVNULL,
        env=cli_env(),
    )
    os.close(child_side)
    shown = b""
    while True:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # the child closed its side
            break
        if not chunk:
            break
        shown += chunk
    assert process.wait(timeout=600) == 0
    text = shown.decode()
    assert "\r\x1b[Ktrial 0 (1/2) epoch 1/3 (train) " in text and "elapsed, ETA " in text
    assert "\r\x1b[Ktrial 1 (2/2) epoch 3/3 (train) " in text
    assert "\r\x1b[Ktrial 1 (2/2) complete val_acc=" in text, "the result line replaces it"
