"""What the terminal shows: the Keras backend's native start-up lines kept off it unless asked for
(search.runtime.quiet), and the package's messages."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from search.runtime.quiet import quiet_stderr


def start_keras_backend(verbose: bool = False) -> None:
    """Import Keras and its backend's library and look for GPUs once, quietly: TensorFlow's
    oneDNN notice, "could not find cuda drivers" and a cuInit error on a machine without a GPU
    come from these two steps. Looking for GPUs does not start the device runtime, so devices
    can still be configured."""
    with quiet_stderr(replay=verbose):
        from search import compat
        from search.runtime import get_runtime

        get_runtime().start()
        compat.import_optional_tensorflow()  # which Keras imports on any backend, if installed


def live_output() -> bool:
    """Whether a live progress line fits: the package's messages are shown, on a terminal."""
    return log.isEnabledFor(logging.INFO) and sys.stdout.isatty()


def live_line(text: str) -> None:
    """Rewrite the terminal's current line (cleared first, no newline)."""
    sys.stdout.write(f"\r\033[K{text}")
    sys.stdout.flush()


def format_seconds(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class _ConsoleHandler(logging.Handler):
    """One plain line per message: information to the current sys.stdout, warnings to the
    current sys.stderr (looked up at each line, so a notebook's or a test's capture sees it)."""

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
        if stream.isatty():
            stream.write("\r\033[K")  # a live progress line gives way to the message
        try:
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


# The package's messages (the run line, one line per trial, notices) go through the "search"
# logger, so a Python caller can silence or redirect them; like Optuna, it has a handler of its
# own by default. --quiet (quiet=True in search.run) shows only warnings.
log = logging.getLogger("search")
if not log.handlers:
    log.addHandler(_ConsoleHandler())
    log.setLevel(logging.INFO)
    log.propagate = False


@contextlib.contextmanager
def quiet(enabled: bool) -> Iterator[None]:
    """Only warnings from the package meanwhile, when `enabled`."""
    level = log.level
    if enabled:
        log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)
