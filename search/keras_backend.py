"""Which Keras backend runs the trials (TensorFlow, PyTorch or JAX), chosen as Keras users
choose it: `KERAS_BACKEND`, else ~/.keras/keras.json's "backend", else TensorFlow; the command
line's `--keras-backend` (and `search.run(keras_backend=...)`) sets `KERAS_BACKEND` before Keras
is imported. Not to be confused with the search back end (`--backend keras-tuner|optuna`).

Keras fixes its backend when it is first imported, so choosing one after Keras was imported with
another is refused in one line. JAX reads its GPU memory settings from the environment when it
starts, so they are set here too. This module imports neither Keras nor a backend's library.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from importlib import metadata

from search.config import SearchConfig
from search.data import keras_home
from search.errors import UsageError

# Each backend's library, as pip and import name it, and what installs it.
LIBRARIES = {"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}
INSTALL = {
    "tensorflow": 'pip install -e "."',
    "torch": 'pip install -e ".[torch]"',
    "jax": 'pip install -e ".[jax]"',
}
DEFAULT = "tensorflow"  # Keras's own default


def _imported_backend() -> str | None:
    """The backend of the Keras this process imported already; None before Keras is imported."""
    keras = sys.modules.get("keras")
    return keras.backend.backend() if keras is not None and hasattr(keras, "backend") else None


def configured_backend() -> str:
    """The backend Keras uses in this process, or would use when imported now."""
    imported = _imported_backend()
    if imported is not None:
        return imported
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    config = keras_home() / "keras.json"
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("backend", DEFAULT)
    except (OSError, ValueError, AttributeError):
        return DEFAULT


def choose_backend(name: str | None, *, gpu_memory_mb: int | None = None) -> str:
    """Make `name` (None: the configured one) the Keras backend of this process and return it;
    a UsageError in one line for an unknown, uninstalled or too late choice."""
    chosen = name or configured_backend()
    if chosen not in LIBRARIES:
        raise UsageError(
            f"unknown Keras backend {chosen!r}: choose one of {', '.join(LIBRARIES)} "
            f"(--keras-backend, or KERAS_BACKEND)"
        )
    if importlib.util.find_spec(LIBRARIES[chosen]) is None:
        raise UsageError(
            f"the {chosen} backend of Keras needs {LIBRARIES[chosen]}, which is not installed: "
            f"{INSTALL[chosen]}"
        )
    active = _imported_backend()
    if active is not None and active != chosen:
        raise UsageError(
            f"Keras was already imported with the {active} backend, and cannot switch to "
            f"{chosen} in this process: set KERAS_BACKEND={chosen} before importing Keras "
            f"(in a notebook, restart the kernel)"
        )
    os.environ["KERAS_BACKEND"] = chosen
    if chosen == "jax":
        for variable, value in jax_memory_environment(gpu_memory_mb).items():
            os.environ.setdefault(variable, value)
    return chosen


def check_backend_options(config: SearchConfig, name: str) -> None:
    """Refuse the options that mean nothing on backend `name`, in one line."""
    if name == "jax" and config.jit == "off":
        raise UsageError(
            "--jit off: the jax backend of Keras compiles every step with XLA, and without it "
            "runs each op on its own, many times slower; leave --jit out on jax"
        )
    if (
        config.tensorboard
        and name != "tensorflow"
        and importlib.util.find_spec("tensorflow") is None
    ):
        raise UsageError(
            f"--tensorboard writes its logs through TensorFlow, which is not installed beside "
            f"the {name} backend: pip install tensorflow, or leave --tensorboard out"
        )


def library_version(name: str) -> str:
    """The installed version of backend `name`'s library."""
    try:
        return metadata.version(LIBRARIES[name])
    except metadata.PackageNotFoundError:
        return "not installed"


def jax_memory_environment(memory_limit_mb: int | None) -> dict[str, str]:
    """XLA's allocator settings: no preallocation of 75% of the GPU (JAX's default), so several
    workers can share one, as TensorFlow's memory growth does; with `memory_limit_mb` (the
    --gpu-memory-mb) the fraction of the first visible GPU's memory it is, since JAX takes a
    fraction, not a size."""
    settings = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    total = _gpu_memory_mb() if memory_limit_mb else None
    if memory_limit_mb and total:
        settings["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{min(1.0, memory_limit_mb / total):.3f}"
    return settings


def _gpu_memory_mb() -> int | None:
    """The first visible GPU's memory in MiB, asked of nvidia-smi (JAX must not start yet)."""
    if shutil.which("nvidia-smi") is None:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or "0"
    command = [
        "nvidia-smi",
        "-i",
        visible,
        "--query-gpu=memory.total",
        "--format=csv,noheader,nounits",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True)
        return int(done.stdout.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
