"""The tagged catalog: one row per item with its label, metadata, tag and where the tag came from.

``status`` tells a curator what is left to do: 'accepted' (tagged from a proposal), 'manual' (tagged
by hand), 'proposed' (in a pending cluster of the latest proposals), 'rejected' (in a rejected
cluster) or 'untagged'. ``cluster``/``model`` are those of the tag, else of the latest proposals.
"""
from __future__ import annotations

import io
import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .common import dataset_id
from .proposals import latest_set

BASE = ("item_id", "split", "label")
TAIL = ("tag", "status", "cluster", "model", "curator", "tagged_at")
STATUSES = ("accepted", "manual", "proposed", "rejected", "untagged")

# One catalog row per item: the rule for status, cluster and model lives here once; ``catalog`` and
# the paged reads below select from it. Parameters: the latest proposal set's id, the dataset's id.
_ROWS = """
    SELECT i.item_id, i.split, i.label, t.tag,
           CASE WHEN t.source = 'proposal' THEN 'accepted'
                WHEN t.source = 'manual' THEN 'manual'
                WHEN p.status IN ('proposed', 'rejected') THEN p.status
                ELSE 'untagged' END AS status,
           CASE WHEN t.tag IS NOT NULL THEN t.cluster ELSE a.cluster END AS cluster,
           CASE WHEN t.tag IS NOT NULL THEN tm.name WHEN a.cluster IS NOT NULL THEN pm.name END AS model,
           t.curator, t.tagged_at, i.row_idx, s.position, i.meta
    FROM items i
    JOIN splits s ON s.dataset_id = i.dataset_id AND s.split = i.split
    LEFT JOIN tags t ON t.dataset_id = i.dataset_id AND t.item_id = i.item_id
    LEFT JOIN models tm ON tm.id = t.model_id
    LEFT JOIN assignments a ON a.set_id = ? AND a.item_id = i.item_id
    LEFT JOIN proposals p ON p.set_id = a.set_id AND p.cluster = a.cluster
    LEFT JOIN proposal_sets ps ON ps.id = a.set_id
    LEFT JOIN models pm ON pm.id = ps.model_id
    WHERE i.dataset_id = ?"""


def _row_params(con: duckdb.DuckDBPyConnection, dataset: str) -> list:
    ds_id = dataset_id(con, dataset)
    latest = latest_set(con, ds_id, None)
    return [-1 if latest is None else int(latest[0]), ds_id]


def catalog(con: duckdb.DuckDBPyConnection, dataset: str, ids: Sequence[str] | None = None) -> pd.DataFrame:
    """The whole catalog, or with ``ids`` only those items, in that order (unknown ids are left out).

    This is the export's reader (exact dtypes from the split's stored metadata table); pages show a
    page at a time with ``catalog_page``/``catalog_rows``. Why the ``ids`` form: a page that shows a
    few hundred items should not join every row of a dataset on every rerun.
    """
    params = _row_params(con, dataset)
    ds_id = params[1]
    wanted = [] if ids is None else list(dict.fromkeys(str(i) for i in ids))
    where = "" if ids is None else " AND item_id IN (SELECT unnest(?::VARCHAR[]))"
    df = con.execute(
        f"SELECT {', '.join(BASE + TAIL)}, row_idx FROM ({_ROWS}) WHERE true{where} ORDER BY position, row_idx",
        params + ([wanted] if ids is not None else []),
    ).df()
    df["cluster"] = df["cluster"].astype("Int64")
    metas = split_meta(con, ds_id, df["split"].unique().tolist())
    parts = []
    for split, rows in df.groupby("split", sort=False):
        m = metas.get(split)
        parts.append(pd.DataFrame(index=rows.index) if m is None else m.iloc[rows["row_idx"].to_numpy()].set_axis(rows.index))
    meta = pd.concat(parts) if parts else pd.DataFrame(index=df.index)
    reserved = set(BASE) | set(TAIL)
    meta = meta.rename(columns={c: f"meta_{c}" for c in meta.columns if c in reserved}).reindex(df.index)
    out = pd.concat([df[list(BASE)], meta, df[list(TAIL)]], axis=1)
    if ids is not None:
        found = set(out["item_id"].tolist())
        out = out.set_index("item_id").reindex([i for i in wanted if i in found]).reset_index()
    return out


# A split's metadata is written once, when its dataset is registered, and never changed; dataset ids
# come from a sequence and are never reused. Decoding the Parquet blob costs tens of milliseconds per
# split on the demo, on every Tags-page rerun, so decoded tables are kept, keyed by what identifies
# the blob (id, registration time and size: a different store file cannot plausibly match all three).
_META_CACHE: OrderedDict[tuple, pd.DataFrame | None] = OrderedDict()
_META_CACHE_SIZE = 16
_META_LOCK = threading.Lock()  # the dashboard's sessions read from several threads


def split_meta(con: duckdb.DuckDBPyConnection, ds_id: int, splits: Sequence[str]) -> dict[str, pd.DataFrame | None]:
    """The metadata tables of the given splits (None where a split has none), decoded once per process."""
    if not splits:
        return {}
    keys = con.execute(
        """SELECT s.split, d.created_at, octet_length(s.meta) FROM splits s JOIN datasets d ON d.id = s.dataset_id
           WHERE s.dataset_id = ? AND s.split IN (SELECT unnest(?::VARCHAR[]))""", [ds_id, list(splits)]).fetchall()
    out: dict[str, pd.DataFrame | None] = {}
    for split, created, size in keys:
        key = (ds_id, split, created, size)
        with _META_LOCK:
            hit = key in _META_CACHE
            if hit:
                _META_CACHE.move_to_end(key)
                out[split] = _META_CACHE[key]
        if hit:
            continue
        blob = con.execute("SELECT meta FROM splits WHERE dataset_id = ? AND split = ?", [ds_id, split]).fetchone()[0]
        table = None if blob is None else pq.read_table(io.BytesIO(blob)).to_pandas()
        with _META_LOCK:
            _META_CACHE[key] = out[split] = table
            while len(_META_CACHE) > _META_CACHE_SIZE:
                _META_CACHE.popitem(last=False)
    return out


# -- paged reads for the pages --------------------------------------------------------------------
@dataclass(frozen=True)
class CatalogFilter:
    """What the Catalog page filters by; an empty field matches every item.

    ``text``: a case-insensitive substring of the id, split, label, tag, status, model, curator or any
    metadata value (numbers in the metadata match as their JSON text)."""

    tags: tuple[str, ...] = ()
    untagged: bool = False
    statuses: tuple[str, ...] = ()
    curators: tuple[str, ...] = ()
    splits: tuple[str, ...] = ()
    text: str = ""


def _where(flt: CatalogFilter) -> tuple[str, list]:
    """The SQL condition (over ``_ROWS``' columns) and its parameters: every filter runs in DuckDB, so
    a page of a million-item catalog never brings the other rows into Python."""
    parts, params = ["true"], []
    if flt.tags or flt.untagged:
        parts.append("(list_contains(?::VARCHAR[], tag)" + (" OR tag IS NULL)" if flt.untagged else ")"))
        params.append(list(flt.tags))
    for col, values in (("status", flt.statuses), ("curator", flt.curators), ("split", flt.splits)):
        if values:
            parts.append(f"list_contains(?::VARCHAR[], {col})")
            params.append(list(values))
    needle = (flt.text or "").strip().lower()
    if needle:
        # the metadata's values joined by a unit separator (so a match cannot span two values): 1.1 s
        # over 1M items here, where a json_each per item took 9 s
        fields = " || chr(31) || ".join(f"coalesce({c}, '')" for c in ("item_id", "split", "label", "tag", "status",
                                                                          "model", "curator"))
        parts.append(f"contains(lower({fields} || chr(31) || "
                     "coalesce(array_to_string(json_extract_string(meta, '$.*'), chr(31)), '')), ?)")
        params.append(needle)
    return " AND ".join(parts), params


def _with_meta(df: pd.DataFrame) -> pd.DataFrame:
    """A page of rows with its items' metadata (the ``items.meta`` JSON) as columns, named as in
    ``catalog`` (a metadata column named like a catalog column gets a ``meta_`` prefix)."""
    records = [json.loads(m) if isinstance(m, str) else {} for m in df["meta"]]
    meta = pd.DataFrame.from_records(records, index=df.index) if records else pd.DataFrame(index=df.index)
    reserved = set(BASE) | set(TAIL)
    meta = meta.rename(columns={c: f"meta_{c}" for c in meta.columns if c in reserved})
    out = pd.concat([df[list(BASE)], meta, df[list(TAIL)]], axis=1)
    out["cluster"] = out["cluster"].astype("Int64")
    return out.reset_index(drop=True)


def catalog_page(con: duckdb.DuckDBPyConnection, dataset: str, flt: CatalogFilter, offset: int = 0,
                 limit: int = 100) -> tuple[pd.DataFrame, int]:
    """(rows ``offset`` .. ``offset + limit`` of the filtered catalog in catalog order, how many match)."""
    params = _row_params(con, dataset)
    where, wparams = _where(flt)
    total = int(con.execute(f"SELECT count(*) FROM ({_ROWS}) WHERE {where}", params + wparams).fetchone()[0])
    df = con.execute(
        f"SELECT {', '.join(BASE + TAIL)}, meta FROM ({_ROWS}) WHERE {where} ORDER BY position, row_idx LIMIT ? OFFSET ?",
        params + wparams + [max(0, int(limit)), max(0, int(offset))],
    ).df()
    return _with_meta(df), total


def catalog_ids(con: duckdb.DuckDBPyConnection, dataset: str, flt: CatalogFilter) -> list[str]:
    """Every item id that matches, in catalog order (what a filtered download holds)."""
    params = _row_params(con, dataset)
    where, wparams = _where(flt)
    return [r[0] for r in con.execute(
        f"SELECT item_id FROM ({_ROWS}) WHERE {where} ORDER BY position, row_idx", params + wparams).fetchall()]


def catalog_rows(con: duckdb.DuckDBPyConnection, dataset: str, ids: Sequence[str]) -> pd.DataFrame:
    """The catalog rows of ``ids`` in that order (unknown ids left out), metadata from each item's own
    JSON: unlike ``catalog(ids)`` it never decodes a split's whole metadata table, which at a million
    items took seconds on a page's first run."""
    wanted = list(dict.fromkeys(str(i) for i in ids))
    params = _row_params(con, dataset)
    df = con.execute(
        f"SELECT {', '.join(BASE + TAIL)}, meta FROM ({_ROWS} AND i.item_id IN (SELECT unnest(?::VARCHAR[]))) AS r",
        params + [wanted],
    ).df()
    order = pd.Series(range(len(wanted)), index=wanted)
    return _with_meta(df.iloc[order.reindex(df["item_id"]).to_numpy().argsort(kind="stable")])


def catalog_choices(con: duckdb.DuckDBPyConnection, dataset: str) -> dict:
    """What the filters offer and the headline counts: items, tagged, tags, curators, splits."""
    ds_id = dataset_id(con, dataset)
    items = int(con.execute("SELECT coalesce(sum(n_items), 0) FROM splits WHERE dataset_id = ?", [ds_id]).fetchone()[0])
    tagged = int(con.execute("SELECT count(*) FROM tags WHERE dataset_id = ?", [ds_id]).fetchone()[0])

    def col(sql: str) -> list[str]:
        return [str(r[0]) for r in con.execute(sql, [ds_id]).fetchall()]
    return {"items": items, "tagged": tagged,
            "tags": col("SELECT DISTINCT tag FROM tags WHERE dataset_id = ? ORDER BY tag"),
            "curators": col("SELECT DISTINCT curator FROM tags WHERE dataset_id = ? ORDER BY curator"),
            "splits": col("SELECT split FROM splits WHERE dataset_id = ? ORDER BY split"),
            "statuses": list(STATUSES)}


_FLOAT_CACHE: dict[tuple, pd.DataFrame] = {}


def float_meta(con: duckdb.DuckDBPyConnection, dataset: str) -> pd.DataFrame:
    """The float metadata columns of every split (named as in ``catalog``), nothing else: what
    ``store.export.json_loss`` needs to say, before a download, how many infinite values JSON turns
    into null. At 1M items that is 8 MB a column instead of the whole metadata table."""
    ds_id = dataset_id(con, dataset)
    keys = con.execute(
        """SELECT s.split, d.created_at, octet_length(s.meta) FROM splits s JOIN datasets d ON d.id = s.dataset_id
           WHERE s.dataset_id = ? AND s.meta IS NOT NULL ORDER BY s.position""", [ds_id]).fetchall()
    parts = []
    reserved = set(BASE) | set(TAIL)
    for split, created, size in keys:
        key = (ds_id, split, created, size)
        with _META_LOCK:
            part = _FLOAT_CACHE.get(key)
        if part is None:
            blob = con.execute("SELECT meta FROM splits WHERE dataset_id = ? AND split = ?", [ds_id, split]).fetchone()[0]
            pf = pq.ParquetFile(io.BytesIO(blob))
            cols = [f.name for f in pf.schema_arrow if pa.types.is_floating(f.type)]
            part = pf.read(columns=cols).to_pandas() if cols else pd.DataFrame(index=range(pf.metadata.num_rows))
            part = part.rename(columns={c: f"meta_{c}" for c in part.columns if c in reserved})
            with _META_LOCK:
                _FLOAT_CACHE[key] = part
                while len(_FLOAT_CACHE) > _META_CACHE_SIZE:
                    _FLOAT_CACHE.pop(next(iter(_FLOAT_CACHE)))
        parts.append(part)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
