"""Errors the user can fix. The CLI prints their message as one line and exits with status 2."""


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
