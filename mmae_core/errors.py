"""User-facing errors.

Every error a user can cause derives from ``StudioError``; its message is one sentence that says
what is wrong and what to do. The CLI prints it on one line and exits non-zero; the dashboard shows it
with ``st.error``. Anything else escaping is a bug in our code, not in the user's input.
"""
from __future__ import annotations


class StudioError(Exception):
    """A problem the user can fix. ``str(err)`` is the whole message shown to them."""


class DataError(StudioError):
    """Input feature files are missing, malformed, misaligned or unsafe."""


class ConfigError(StudioError):
    """A training, evaluation or proposal setting is out of range (e.g. k larger than the items)."""


class CheckpointError(StudioError):
    """A checkpoint cannot be read safely or does not fit the dataset it is used with."""


class StoreError(StudioError):
    """The database cannot be opened, is locked by another process, or refused an action."""


class NotFoundError(StoreError):
    """A named dataset, model, tag, cluster or item does not exist in the store."""


class CancelledError(StudioError):
    """A long job was cancelled by the user between steps."""
