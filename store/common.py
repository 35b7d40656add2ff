"""Small helpers every store module needs: names, JSON, time, look-ups that fail with a sentence."""
from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from mmae_core.errors import NotFoundError, StoreError
from mmae_core.data.checks import CONTROL_CHARS as _CONTROL
MAX_NAME = 200
BACKUP_MARK = "@replaced-"


def check_name(value: object, what: str) -> str:
    """A user-given name (tag, model, curator): trimmed, non-empty, printable. Quotes and SQL are just data."""
    if not isinstance(value, str) or not value.strip():
        raise StoreError(f"The {what} is empty; give a name with at least one visible character.")
    if _CONTROL.search(value):
        shown = _CONTROL.sub("?", value)[:40]
        raise StoreError(
            f"The {what} '{shown}' contains a control character such as a tab or newline; use plain printable characters."
        )
    name = value.strip()
    if len(name) > MAX_NAME:
        raise StoreError(f"The {what} is {len(name)} characters long; keep it to at most {MAX_NAME}.")
    return name


def check_dataset_name(value: object) -> str:
    """A dataset name: as ``check_name``, and without the mark that hides backups from every listing."""
    name = check_name(value, "dataset name")
    if BACKUP_MARK in name:
        raise StoreError(
            f"The dataset name '{name}' contains '{BACKUP_MARK}', which marks the backups kept by --replace "
            "(they are hidden from listings); choose a name without it."
        )
    return name


def utcnow() -> dt.datetime:
    """Naive UTC with microseconds: what every TIMESTAMP column holds."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def to_utc_naive(value: dt.datetime | str | pd.Timestamp) -> dt.datetime:
    ts = pd.Timestamp(value)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.to_pydatetime()


def plain(obj: Any) -> Any:
    """JSON-able copy: numpy to Python, NaN/Inf to None (JSON has no NaN), dates to ISO strings."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [plain(v) for v in obj.tolist()]
    if isinstance(obj, (dt.datetime, dt.date, pd.Timestamp)):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    if obj is pd.NA or obj is pd.NaT:
        return None
    return str(obj)


def dumps(obj: Any) -> str:
    return json.dumps(plain(obj), ensure_ascii=False, allow_nan=False)


def loads(text: str | None, default: Any = None) -> Any:
    return default if text is None else json.loads(text)


def ident(name: str) -> str:
    """Quote an identifier that comes from our own code or DuckDB's catalog (never from user input)."""
    return '"' + name.replace('"', '""') + '"'


def one(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> tuple | None:
    """First row or None, with the result read to the end (DuckDB 2 refuses new work on a half-read result)."""
    rows = con.execute(sql, params or []).fetchall()
    return rows[0] if rows else None


@contextmanager
def registered(con: duckdb.DuckDBPyConnection, name: str, data: Any) -> Iterator[None]:
    """Expose an Arrow/pandas table to SQL for one statement block; bulk inserts go through this."""
    con.register(name, data)
    try:
        yield
    finally:
        try:
            con.unregister(name)
        except duckdb.Error:
            pass  # the transaction was aborted; the cursor (and the view with it) is closed right after


def _choices(names: list[str]) -> str:
    if not names:
        return ""
    shown = ", ".join(names[:8]) + (", …" if len(names) > 8 else "")
    return f" (the store has: {shown})"


def dataset_id(con: duckdb.DuckDBPyConnection, name: str) -> int:
    row = one(con, "SELECT id FROM datasets WHERE name = ?", [name])
    if row is None:
        names = [r[0] for r in con.execute(
            "SELECT name FROM datasets WHERE position(? IN name) = 0 ORDER BY name", [BACKUP_MARK]
        ).fetchall()]
        hint = _choices(names) if names else " (the store has no datasets yet)"
        raise NotFoundError(f"There is no dataset named '{name}' in the store{hint}; import it or pick an existing one.")
    return int(row[0])


def model_row(con: duckdb.DuckDBPyConnection, ds_id: int, dataset: str, model: str) -> tuple[int, int]:
    """(model id, latent dim) of ``model`` in ``dataset``."""
    row = one(con, "SELECT id, latent_dim FROM models WHERE dataset_id = ? AND name = ?", [ds_id, model])
    if row is None:
        names = [r[0] for r in con.execute("SELECT name FROM models WHERE dataset_id = ? ORDER BY id", [ds_id]).fetchall()]
        hint = _choices(names) if names else " (it has no models yet)"
        raise NotFoundError(f"Dataset '{dataset}' has no model named '{model}'{hint}; train one or pick an existing one.")
    return int(row[0]), int(row[1])


def split_sizes(con: duckdb.DuckDBPyConnection, ds_id: int) -> dict[str, int]:
    rows = con.execute("SELECT split, n_items FROM splits WHERE dataset_id = ? ORDER BY position", [ds_id]).fetchall()
    return {r[0]: int(r[1]) for r in rows}


def check_split(con: duckdb.DuckDBPyConnection, ds_id: int, dataset: str, split: str) -> int:
    sizes = split_sizes(con, ds_id)
    if split not in sizes:
        raise NotFoundError(
            f"Dataset '{dataset}' has no '{split}' split (it has {', '.join(sizes)}); pick one of those."
        )
    return sizes[split]
