"""The tagged catalog: one row per item with its label, metadata, tag and where the tag came from.

``status`` tells a curator what is left to do: 'accepted' (tagged from a proposal), 'manual' (tagged
by hand), 'proposed' (in a pending cluster of the latest proposals), 'rejected' (in a rejected
cluster) or 'untagged'. ``cluster``/``model`` are those of the tag, else of the latest proposals.
"""
from __future__ import annotations

import io
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
    metas: dict[str, pd.DataFrame | None] = {
        split: None if blob is None else pq.read_table(io.BytesIO(blob)).to_pandas()
        for split, blob in con.execute("SELECT split, meta FROM splits WHERE dataset_id = ? ORDER BY position", [ds_id]).fetchall()
    }
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
