"""Catalog exports: CSV, Parquet, JSON, as a file (atomically) or as bytes for a browser download.

CSV is the one format people open in spreadsheets, and a spreadsheet executes a cell that starts with
``=``, ``+``, ``-``, ``@``, TAB or CR as a formula (CSV injection); a leading LF is treated the same,
since some spreadsheets skip leading line breaks before parsing. Such *text* cells get a leading
single quote, as OWASP recommends; numbers are never touched, so -1.5 stays a number. Parquet and
JSON are read by programs, not spreadsheets, and are written unchanged.
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import pandas as pd

from mmae_core.errors import StoreError

from .faults import pause_point

FORMATS: tuple[str, ...] = ("csv", "parquet", "json")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def neutralise(df: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells cannot start a spreadsheet formula."""
    out = df.copy()
    for col in out.columns:
        s = out[col]
        if s.dtype == object or isinstance(s.dtype, pd.StringDtype):
            out[col] = s.map(lambda v: "'" + v if isinstance(v, str) and v.startswith(_FORMULA_START) else v)
    return out


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


def export_catalog(df: pd.DataFrame, fmt: str, out: str | Path) -> Path:
    """Write to a temporary file beside ``out`` and rename it: a reader never sees half a file."""
    data = to_bytes(df, fmt)
    out = Path(out).expanduser()
    if out.is_dir():
        raise StoreError(f"{out} is a folder; give a file name such as {out / ('catalog.' + _check_format(fmt))}.")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as err:
        raise StoreError(f"The export cannot be written to {out} ({err.strerror}); choose a folder you can write to.") from None
    try:
        with os.fdopen(fd, "wb") as fh:
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
            raise StoreError(f"The export cannot be written to {out} ({err.strerror}); free some space or choose another folder.") from None
        raise
    return out
