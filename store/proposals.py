"""Cluster proposals: one set per (model, split, k) proposal run, its clusters and item assignments.

Every proposal run is kept (a new set does not overwrite an old one) so decisions taken on an older
set stay explainable; the Tags page and the tag actions always work on the latest set of a model.
"""
from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from mmae_core.errors import NotFoundError, StoreError

from .common import check_split, dataset_id, dumps, loads, model_row, one, registered, utcnow

TABLE_COLUMNS = ("cluster", "size", "name", "purity", "cohesion", "majority_label", "representatives")
OUT_COLUMNS = (*TABLE_COLUMNS, "status", "tag")


def _opt_float(v) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def _opt_str(v) -> str | None:
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
        return None
    return str(v)


def save(con: duckdb.DuckDBPyConnection, dataset: str, model: str, split: str, k: int, table: pd.DataFrame,
         item_ids: np.ndarray, clusters: np.ndarray) -> int:
    ds_id = dataset_id(con, dataset)
    mid, _ = model_row(con, ds_id, dataset, model)
    check_split(con, ds_id, dataset, split)
    missing = [c for c in ("cluster", "size", "name") if c not in table.columns]
    if missing:
        raise StoreError(f"The proposal table lacks the column(s) {', '.join(missing)}; build it with the tag proposer.")
    ids = np.asarray(item_ids).astype(str)
    cl = np.asarray(clusters)
    if ids.shape != cl.shape or ids.ndim != 1:
        raise StoreError(
            f"There are {ids.size} item ids but {cl.size} cluster numbers; pass one cluster number per item."
        )
    set_id = int(one(con, "SELECT nextval('proposal_set_ids')")[0])
    con.execute("INSERT INTO proposal_sets VALUES (?, ?, ?, ?, ?, ?)", [set_id, ds_id, mid, split, int(k), utcnow()])
    rows = []
    for rec in table.to_dict("records"):
        reps = rec.get("representatives")
        reps = [] if reps is None or (isinstance(reps, float) and np.isnan(reps)) else [str(r) for r in list(reps)]
        rows.append([
            set_id, int(rec["cluster"]), int(rec["size"]), str(rec["name"]), _opt_float(rec.get("purity")),
            _opt_float(rec.get("cohesion")), _opt_str(rec.get("majority_label")), dumps(reps), "proposed", None,
        ])
    if rows:
        con.executemany("INSERT INTO proposals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    block = pa.table({"item_id": pa.array(ids.tolist(), type=pa.string()),
                      "cluster": pa.array(cl.astype(np.int64), type=pa.int64())})
    with registered(con, "_assign_in", block):
        con.execute("INSERT INTO assignments SELECT ?, item_id, cluster FROM _assign_in", [set_id])
    unknown_cluster = one(con, 
        "SELECT min(a.cluster) FROM assignments a ANTI JOIN proposals p ON p.set_id = a.set_id AND p.cluster = a.cluster "
        "WHERE a.set_id = ?", [set_id]
    )[0]
    if unknown_cluster is not None:
        raise StoreError(
            f"Items are assigned to cluster {unknown_cluster}, which the proposal table does not describe; "
            "pass a table row for every cluster."
        )
    outside = one(con, 
        "SELECT min(a.item_id), count(*) FROM assignments a ANTI JOIN items i "
        "ON i.dataset_id = ? AND i.split = ? AND i.item_id = a.item_id WHERE a.set_id = ?",
        [ds_id, split, set_id],
    )
    if outside[1]:
        raise StoreError(
            f"Item '{outside[0]}' (and {outside[1] - 1} more) is not in the {split} split of dataset '{dataset}'; "
            "propose tags on that split's own items."
        )
    return set_id


def latest_set(con: duckdb.DuckDBPyConnection, ds_id: int, model_id: int | None) -> tuple | None:
    """(set id, model id, split, k, created_at) of the newest proposal set, or None."""
    if model_id is None:
        return one(con, 
            "SELECT id, model_id, split, k, created_at FROM proposal_sets WHERE dataset_id = ? ORDER BY id DESC LIMIT 1",
            [ds_id],
        )
    return one(con, 
        "SELECT id, model_id, split, k, created_at FROM proposal_sets WHERE dataset_id = ? AND model_id = ? "
        "ORDER BY id DESC LIMIT 1",
        [ds_id, model_id],
    )


def require_latest_set(con: duckdb.DuckDBPyConnection, dataset: str, model: str) -> tuple[int, int, int]:
    """(dataset id, model id, set id) of the model's latest proposals, or a NotFoundError sentence."""
    ds_id = dataset_id(con, dataset)
    mid, _ = model_row(con, ds_id, dataset, model)
    row = latest_set(con, ds_id, mid)
    if row is None:
        raise NotFoundError(f"Model '{model}' of dataset '{dataset}' has no tag proposals yet; run propose first.")
    return ds_id, mid, int(row[0])


def table(con: duckdb.DuckDBPyConnection, dataset: str, model: str | None) -> pd.DataFrame:
    """The latest proposal set's table alone (one row per cluster; ``attrs``: set_id, model, split, k,
    created_at), empty when there is none.

    Why apart from ``get``: the assignments are one row per item, a million at archive size (about a
    second and 100 MB in pandas); the Tags and Home pages need only the k rows of the table and read a
    proposal's members page by page (``members``)."""
    ds_id = dataset_id(con, dataset)
    mid = None if model is None else model_row(con, ds_id, dataset, model)[0]
    row = latest_set(con, ds_id, mid)
    if row is None:
        return pd.DataFrame(columns=list(OUT_COLUMNS))
    set_id, set_model, split, k, created = row
    out = con.execute(
        f"SELECT {', '.join(OUT_COLUMNS)} FROM proposals WHERE set_id = ? ORDER BY cluster", [set_id]
    ).df()
    out["representatives"] = [loads(r, []) for r in out["representatives"]]
    model_name = one(con, "SELECT name FROM models WHERE id = ?", [set_model])[0]
    out.attrs.update({"set_id": int(set_id), "model": model_name, "split": split, "k": int(k), "created_at": created})
    return out


def get(con: duckdb.DuckDBPyConnection, dataset: str, model: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    out = table(con, dataset, model)
    if not len(out) and "set_id" not in out.attrs:
        return out, pd.DataFrame(columns=["item_id", "cluster"])
    assign = con.execute("SELECT item_id, cluster FROM assignments WHERE set_id = ? ORDER BY cluster, item_id",
                         [out.attrs["set_id"]]).df()
    assign.attrs.update(out.attrs)
    return out, assign


def members(con: duckdb.DuckDBPyConnection, dataset: str, model: str, cluster: int, offset: int = 0,
            limit: int = 500) -> list[str]:
    """One page of a proposal's item ids (the model's latest set), in id order."""
    _, _, set_id = require_latest_set(con, dataset, model)
    return [r[0] for r in con.execute(
        "SELECT item_id FROM assignments WHERE set_id = ? AND cluster = ? ORDER BY item_id LIMIT ? OFFSET ?",
        [set_id, int(cluster), max(0, int(limit)), max(0, int(offset))],
    ).fetchall()]
