"""Datasets in the store: items, metadata and feature blocks, written and read back exactly.

Features are stored as ``np.save`` bytes of float32 row blocks of at most ``CHUNK_BYTES``: DuckDB
handles large BLOBs, but bounded blocks keep the memory of one row bounded too, and LUMA-scale
modalities (29k x 1024) stay a handful of rows. Metadata is kept twice on purpose: as Parquet per split,
which restores the DataFrame with its dtypes, and as JSON per item, which SQL can query.
"""
from __future__ import annotations

import io

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mmae_core.data.dataset import FeatureSet, Split
from mmae_core.errors import StoreError

from . import schema
from .common import BACKUP_MARK, check_dataset_name, dataset_id, dumps, ident, loads, one, registered, utcnow
from .faults import pause_point

CHUNK_BYTES = 32 * 1024 * 1024


def _npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(x, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def _meta_parquet(meta: pd.DataFrame, where: str) -> bytes:
    if meta.columns.duplicated().any():
        dup = meta.columns[meta.columns.duplicated()][0]
        raise StoreError(f"{where}: the items table has the column '{dup}' twice; give every column its own name.")
    try:
        table = pa.Table.from_pandas(meta, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError):
        # Mixed-type object columns cannot be typed by Arrow; they are stored as text.
        fixed = meta.copy()
        for col in fixed.columns:
            if fixed[col].dtype == object:
                fixed[col] = fixed[col].map(lambda v: v if v is None or isinstance(v, str) else str(v))
        table = pa.Table.from_pandas(fixed, preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _meta_json(meta: pd.DataFrame | None, n: int) -> list[str | None]:
    if meta is None or meta.shape[1] == 0:
        return [None] * n
    text = meta.reset_index(drop=True).to_json(
        orient="records", lines=True, date_format="iso", force_ascii=False, default_handler=str
    )
    lines = text.splitlines()
    if len(lines) != n:  # pandas escapes newlines inside values, so this would be a bug
        raise StoreError("The items table could not be turned into one JSON record per item; simplify its columns.")
    return lines


def _backup_name(con: duckdb.DuckDBPyConnection, name: str) -> str:
    stamp = utcnow().strftime("%Y%m%dT%H%M%S")
    base = f"{name}{BACKUP_MARK}{stamp}"
    candidate, n = base, 2
    while one(con, "SELECT 1 FROM datasets WHERE name = ?", [candidate]):
        candidate = f"{base}-{n}"
        n += 1
    return candidate


def add(con: duckdb.DuckDBPyConnection, fs: FeatureSet, replace: bool) -> dict:
    name = check_dataset_name(fs.name)
    existing = one(con, "SELECT id FROM datasets WHERE name = ?", [name])
    backup = None
    if existing is not None:
        if not replace:
            raise StoreError(
                f"A dataset named '{name}' is already in the store; pass --replace to overwrite it "
                "(the old one is kept as a backup) or choose another name."
            )
        backup = _backup_name(con, name)
        con.execute("UPDATE datasets SET name = ? WHERE id = ?", [backup, existing[0]])
    ds_id = int(one(con, "SELECT nextval('dataset_ids')")[0])
    con.execute(
        "INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?)",
        [ds_id, name, dumps({m: int(d) for m, d in fs.modalities.items()}), bool(fs.synthetic),
         str(fs.source or ""), utcnow(), dumps(fs.attrs or {})],
    )
    sizes: dict[str, int] = {}
    for position, (sname, sp) in enumerate(fs.splits.items()):
        where = f"{name}/{sname}"
        meta_blob = None if sp.meta is None else _meta_parquet(sp.meta, where)
        con.execute(
            "INSERT INTO splits VALUES (?, ?, ?, ?, ?, ?)",
            [ds_id, sname, position, sp.n, sp.labels is not None, meta_blob],
        )
        labels = None if sp.labels is None else [None if v is None else str(v) for v in sp.labels.tolist()]
        items = pa.table({
            "row_idx": pa.array(np.arange(sp.n, dtype=np.int32)),
            "item_id": pa.array([str(v) for v in sp.item_ids.tolist()], type=pa.string()),
            "label": pa.array(labels if labels is not None else [None] * sp.n, type=pa.string()),
            "meta": pa.array(_meta_json(sp.meta, sp.n), type=pa.string()),
        })
        with registered(con, "_items_in", items):
            con.execute(
                "INSERT INTO items SELECT ?, ?, row_idx, item_id, label, meta::JSON FROM _items_in", [ds_id, sname]
            )
        for modality, dim in fs.modalities.items():
            x = sp.features[modality]
            rows_per_chunk = max(1, CHUNK_BYTES // (4 * max(1, int(dim))))
            for chunk, start in enumerate(range(0, sp.n, rows_per_chunk)):
                block = x[start:start + rows_per_chunk]
                con.execute(
                    "INSERT INTO features VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [ds_id, sname, modality, chunk, start, int(block.shape[0]), int(dim), _npy(block)],
                )
        sizes[sname] = sp.n
        pause_point("import")  # crash tests: killed with part of the dataset written, not committed
    return {
        "name": name,
        "id": ds_id,
        "splits": sizes,
        "items": int(sum(sizes.values())),
        "modalities": {m: int(d) for m, d in fs.modalities.items()},
        "synthetic": bool(fs.synthetic),
        "replaced": backup,
    }


def load(con: duckdb.DuckDBPyConnection, name: str) -> FeatureSet:
    ds_id = dataset_id(con, name)
    _, modalities, synthetic, source, attrs = one(con, 
        "SELECT name, modalities, synthetic, source, attrs FROM datasets WHERE id = ?", [ds_id]
    )
    modalities = {m: int(d) for m, d in loads(modalities).items()}
    splits: dict[str, Split] = {}
    for sname, n, labelled, meta_blob in con.execute(
        "SELECT split, n_items, labelled, meta FROM splits WHERE dataset_id = ? ORDER BY position", [ds_id]
    ).fetchall():
        items = con.sql(
            "SELECT item_id, label FROM items WHERE dataset_id = $1 AND split = $2 ORDER BY row_idx",
            params=[ds_id, sname],
        ).to_arrow_table()
        item_ids = np.asarray(items.column("item_id").to_pylist(), dtype=object)
        labels = np.asarray(items.column("label").to_pylist(), dtype=object) if labelled else None
        meta = None if meta_blob is None else pq.read_table(io.BytesIO(meta_blob)).to_pandas()
        features: dict[str, np.ndarray] = {}
        for modality, dim in modalities.items():
            x = np.empty((int(n), dim), dtype=np.float32)
            for start, rows, blob in con.execute(
                "SELECT row_start, n_rows, data FROM features WHERE dataset_id = ? AND split = ? AND modality = ? "
                "ORDER BY chunk",
                [ds_id, sname, modality],
            ).fetchall():
                x[start:start + rows] = np.load(io.BytesIO(blob), allow_pickle=False)
            features[modality] = x
        splits[sname] = Split(item_ids=item_ids, features=features, labels=labels, meta=meta)
    return FeatureSet(
        name=name, modalities=modalities, splits=splits, synthetic=bool(synthetic), source=source,
        attrs=loads(attrs, {}),
    )


def names(con: duckdb.DuckDBPyConnection, backups: bool) -> list[str]:
    rows = con.execute(
        "SELECT name FROM datasets WHERE ? OR position(? IN name) = 0 ORDER BY name", [backups, BACKUP_MARK]
    ).fetchall()
    return [r[0] for r in rows]


def listing(con: duckdb.DuckDBPyConnection, backups: bool) -> pd.DataFrame:
    rows = con.execute(
        """SELECT d.name, string_agg(s.split, ', ' ORDER BY s.position) AS splits,
                  coalesce(sum(s.n_items), 0)::BIGINT AS items, d.modalities, d.synthetic, d.created_at
           FROM datasets d LEFT JOIN splits s ON s.dataset_id = d.id
           WHERE ? OR position(? IN d.name) = 0
           GROUP BY d.id, d.name, d.modalities, d.synthetic, d.created_at
           ORDER BY d.name""",
        [backups, BACKUP_MARK],
    ).fetchall()
    out = pd.DataFrame(rows, columns=["name", "splits", "items", "modalities", "synthetic", "created_at"])
    out["modalities"] = [", ".join(f"{m}:{d}" for m, d in loads(t).items()) for t in out["modalities"]]
    return out


def delete(con: duckdb.DuckDBPyConnection, name: str) -> dict:
    ds_id = dataset_id(con, name)
    for table in schema.latent_tables(con):
        con.execute(
            f"DELETE FROM {ident(table)} WHERE model_id IN (SELECT id FROM models WHERE dataset_id = ?)", [ds_id]
        )
    con.execute("DELETE FROM assignments WHERE set_id IN (SELECT id FROM proposal_sets WHERE dataset_id = ?)", [ds_id])
    con.execute("DELETE FROM proposals WHERE set_id IN (SELECT id FROM proposal_sets WHERE dataset_id = ?)", [ds_id])
    con.execute("DELETE FROM run_metrics WHERE run_id IN (SELECT id FROM runs WHERE dataset_id = ?)", [ds_id])
    counts = {}
    for table in ("proposal_sets", "runs", "models", "tag_events", "tags", "features", "items", "splits"):
        counts[table] = int(one(con, f"SELECT count(*) FROM {ident(table)} WHERE dataset_id = ?", [ds_id])[0])
        con.execute(f"DELETE FROM {ident(table)} WHERE dataset_id = ?", [ds_id])
    con.execute("DELETE FROM datasets WHERE id = ?", [ds_id])
    for table in schema.latent_tables(con):  # a latent size no model uses any more leaves no empty table
        if one(con, f"SELECT count(*) FROM {ident(table)}")[0] == 0:
            con.execute(f"DROP TABLE {ident(table)}")
    return {"name": name, "items": counts["items"], "models": counts["models"], "tags": counts["tags"]}
