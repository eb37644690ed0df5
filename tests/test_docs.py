"""The docs: every option `--help` shows is documented in docs/, the README stays short and
holds the set-up commands CI runs, and the site builds in strict mode. No training."""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from search.cli import export_parser, predict_parser, report_parser, search_parser

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CI = REPO / ".ci" / "run"
README_MAX_LINES = 160

# The README's set-up, one command a line, as .ci/run runs it (CI adds [gp,torch,jax,docs], a
# Keras cache of its own and --runs-dir/--name, and finds the shared data from the repo's parent).
INSTALL = 'pip install -c constraints.txt -e ".[dev]"'
DATA_LINK = (
    'mkdir -p ~/.keras/datasets && ln -sfn "$PWD/../shared/data/cats_and_dogs_filtered" '
    "~/.keras/datasets/"
)
WEIGHTS = "keras-models/mobilenet_v2_1.0_160_stanford-dogs_no_top.weights.h5"
MAIN_JOB = (
    "python run_search.py --space transfer --max-trials 3 --epochs 2 "
    f"--weights ../shared/data/{WEIGHTS}"
)
TESTS = "python -m pytest -q -n 2"


def docs_text() -> str:
    return "\n".join(page.read_text(encoding="utf-8") for page in sorted(REPO.glob("docs/*.md")))


def help_options() -> list[tuple[str, str]]:
    """(command, option) for every option the four parsers' --help shows."""
    parsers = (search_parser(), report_parser(), export_parser(), predict_parser())
    return [
        (parser.prog, option)
        for parser in parsers
        for action in parser._actions
        if action.help != argparse.SUPPRESS
        for option in action.option_strings
    ]


def test_every_help_option_is_in_the_docs():
    text = docs_text()
    undocumented = [
        f"{prog} {option}"
        for prog, option in help_options()
        if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text)
    ]
    assert len(help_options()) > 50
    assert not undocumented, f"options --help shows but docs/*.md never names: {undocumented}"


def test_the_readme_is_short_and_holds_the_set_up_commands_one_a_line():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES
    for command in (INSTALL, DATA_LINK, MAIN_JOB, TESTS):
        assert command in lines, f"README lacks the line {command!r}"


def test_the_readme_set_up_is_what_ci_runs():
    ci = CI.read_text(encoding="utf-8")
    ci_lines = [line for line in ci.splitlines() if line.strip()]
    assert ci_lines[-1] == TESTS
    assert '-c constraints.txt -e ".[dev,gp,torch,jax,docs]"' in ci
    main_job = re.search(r"^python run_search\.py .*?[^\\]$", ci, re.MULTILINE | re.DOTALL)
    assert main_job is not None
    assert "--space transfer --max-trials 3 --epochs 2" in main_job.group(0)
    assert f'--weights "$SHARED/{WEIGHTS}"' in main_job.group(0)
    assert "mkdocs build --strict" in ci


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None, reason="mkdocs not installed ([docs])"
)
def test_the_site_builds_in_strict_mode(tmp_path: Path):
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    assert (tmp_path / "python-api" / "index.html").exists()
