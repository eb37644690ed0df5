"""Errors the user can fix. The CLI prints their message as one line and exits with status 2
(bad input) or WRITE_FAULT_STATUS (a write the machine refused)."""

import errno
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def first_line(error: BaseException) -> str:
    """An error in one line for a message: its type and the first line of its text."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


class UsageError(Exception):
    """Bad input: a value, a folder or a file the user gave. The message says what to do."""


class SearchStopped(Exception):
    """The search gave up (too many failed trials in a row); finished work is kept."""


class Restart(Exception):
    """The process has grown too much between trials: it should start again and resume.

    TensorFlow keeps memory from every model built in a process (tens of MB per model, more for
    fine-tuning, even after `clear_session`); only a new process gives it back.
    """


# Exit status of a write the machine refused (a full disk, a quota, a read-only or unwritable
# folder): sysexits' EX_IOERR, apart from bad input (2), so a script can free space and resume.
WRITE_FAULT_STATUS = 74
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES})
# The same faults from libraries that raise no OSError for them: TensorFlow's file system
# (Keras Tuner writes through it) and SQLite (Optuna's study, through SQLAlchemy).
WRITE_FAULT_TEXTS = (
    "No space left on device",
    "Disk quota exceeded",
    "Read-only file system",
    "Permission denied",
    "database or disk is full",
    "attempt to write a readonly database",
)


class WriteFault(Exception):
    """A write the machine refused; the message names the path and what to do."""


def find_write_fault(error: BaseException) -> BaseException | None:
    """The write fault that caused `error` (itself, or along its causes), or None."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, WriteFault):
            return current
        if isinstance(current, OSError) and current.errno in WRITE_ERRNOS:
            return current
        if any(text in str(current) for text in WRITE_FAULT_TEXTS):
            return current
        current = current.__cause__ or current.__context__
    return None


def write_fault_message(fault: BaseException, advice: str) -> str:
    """One line for a write fault: the path and what failed (from the error), then `advice`."""
    if isinstance(fault, WriteFault):
        return str(fault)
    if isinstance(fault, OSError) and fault.errno in WRITE_ERRNOS:
        return f"cannot write {fault.filename or 'a file'}: {fault.strerror}; {advice}"
    return f"a write failed: {first_line(fault)}; {advice}"


@contextmanager
def write_faults_say(advice: str | Callable[[], str]) -> Iterator[None]:
    """Turn a write fault in the block into a WriteFault of one line that ends in `advice` (or
    what it returns, asked once the fault is known)."""
    try:
        yield
    except WriteFault:
        raise
    except Exception as error:
        fault = find_write_fault(error)
        if fault is None:
            raise
        said = advice if isinstance(advice, str) else advice()
        raise WriteFault(write_fault_message(fault, said)) from error
