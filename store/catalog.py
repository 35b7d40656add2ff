"""The tagged catalog: one row per item with its label, metadata, tag and where the tag came from.

``status`` tells a curator what is left to do: 'accepted' (tagged from a proposal), 'manual' (tagged
by hand), 'proposed' (in a pending cluster of the latest proposals), 'rejected' (in a rejected
cluster) or 'untagged'. ``cluster``/``model`` are those of the tag, else of the latest proposals.
"""
from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Sequence

import duckdb
import pandas as pd
import pyarrow.parquet as pq

from .common import dataset_id
from .proposals import latest_set

BASE = ("item_id", "split", "label")
TAIL = ("tag", "status", "cluster", "model", "curator", "tagged_at")


def catalog(con: duckdb.DuckDBPyConnection, dataset: str, ids: Sequence[str] | None = None) -> pd.DataFrame:
    """The whole catalog, or with ``ids`` only those items, in that order (unknown ids are left out).

    Why the ``ids`` form: a page that shows a few hundred items (the Tags page's representatives and
    one proposal's members) should not join all 29,000 rows of a demo-sized dataset on every rerun;
    a tag decision's round trip is measured against 0.5 s.
    """
    ds_id = dataset_id(con, dataset)
    latest = latest_set(con, ds_id, None)
    set_id = -1 if latest is None else int(latest[0])
    wanted = [] if ids is None else list(dict.fromkeys(str(i) for i in ids))
    where = "" if ids is None else " AND i.item_id IN (SELECT unnest(?::VARCHAR[]))"
    df = con.execute(
        f"""SELECT i.item_id, i.split, i.label, t.tag,
                  CASE WHEN t.source = 'proposal' THEN 'accepted'
                       WHEN t.source = 'manual' THEN 'manual'
                       WHEN p.status IN ('proposed', 'rejected') THEN p.status
                       ELSE 'untagged' END AS status,
                  CASE WHEN t.tag IS NOT NULL THEN t.cluster ELSE a.cluster END AS cluster,
                  CASE WHEN t.tag IS NOT NULL THEN tm.name WHEN a.cluster IS NOT NULL THEN pm.name END AS model,
                  t.curator, t.tagged_at, i.row_idx
           FROM items i
           JOIN splits s ON s.dataset_id = i.dataset_id AND s.split = i.split
           LEFT JOIN tags t ON t.dataset_id = i.dataset_id AND t.item_id = i.item_id
           LEFT JOIN models tm ON tm.id = t.model_id
           LEFT JOIN assignments a ON a.set_id = ? AND a.item_id = i.item_id
           LEFT JOIN proposals p ON p.set_id = a.set_id AND p.cluster = a.cluster
           LEFT JOIN proposal_sets ps ON ps.id = a.set_id
           LEFT JOIN models pm ON pm.id = ps.model_id
           WHERE i.dataset_id = ?{where}
           ORDER BY s.position, i.row_idx""",
        [set_id, ds_id] + ([wanted] if ids is not None else []),
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
