"""Runs searches: data, trial runner, back ends, run store and export.

`search.run(...)` is the Python API (search/api.py), imported on first use so that the command
line's --help stays quick.
"""

from __future__ import annotations

__all__ = ["SearchResult", "run"]


def __getattr__(name: str):
    if name in __all__:
        from search import api

        return getattr(api, name)
    raise AttributeError(f"module 'search' has no attribute {name!r}")
