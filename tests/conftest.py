"""Shared fixtures: real photos from ../shared/data, linked into small folders and a Keras cache.

Tests that need ../shared/data skip when it is absent (a user's fresh machine); CI sets
REQUIRE_SHARED_DATA=1, which turns those skips into failures.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SHARED_DATA", REPO.parent / "shared" / "data"))
CATS_AND_DOGS = SHARED_DATA / "cats_and_dogs_filtered"
WEIGHTS = SHARED_DATA / "keras-models" / "mobilenet_v2_1.0_160_stanford-dogs_no_top.weights.h5"

# The default data set is found through the Keras cache, as a user's would be: link the shared
# copy where keras.utils.get_file leaves it. Set before anything imports Keras.
KERAS_HOME = Path(tempfile.mkdtemp(prefix="keras-home-"))
os.environ["KERAS_HOME"] = str(KERAS_HOME)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if CATS_AND_DOGS.is_dir():
    (KERAS_HOME / "datasets").mkdir()
    (KERAS_HOME / "datasets" / "cats_and_dogs_filtered").symlink_to(CATS_AND_DOGS)


def need(path: Path) -> Path:
    if path.exists():
        return path
    message = f"{path} is absent: the real data in ../shared/data is needed"
    if os.environ.get("REQUIRE_SHARED_DATA") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def weights_file() -> Path:
    return need(WEIGHTS)


def link_images(target: Path, per_split: dict[str, int], classes=("cats", "dogs")) -> Path:
    """A train/validation folder of real photos (symlinks), `per_split[split]` per class."""
    source = need(CATS_AND_DOGS)
    for split, count in per_split.items():
        for name in classes:
            folder = target / split / name
            folder.mkdir(parents=True)
            for photo in sorted((source / split / name).iterdir())[:count]:
                (folder / photo.name).symlink_to(photo)
    return target


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    """24 training and 20 validation photos per class: 4 of the validation ones become test."""
    return link_images(tmp_path_factory.mktemp("tiny"), {"train": 24, "validation": 20})


@pytest.fixture(scope="session")
def tiny_data(tiny_folder):
    from search.data import load_image_data

    return load_image_data(tiny_folder, image_size=32)


def cli_env() -> dict[str, str]:
    """The environment a command of the project runs in: this session's Keras cache."""
    return os.environ | {"KERAS_HOME": str(KERAS_HOME)}


def no_tensorflow_env(**extra: str) -> dict[str, str]:
    """cli_env() where `import tensorflow` fails as if TensorFlow were not installed
    (tests/no_tensorflow/sitecustomize.py), with `extra` variables set."""
    blocker = str(REPO / "tests" / "no_tensorflow")
    return cli_env() | {"PYTHONPATH": blocker, **extra}


def run_cli(
    *args: str, cwd: Path | None = None, timeout: int = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `python run_search.py ARGS` as a user would, in a separate process (in `env`, by
    default cli_env())."""
    return subprocess.run(
        [sys.executable, str(REPO / "run_search.py"), *args],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or cli_env(),
    )


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """stderr lines that are ours, without TensorFlow's start-up logging."""
    noise = ("I0000", "E0000", "W0000", "WARNING: All log messages")
    return [line for line in result.stderr.splitlines() if line and not line.startswith(noise)]


@pytest.fixture(scope="session")
def tiny_run(tiny_folder, tmp_path_factory):
    """A finished two-trial Keras Tuner search of the scratch space on the tiny folder."""
    from reports.html import write_report
    from search.steps import SearchConfig, run_search

    config = SearchConfig(
        space="scratch",
        data=str(tiny_folder),
        max_trials=2,
        epochs=2,
        image_size=32,
        batch_size=16,
        name="tiny",
        runs_dir=str(tmp_path_factory.mktemp("runs")),
    )
    return config, run_search(config, report=write_report)


@pytest.fixture(scope="session")
def torch_run(tiny_folder, tmp_path_factory) -> Path:
    """A finished two-trial search of the scratch space on the PyTorch backend, run through the
    command line with TensorFlow unimportable: the run directory. Backend tests share it."""
    runs = tmp_path_factory.mktemp("torch-runs")
    result = run_cli(
        *("--space", "scratch", "--data", str(tiny_folder), "--image-size", "32"),
        *("--epochs", "2", "--max-trials", "2", "--batch-size", "16"),
        *("--runs-dir", str(runs), "--name", "torch"),
        env=no_tensorflow_env(KERAS_BACKEND="torch"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return runs / "torch"


def _postgres_binary(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL cluster on a loopback port, removed after the session."""
    initdb, pg_ctl = _postgres_binary("initdb"), _postgres_binary("pg_ctl")
    if not (initdb and pg_ctl):
        message = "PostgreSQL server binaries (Debian's postgresql) are not installed"
        if os.environ.get("REQUIRE_SHARED_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    root = Path(tempfile.mkdtemp(prefix="pg-"))
    # PostgreSQL refuses to run as root: run it as the postgres user when we are root.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = root / "data"
    subprocess.run(
        [*as_user, initdb, "-D", str(data), "-U", "postgres", "--auth=trust"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    subprocess.run(
        [*as_user, pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)
