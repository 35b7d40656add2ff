"""The one-line progress messages long core calls send to whoever runs them.

The CLI passes a function that writes to stderr, the dashboard one that fills a job's notes or an
``st.status``; tests and library callers pass nothing and hear nothing. One type and one silent
default, so every core module takes ``log: Log = silent`` the same way.
"""
from __future__ import annotations

from typing import Callable

Log = Callable[[str], None]


def silent(_: str) -> None:
    """The default log: says nothing."""
