"""Write a file or a folder whole or not at all: written under a temporary name beside it, then
renamed over it (a rename within one folder is atomic), so a reader, a resumed run or a browser
reloading never sees half of one.

Used by the store, the report (which imports nothing else from `search/` that trains), the
decoded-image cache and the feature cache.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path


def temporary_path(path: Path, *, per_process: bool = False) -> Path:
    """A hidden name beside `path` that keeps every suffix last: Keras saves a model only to a
    name ending in .keras and weights only to one ending in .weights.h5. `per_process` adds the
    pid, so processes writing the same file at once never share a temporary one."""
    suffixes = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffixes)]
    hidden = stem if stem.startswith(".") else f".{stem}"
    pid = f".{os.getpid()}" if per_process else ""
    return path.with_name(f"{hidden}{pid}.tmp{suffixes}")


def atomic_write(path: Path, write: Callable[[Path], object], *, per_process: bool = False) -> None:
    """Call `write(temporary path)`, then rename the result to `path`."""
    tmp = temporary_path(path, per_process=per_process)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)  # a half-written file would hold space a full disk needs
        if isinstance(error, OSError) and error.filename in (None, str(tmp)):
            error.filename = str(path)  # the message names the file the user knows
        raise


def atomic_folder(path: Path, write: Callable[[Path], object], *, replace: bool = False) -> None:
    """Fill a fresh temporary folder with `write(folder)`, then rename it to `path`. The
    temporary name is always per process: caches are filled by concurrent workers. When `path`
    already exists the rename fails and the folder already there is kept (another process
    finished the same one first), unless `replace` removes it first (a damaged earlier copy)."""
    tmp = temporary_path(path, per_process=True)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # as in atomic_write: give the space back
        raise
    if replace:
        shutil.rmtree(path, ignore_errors=True)
    try:
        os.replace(tmp, path)
    except OSError:  # another process renamed its copy into place first
        shutil.rmtree(tmp, ignore_errors=True)
