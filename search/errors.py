"""Errors the user can fix. The CLI prints their message as one line and exits with status 2."""


class UsageError(Exception):
    """Bad input: a value, a folder or a file the user gave. The message says what to do."""


class SearchStopped(Exception):
    """The search gave up (too many failed trials in a row); finished work is kept."""
