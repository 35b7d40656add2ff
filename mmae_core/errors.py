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


class ResourceError(StudioError):
    """The machine ran out of something a job needs: memory or disk space."""


def resource_error(err: BaseException) -> ResourceError | None:
    """One sentence for running out of memory or disk, or None for any other error.

    Out of memory shows up as Python's ``MemoryError``, as torch's "DefaultCPUAllocator: can't allocate
    memory" RuntimeError, or as numpy's "Unable to allocate" ``MemoryError``; a full disk as an
    ``OSError`` with ENOSPC, EDQUOT or EFBIG. None of these is the user's input being wrong, so the
    sentence says what ran out and what to try.
    """
    import errno

    text = str(err)
    if isinstance(err, MemoryError) or (
        isinstance(err, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())
    ):
        return ResourceError(
            "The job ran out of memory, so it stopped and nothing of it was saved; use a smaller batch size, "
            "latent or hidden size, or a smaller dataset, or free memory on the server, and try again."
        )
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return ResourceError(
            f"The disk refused a write ({err.strerror}), so the action stopped and nothing of it was saved; "
            "free some disk space and try again."
        )
    return None
