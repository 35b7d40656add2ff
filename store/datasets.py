"""Datasets in the store: items, metadata and features, written and read back exactly.

Features are kept as ``.npy`` files in the features folder beside the store (``feature_files``:
why, and how it stays atomic); the dataset's row names its folder in ``attrs``. Datasets imported
before that keep their features in the ``features`` table as ``np.save`` bytes of float32 row
blocks of at most ``CHUNK_BYTES``, and are read from there as before. Metadata is kept twice on
purpose: as Parquet per split, which restores the DataFrame with its dtypes, and as JSON per item,
which SQL can query. Items go in ``ITEM_ROWS`` at a time, so a million-item split never builds one
million-line JSON text.
"""
from __future__ import annotations

import io
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mmae_core.data.dataset import FeatureSet, Split
from mmae_core.data.lazy import NpyWindows
from mmae_core.errors import StoreError

from . import feature_files, schema
from .common import BACKUP_MARK, check_dataset_name, dataset_id, dumps, ident, loads, one, registered, utcnow
from .faults import pause_point

CHUNK_BYTES = 32 * 1024 * 1024
ITEM_ROWS = 100_000
FOLDER_KEY = "features_folder"  # in datasets.attrs: the dataset's folder under the features folder


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


def folders(con: duckdb.DuckDBPyConnection) -> set[str]:
    """The feature folders that datasets (backups included) name."""
    return {loads(a, {}).get(FOLDER_KEY) for (a,) in con.execute("SELECT attrs FROM datasets").fetchall()} - {None}


def add(con: duckdb.DuckDBPyConnection, fs: FeatureSet, replace: bool, files: tuple[Path, Path] | None = None) -> dict:
    """``files``: (store path, temp folder already holding the features, from ``feature_files.write_temp``);
    the folder is renamed to its final name just before COMMIT. None: features go in as blocks."""
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
    attrs = dict(fs.attrs or {})
    if files is not None:
        attrs[FOLDER_KEY] = feature_files.commit_name(files[1])
    con.execute(
        "INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?)",
        [ds_id, name, dumps({m: int(d) for m, d in fs.modalities.items()}), bool(fs.synthetic),
         str(fs.source or ""), utcnow(), dumps(attrs)],
    )
    sizes: dict[str, int] = {}
    for position, (sname, sp) in enumerate(fs.splits.items()):
        where = f"{name}/{sname}"
        meta_blob = None if sp.meta is None else _meta_parquet(sp.meta, where)
        con.execute(
            "INSERT INTO splits VALUES (?, ?, ?, ?, ?, ?)",
            [ds_id, sname, position, sp.n, sp.labels is not None, meta_blob],
        )
        for s in range(0, sp.n, ITEM_ROWS):
            e = min(sp.n, s + ITEM_ROWS)
            labels = None if sp.labels is None else [None if v is None else str(v) for v in sp.labels[s:e].tolist()]
            items = pa.table({
                "row_idx": pa.array(np.arange(s, e, dtype=np.int32)),
                "item_id": pa.array([str(v) for v in sp.item_ids[s:e].tolist()], type=pa.string()),
                "label": pa.array(labels if labels is not None else [None] * (e - s), type=pa.string()),
                "meta": pa.array(_meta_json(None if sp.meta is None else sp.meta.iloc[s:e], e - s), type=pa.string()),
            })
            with registered(con, "_items_in", items):
                con.execute(
                    "INSERT INTO items SELECT ?, ?, row_idx, item_id, label, meta::JSON FROM _items_in", [ds_id, sname]
                )
        for modality, dim in ({} if files is not None else fs.modalities).items():
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
    if files is not None:
        store_path, tmp = files
        feature_files.collect(store_path, folders(con) - {attrs[FOLDER_KEY]})
        if tmp.exists():  # (a retried transaction finds it published already)
            feature_files.publish(tmp)
        pause_point("features")  # crash tests: killed with the folder renamed, the COMMIT not yet made
    return {
        "name": name,
        "id": ds_id,
        "splits": sizes,
        "items": int(sum(sizes.values())),
        "modalities": {m: int(d) for m, d in fs.modalities.items()},
        "synthetic": bool(fs.synthetic),
        "replaced": backup,
    }


def load(con: duckdb.DuckDBPyConnection, name: str, store_path: Path | None = None, lazy: bool = False) -> FeatureSet:
    """The dataset with its features in memory; with ``lazy`` (a dataset in the features folder),
    each modality is an ``NpyWindows`` over its file, read only in windows."""
    ds_id = dataset_id(con, name)
    _, modalities, synthetic, source, attrs = one(con, 
        "SELECT name, modalities, synthetic, source, attrs FROM datasets WHERE id = ?", [ds_id]
    )
    modalities = {m: int(d) for m, d in loads(modalities).items()}
    attrs = loads(attrs, {})
    where = attrs.pop(FOLDER_KEY, None)
    if where is not None and store_path is None:
        raise StoreError(f"dataset '{name}' keeps its features beside the store; open it through Store to read them.")
    base = None if where is None else feature_files.folder(store_path, where)
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
            if base is not None:
                f = NpyWindows(base / sname / f"{modality}.npy", f"the stored {sname}/{modality} features of '{name}'")
                features[modality] = f if lazy else np.asarray(f)
                continue
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
        attrs=attrs,
    )


def feature_folder(con: duckdb.DuckDBPyConnection, name: str, store_path: Path) -> Path | None:
    """The folder of a dataset's ``<split>/<modality>.npy`` files; None for one stored as blocks."""
    (attrs,) = one(con, "SELECT attrs FROM datasets WHERE id = ?", [dataset_id(con, name)])
    where = loads(attrs, {}).get(FOLDER_KEY)
    return None if where is None else feature_files.folder(store_path, where)


def names(con: duckdb.DuckDBPyConnection, backups: bool) -> list[str]:
    rows = con.execute(
        "SELECT name FROM datasets WHERE ? OR position(? IN name) = 0 ORDER BY name", [backups, BACKUP_MARK]
    ).fetchall()
    return [r[0] for r in rows]


def split_sizes(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, int]:
    """Items per split, in the dataset's split order (a count: no feature is read)."""
    rows = con.execute("SELECT split, n_items FROM splits WHERE dataset_id = ? ORDER BY position", [dataset_id(con, name)]).fetchall()
    return {str(sp): int(n) for sp, n in rows}


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


def delete(con: duckdb.DuckDBPyConnection, name: str, store_path: Path | None = None) -> dict:
    """Remove the dataset's rows; its feature folder is named in the result (key ``_folder``) so the
    caller removes it after COMMIT."""
    ds_id = dataset_id(con, name)
    (attrs,) = one(con, "SELECT attrs FROM datasets WHERE id = ?", [ds_id])
    folder_name = loads(attrs, {}).get(FOLDER_KEY)
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
    if store_path is not None:
        feature_files.collect(store_path, folders(con) | {folder_name})  # ours goes after COMMIT
    return {"name": name, "items": counts["items"], "models": counts["models"], "tags": counts["tags"], "_folder": folder_name}
