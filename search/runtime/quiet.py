"""Native libraries' output kept off the terminal: TensorFlow's C++ code (and other backends'
native libraries) write to file descriptor 2 past Python's logging and their own log levels."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_stderr(replay: bool = False) -> Iterator[None]:
    """Send file descriptor 2 to a scratch file meanwhile: TensorFlow's C++ code writes there
    past Python's logging and past TF_CPP_MIN_LOG_LEVEL (absl's lines before its log is set up,
    the TFLite converter's MLIR). With `replay`, what was written is shown afterwards."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                if replay:
                    sink.seek(0)
                    sys.stderr.write(sink.read().decode("utf-8", "replace"))
                    sys.stderr.flush()
    finally:
        os.close(saved)
