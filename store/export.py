"""Catalog exports: CSV, Parquet, JSON, as a file (atomically) or as bytes for a browser download.

CSV is the one format people open in spreadsheets, and a spreadsheet executes a cell that starts with
``=``, ``+``, ``-``, ``@``, TAB or CR as a formula (CSV injection); a leading LF is treated the same,
since some spreadsheets skip leading line breaks before parsing. Spreadsheets also skip leading
blanks (spaces, NBSP, U+3000, a byte-order mark) before deciding, so ``" =1+1"`` is a formula too: a
*text* cell whose first character after such blanks starts a formula gets a leading single quote, as
OWASP recommends; numbers are never touched, so -1.5 stays a number. Parquet and JSON are read by
programs, not spreadsheets, and are written unchanged (JSON has no infinity: ``json_loss`` says so).

Files are written to a temporary file beside the target and renamed over it, so a reader never
sees half a file. A rename replaces whatever has the name, so only a new path or an existing regular
file is accepted (never a device, pipe or socket), a symbolic link is followed only when asked,
and the file gets the mode a plain ``open`` would give it (an existing file keeps its own).
"""
from __future__ import annotations

import io
import os
import secrets
import stat
from pathlib import Path

import numpy as np
import pandas as pd

from mmae_core.errors import StoreError

from .faults import pause_point

FORMATS: tuple[str, ...] = ("csv", "parquet", "json")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")  # and full-width = + - @
_INVISIBLE = "\ufeff\u200b\u200c\u200d\u2060"  # not whitespace to Python, skipped by spreadsheets all the same


def starts_formula(value: str) -> bool:
    """True when a spreadsheet could read ``value`` as a formula: its first character, or the first
    after leading blanks, is ``= + - @``, a TAB, CR or LF."""
    if value.startswith(_FORMULA_START):
        return True
    rest = value.lstrip()
    while rest and rest[0] in _INVISIBLE:
        rest = rest[1:].lstrip()
    return rest.startswith(_FORMULA_START)


def neutralise(df: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells cannot start a spreadsheet formula."""
    out = df.copy()
    for col in out.columns:
        s = out[col]
        if s.dtype == object or isinstance(s.dtype, pd.StringDtype):
            out[col] = s.map(lambda v: "'" + v if isinstance(v, str) and starts_formula(v) else v)
    return out


def json_loss(df: pd.DataFrame, fmt: str) -> str | None:
    """The sentence to show when a JSON export writes +-inf as null (JSON has no infinity), else None."""
    if _check_format(fmt) != "json":
        return None
    counts = {}
    for col in df.columns:
        s = df[col]
        if pd.api.types.is_float_dtype(s.dtype):
            n = int(np.isinf(s.to_numpy(dtype=float, na_value=np.nan)).sum())
            if n:
                counts[str(col)] = n
    if not counts:
        return None
    where = ", ".join(f"{n} in '{c}'" for c, n in counts.items())
    return (f"JSON has no infinity, so {sum(counts.values())} infinite values ({where}) were written as null; "
            "export Parquet to keep them.")


def _check_format(fmt: str) -> str:
    f = str(fmt).lower().lstrip(".")
    if f not in FORMATS:
        raise StoreError(f"'{fmt}' is not an export format; choose csv, parquet or json.")
    return f


def to_bytes(df: pd.DataFrame, fmt: str) -> bytes:
    """The exact bytes ``export_catalog`` writes, for ``st.download_button``."""
    f = _check_format(fmt)
    frame = df.rename(columns=str)
    if f == "csv":
        # CRLF as RFC 4180 says; it also makes the writer quote a cell holding a bare CR.
        return neutralise(frame).to_csv(index=False, lineterminator="\r\n").encode("utf-8")
    if f == "parquet":
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        return buf.getvalue()
    text = frame.to_json(orient="records", date_format="iso", force_ascii=False, indent=1, default_handler=str)
    return text.encode("utf-8")


def check_target(out: str | Path, what: str, follow_symlinks: bool = False) -> Path:
    """The path a file will be written to: a new path or an existing regular file, checked before any
    work is done. A symbolic link is refused unless ``follow_symlinks``; then its target is returned."""
    out = Path(out).expanduser()
    hint = "--follow-symlinks" if what == "export" else "the link's target itself"
    try:
        st = os.lstat(out)
    except (FileNotFoundError, NotADirectoryError):  # (a file where a folder should be: said below)
        st = None
    except OSError as err:
        raise StoreError(f"The {what} cannot be written to {out} ({err.strerror}); choose another path.") from None
    if st is not None and stat.S_ISLNK(st.st_mode):
        if not follow_symlinks:
            raise StoreError(
                f"{out} is a symbolic link, which is not followed unless asked; give {hint} to write through it, "
                "or choose another path."
            )
        out = Path(os.path.realpath(out))
        st = os.stat(out) if out.exists() else None
    if st is not None and stat.S_ISDIR(st.st_mode):
        suffix = {"export": "catalog.csv", "checkpoint": "model.pt"}.get(what, "file")
        raise StoreError(f"{out} is a folder; give a file name such as {out / suffix}.")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise StoreError(
            f"{out} is a special file (a device, pipe or socket), which the {what} would replace; choose a new file name "
            "or an existing regular file."
        )
    base = out.parent  # missing folders are created on writing; the nearest existing one must take them
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise StoreError(f"{base} is a file, so the folder {out.parent} cannot be created; choose another path for the {what}.")
    if not os.access(base, os.W_OK | os.X_OK):
        raise StoreError(f"The folder {base} is not writable; choose a folder you can write to for the {what}.")
    return out


def write_file(data: bytes, out: str | Path, what: str = "export", follow_symlinks: bool = False) -> Path:
    """Write ``data`` to a temporary file beside ``out`` and rename it over ``out``.

    The temporary file is created with mode 0666 minus the umask (what a plain ``open`` gives), or
    with the replaced file's own mode, not ``mkstemp``'s 0600."""
    out = check_target(out, what, follow_symlinks)
    try:
        mode = stat.S_IMODE(os.stat(out).st_mode)
    except FileNotFoundError:
        mode = None
    tmp = out.parent / f".{out.name}.{secrets.token_hex(6)}.tmp"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as err:
        raise StoreError(f"The {what} cannot be written to {out} ({err.strerror}); choose a folder you can write to.") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            view, half = memoryview(data), len(data) // 2
            fh.write(view[:half])
            fh.flush()
            pause_point("export")  # crash tests: killed with half the bytes in the temporary file
            fh.write(view[half:])
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(err, OSError):
            failed = StoreError(f"The {what} cannot be written to {out} ({err.strerror}); free some space or choose another folder.")
            failed.reason = err.strerror  # type: ignore[attr-defined] - for callers that add what was saved
            raise failed from None
        raise
    return out


def export_catalog(df: pd.DataFrame, fmt: str, out: str | Path, follow_symlinks: bool = False) -> Path:
    """Write the catalog atomically (see ``write_file``); the target is checked before it is encoded."""
    f = _check_format(fmt)
    check_target(out, "export", follow_symlinks)
    return write_file(to_bytes(df, f), out, "export", follow_symlinks)
