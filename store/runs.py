"""Evaluation runs and their metric tables (the Compare page's history for analysts).

The well-known metrics get real columns so they can be queried and charted; anything else a method
reports rides along in ``extras`` and comes back as extra columns.
"""
from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from mmae_core.errors import NotFoundError, StoreError

from .common import check_split, dataset_id, dumps, loads, model_row, one, registered, utcnow

METRICS = ("silhouette", "ari", "nmi", "calinski_harabasz", "davies_bouldin")
COLUMNS = ("method", "k", *METRICS)


def _floats(table: pd.DataFrame, col: str) -> pa.Array:
    if col not in table.columns:
        return pa.nulls(len(table), type=pa.float64())
    values = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return pa.array(values, mask=~np.isfinite(values), type=pa.float64())


def add(con: duckdb.DuckDBPyConnection, dataset: str, model: str | None, split: str, params: dict,
        table: pd.DataFrame) -> int:
    ds_id = dataset_id(con, dataset)
    mid = None if model is None else model_row(con, ds_id, dataset, model)[0]
    check_split(con, ds_id, dataset, split)
    if "method" not in table.columns:
        raise StoreError("The metrics table has no 'method' column; give each row the method it measures.")
    run_id = int(one(con, "SELECT nextval('run_ids')")[0])
    con.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?)", [run_id, ds_id, mid, split, dumps(params or {}), utcnow()])
    t = table.reset_index(drop=True)
    if "k" in t.columns:
        k = pd.to_numeric(t["k"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        k_arr = pa.array(np.nan_to_num(k, nan=0).astype(np.int64), mask=np.isnan(k), type=pa.int64())
    else:
        k_arr = pa.nulls(len(t), type=pa.int64())
    extra_cols = [c for c in t.columns if c not in COLUMNS]
    extras = [dumps({str(c): row[c] for c in extra_cols}) for row in t[extra_cols].to_dict("records")] if extra_cols \
        else ["{}"] * len(t)
    block = pa.table({
        "row_idx": pa.array(np.arange(len(t), dtype=np.int32)),
        "method": pa.array([str(v) for v in t["method"].tolist()], type=pa.string()),
        "k": k_arr,
        **{m: _floats(t, m) for m in METRICS},
        "extras": pa.array(extras, type=pa.string()),
    })
    with registered(con, "_metrics_in", block):
        con.execute(
            "INSERT INTO run_metrics SELECT ?, row_idx, method, k, silhouette, ari, nmi, calinski_harabasz, "
            "davies_bouldin, extras::JSON FROM _metrics_in",
            [run_id],
        )
    return run_id


def listing(con: duckdb.DuckDBPyConnection, dataset: str | None) -> pd.DataFrame:
    where, params = ("WHERE r.dataset_id = ?", [dataset_id(con, dataset)]) if dataset is not None else ("", [])
    return con.execute(
        f"""SELECT r.id, d.name AS dataset, m.name AS model, r.split, r.params::VARCHAR AS params, r.created_at,
                   (SELECT count(*) FROM run_metrics x WHERE x.run_id = r.id) AS rows
            FROM runs r JOIN datasets d ON d.id = r.dataset_id LEFT JOIN models m ON m.id = r.model_id
            {where} ORDER BY r.id""",
        params,
    ).df()


def metrics(con: duckdb.DuckDBPyConnection, run_id: int) -> pd.DataFrame:
    if one(con, "SELECT 1 FROM runs WHERE id = ?", [int(run_id)]) is None:
        raise NotFoundError(f"There is no run with id {run_id} in the store; list the runs to find its id.")
    df = con.execute(
        f"SELECT {', '.join(COLUMNS)}, extras FROM run_metrics WHERE run_id = ? ORDER BY row_idx", [int(run_id)]
    ).df()
    extras = pd.DataFrame([loads(e, {}) for e in df.pop("extras")], index=df.index)
    out = pd.concat([df, extras], axis=1) if extras.shape[1] else df
    out["k"] = out["k"].astype("Int64")
    return out


def params(con: duckdb.DuckDBPyConnection, run_id: int) -> dict:
    row = one(con, "SELECT params FROM runs WHERE id = ?", [int(run_id)])
    if row is None:
        raise NotFoundError(f"There is no run with id {run_id} in the store; list the runs to find its id.")
    return loads(row[0], {})
