"""Tag decisions (accept, reject, rename, merge, set one item, undo) and their audit trail.

Each decision is one transaction that changes ``tags``/``proposals`` and appends one ``tag_events``
row whose ``before`` holds the exact prior state of every row it touched: the item ids it looked at
(``keys``), their tag rows as they were (absent = untagged) and the proposal rows' status and tag.
Undo restores that snapshot, so it is exact, and is itself an event. Undo works as a stack per dataset
(the newest decision not yet undone): undoing out of order could clobber a later decision on the
same items, so it is not offered.
"""
from __future__ import annotations

import datetime as dt

import duckdb
import pandas as pd
import pyarrow as pa

from mmae_core.errors import NotFoundError, StoreError

from .common import check_name, dataset_id, dumps, loads, one, registered, to_utc_naive, utcnow
from .faults import pause_point
from .proposals import require_latest_set

_TAG_SCHEMA = pa.schema([
    ("item_id", pa.string()), ("tag", pa.string()), ("source", pa.string()), ("model_id", pa.int32()),
    ("set_id", pa.int32()), ("cluster", pa.int32()), ("curator", pa.string()), ("tagged_at", pa.timestamp("us")),
])


# -- snapshots ------------------------------------------------------------------------------
def keys_block(keys: list[str]) -> pa.Table:
    return pa.table({"item_id": pa.array(keys, type=pa.string())})


def tag_rows(con: duckdb.DuckDBPyConnection, ds_id: int) -> list[dict]:
    """Tag rows of the items in the registered ``_keys`` table, JSON-ready."""
    rows = con.execute(
        "SELECT item_id, tag, source, model_id, set_id, cluster, curator, tagged_at FROM tags "
        "WHERE dataset_id = ? AND item_id IN (SELECT item_id FROM _keys) ORDER BY item_id",
        [ds_id],
    ).fetchall()
    names = _TAG_SCHEMA.names
    out = []
    for r in rows:
        d = dict(zip(names, r))
        d["tagged_at"] = d["tagged_at"].isoformat()
        out.append(d)
    return out


def _put(con: duckdb.DuckDBPyConnection, ds_id: int, rows: list[dict]) -> None:
    if not rows:
        return
    cols = {n: [r[n] for r in rows] for n in _TAG_SCHEMA.names}
    cols["tagged_at"] = [dt.datetime.fromisoformat(t) for t in cols["tagged_at"]]
    block = pa.table(cols, schema=_TAG_SCHEMA)
    with registered(con, "_tag_rows", block):
        con.execute(
            "INSERT INTO tags SELECT ?, item_id, tag, source, model_id, set_id, cluster, curator, tagged_at FROM _tag_rows",
            [ds_id],
        )


def delete_keys(con: duckdb.DuckDBPyConnection, ds_id: int) -> None:
    con.execute("DELETE FROM tags WHERE dataset_id = ? AND item_id IN (SELECT item_id FROM _keys)", [ds_id])


def proposal_state(con: duckdb.DuckDBPyConnection, pairs: list[tuple[int, int]]) -> list[list]:
    out = []
    for set_id, cluster in pairs:
        status, tag = one(con, 
            "SELECT status, tag FROM proposals WHERE set_id = ? AND cluster = ?", [set_id, cluster]
        )
        out.append([int(set_id), int(cluster), status, tag])
    return out


def event(con: duckdb.DuckDBPyConnection, ds_id: int, action: str, curator: str, payload: dict, before: dict,
           undoes: int | None = None) -> int:
    row = one(
        con,
        "INSERT INTO tag_events VALUES (nextval('tag_event_ids'), ?, ?, ?, ?, ?, ?, false, ?) RETURNING id",
        [ds_id, action, curator, utcnow(), dumps(payload), dumps(before), undoes],
    )
    pause_point("decision")  # crash tests: killed with the decision written, not committed
    return int(row[0])


def tag_exists(con: duckdb.DuckDBPyConnection, ds_id: int, tag: str) -> bool:
    if one(con, "SELECT 1 FROM tags WHERE dataset_id = ? AND tag = ? LIMIT 1", [ds_id, tag]):
        return True
    return one(con, 
        "SELECT 1 FROM proposals WHERE tag = ? AND set_id IN (SELECT id FROM proposal_sets WHERE dataset_id = ?) LIMIT 1",
        [tag, ds_id],
    ) is not None


def tag_items(con: duckdb.DuckDBPyConnection, ds_id: int, tag: str) -> int:
    return int(con.execute("SELECT count(*) FROM tags WHERE dataset_id = ? AND tag = ?", [ds_id, tag]).fetchone()[0])


def proposal(con: duckdb.DuckDBPyConnection, set_id: int, cluster: int, model: str) -> tuple:
    row = one(con, "SELECT name, status, tag FROM proposals WHERE set_id = ? AND cluster = ?", [set_id, cluster])
    if row is None:
        lo, hi = one(con, "SELECT min(cluster), max(cluster) FROM proposals WHERE set_id = ?", [set_id])
        raise NotFoundError(
            f"Cluster {cluster} is not in the latest proposals of model '{model}' (they run from {lo} to {hi}); pick one of those."
        )
    return row


# -- hand-set tags under a bulk accept ------------------------------------------------------------
KEEP_MANUAL, REPLACE_MANUAL = "keep", "replace"
MANUAL_CHOICES = (KEEP_MANUAL, REPLACE_MANUAL)


def check_manual(manual: str) -> str:
    """``keep`` (the default everywhere) or ``replace``: what an accept does to items tagged by hand.

    Why a choice, and keep by default: accepting a proposal once overwrote 40 tags curators had set
    by hand, without a word; a curator's decision is never undone by a bulk action without asking.
    """
    if manual not in MANUAL_CHOICES:
        raise StoreError(f"'{manual}' is not a choice for hand-set tags; use 'keep' or 'replace'.")
    return manual


def accept_keys(con: duckdb.DuckDBPyConnection, ds_id: int, set_id: int, clusters: list[int],
                manual: str) -> tuple[list[str], int]:
    """(the items an accept of ``clusters`` tags, in id order; how many hand-tagged ones it keeps as they are).

    With ``replace`` nothing is kept. The kept items are left out of the decision altogether (its
    ``before`` snapshot too), so an undo of the accept does not touch them either. One query in
    DuckDB: a 10,000-item cluster is not walked item by item in Python.
    """
    replace = check_manual(manual) == REPLACE_MANUAL
    rows = con.execute(
        "SELECT a.item_id, t.item_id IS NOT NULL AS by_hand FROM assignments a "
        "LEFT JOIN tags t ON t.dataset_id = ? AND t.item_id = a.item_id AND t.source = 'manual' "
        "WHERE a.set_id = ? AND list_contains(?::INTEGER[], a.cluster) ORDER BY a.item_id",
        [ds_id, set_id, [int(c) for c in clusters]],
    ).fetchnumpy()
    ids, by_hand = rows["item_id"], rows["by_hand"].astype(bool)
    if replace:
        return ids.tolist(), 0
    return ids[~by_hand].tolist(), int(by_hand.sum())


def manual_note(manual: str, kept: int, replaced: int) -> str:
    """The audit summary's words for what happened to hand-set tags ('' when there were none)."""
    if manual == KEEP_MANUAL and kept:
        return f"; kept {kept} hand-set tag{'s' if kept != 1 else ''}"
    if manual == REPLACE_MANUAL and replaced:
        return f"; replaced {replaced} hand-set tag{'s' if replaced != 1 else ''}"
    return ""


# -- decisions ------------------------------------------------------------------------------
def accept(con: duckdb.DuckDBPyConnection, dataset: str, model: str, cluster: int, curator: str,
           name: str | None = None, manual: str = KEEP_MANUAL) -> dict:
    """Tag every item of the cluster; items tagged by hand keep their tag unless ``manual='replace'``."""
    curator = check_name(curator, "curator name")
    manual = check_manual(manual)
    ds_id, mid, set_id = require_latest_set(con, dataset, model)
    cluster = int(cluster)
    proposed, _, current = proposal(con, set_id, cluster, model)
    tag = check_name(proposed if name is None else name, "tag name")
    if tag not in (proposed, current) and tag_exists(con, ds_id, tag):
        raise StoreError(
            f"A tag named '{tag}' already exists ({tag_items(con, ds_id, tag)} items); choose another name, "
            "or accept under the proposed name and merge the two tags afterwards."
        )
    keys, kept = accept_keys(con, ds_id, set_id, [cluster], manual)
    before = {"keys": keys, "proposals": proposal_state(con, [(set_id, cluster)])}
    with registered(con, "_keys", keys_block(keys)):
        before["tags"] = tag_rows(con, ds_id)
        replaced = sum(r["source"] == "manual" for r in before["tags"])
        delete_keys(con, ds_id)
        con.execute(
            "INSERT INTO tags SELECT ?, item_id, ?, 'proposal', ?, set_id, cluster, ?, ? FROM assignments "
            "WHERE set_id = ? AND cluster = ? AND item_id IN (SELECT item_id FROM _keys)",
            [ds_id, tag, mid, curator, utcnow(), set_id, cluster],
        )
    con.execute("UPDATE proposals SET status = 'accepted', tag = ? WHERE set_id = ? AND cluster = ?", [tag, set_id, cluster])
    payload = {"summary": f"accepted cluster {cluster} of model '{model}' as '{tag}' ({len(keys)} items"
                          f"{manual_note(manual, kept, replaced)})",
               "tags": [tag], "model": model, "set_id": set_id, "cluster": cluster, "items": len(keys),
               "manual": manual, "kept_manual": kept, "replaced_manual": replaced}
    eid = event(con, ds_id, "accept", curator, payload, before)
    return {"event": eid, "tag": tag, "items": len(keys), "summary": payload["summary"], "manual": manual,
            "kept_manual": kept, "replaced_manual": replaced}


def reject(con: duckdb.DuckDBPyConnection, dataset: str, model: str, cluster: int, curator: str) -> dict:
    curator = check_name(curator, "curator name")
    ds_id, _, set_id = require_latest_set(con, dataset, model)
    cluster = int(cluster)
    _, _, old_tag = proposal(con, set_id, cluster, model)
    # Tags this very proposal gave are withdrawn; manual tags and tags from other sets stay.
    keys = [r[0] for r in con.execute(
        "SELECT item_id FROM tags WHERE dataset_id = ? AND source = 'proposal' AND set_id = ? AND cluster = ? ORDER BY item_id",
        [ds_id, set_id, cluster],
    ).fetchall()]
    before = {"keys": keys, "proposals": proposal_state(con, [(set_id, cluster)])}
    with registered(con, "_keys", keys_block(keys)):
        before["tags"] = tag_rows(con, ds_id)
        delete_keys(con, ds_id)
    con.execute("UPDATE proposals SET status = 'rejected', tag = NULL WHERE set_id = ? AND cluster = ?", [set_id, cluster])
    payload = {"summary": f"rejected cluster {cluster} of model '{model}'" + (f" (untagged {len(keys)} items)" if keys else ""),
               "tags": [old_tag] if old_tag else [], "model": model, "set_id": set_id, "cluster": cluster,
               "items": len(keys)}
    eid = event(con, ds_id, "reject", curator, payload, before)
    return {"event": eid, "items": len(keys), "summary": payload["summary"]}


def _relabel(con: duckdb.DuckDBPyConnection, ds_id: int, sources: list[str], into: str) -> dict:
    """Point every tag row and proposal named in ``sources`` at ``into``; returns the before snapshot."""
    keys = [r[0] for r in con.execute(
        "SELECT item_id FROM tags WHERE dataset_id = ? AND list_contains(?::VARCHAR[], tag) ORDER BY item_id",
        [ds_id, sources],
    ).fetchall()]
    pairs = [(r[0], r[1]) for r in con.execute(
        "SELECT set_id, cluster FROM proposals WHERE list_contains(?::VARCHAR[], tag) "
        "AND set_id IN (SELECT id FROM proposal_sets WHERE dataset_id = ?) ORDER BY set_id, cluster",
        [sources, ds_id],
    ).fetchall()]
    before = {"keys": keys, "proposals": proposal_state(con, pairs)}
    with registered(con, "_keys", keys_block(keys)):
        before["tags"] = tag_rows(con, ds_id)
    con.execute("UPDATE tags SET tag = ? WHERE dataset_id = ? AND list_contains(?::VARCHAR[], tag)", [into, ds_id, sources])
    con.execute(
        "UPDATE proposals SET tag = ? WHERE list_contains(?::VARCHAR[], tag) "
        "AND set_id IN (SELECT id FROM proposal_sets WHERE dataset_id = ?)",
        [into, sources, ds_id],
    )
    return before


def _existing_tag(con: duckdb.DuckDBPyConnection, ds_id: int, dataset: str, tag: object) -> str:
    if not isinstance(tag, str) or not tag_exists(con, ds_id, tag):
        raise NotFoundError(f"Dataset '{dataset}' has no tag named '{tag}'; check the spelling in the catalog.")
    return tag


def rename(con: duckdb.DuckDBPyConnection, dataset: str, old: str, new: str, curator: str) -> dict:
    curator = check_name(curator, "curator name")
    ds_id = dataset_id(con, dataset)
    new = check_name(new, "new tag name")
    old = _existing_tag(con, ds_id, dataset, old)
    if old == new:
        raise StoreError(f"The tag is already named '{new}'; give a different new name.")
    if tag_exists(con, ds_id, new):  # renaming onto another tag would merge the two without saying so
        raise StoreError(
            f"A tag named '{new}' already exists ({tag_items(con, ds_id, new)} items); choose another name, "
            f"or merge '{old}' into it (Merge on the Tags page, or `tag merge`)."
        )
    before = _relabel(con, ds_id, [old], new)
    payload = {"summary": f"renamed '{old}' to '{new}' ({len(before['keys'])} items)", "tags": [old, new],
               "old": old, "new": new, "items": len(before["keys"])}
    eid = event(con, ds_id, "rename", curator, payload, before)
    return {"event": eid, "items": len(before["keys"]), "summary": payload["summary"]}


def merge(con: duckdb.DuckDBPyConnection, dataset: str, tags: list[str], into: str, curator: str) -> dict:
    curator = check_name(curator, "curator name")
    ds_id = dataset_id(con, dataset)
    into = check_name(into, "merged tag name")
    if isinstance(tags, str) or not tags:
        raise StoreError("No tags were given to merge; name at least one tag to merge into another.")
    sources = list(dict.fromkeys(_existing_tag(con, ds_id, dataset, t) for t in tags))
    if sources == [into]:
        raise StoreError(f"Merging '{into}' into itself changes nothing; name other tags to merge into it.")
    before = _relabel(con, ds_id, sources, into)
    shown = ", ".join(f"'{t}'" for t in sources)
    payload = {"summary": f"merged {shown} into '{into}' ({len(before['keys'])} items)",
               "tags": list(dict.fromkeys([*sources, into])), "sources": sources, "into": into,
               "items": len(before["keys"])}
    eid = event(con, ds_id, "merge", curator, payload, before)
    return {"event": eid, "items": len(before["keys"]), "summary": payload["summary"]}


def set_item(con: duckdb.DuckDBPyConnection, dataset: str, item_id: str, tag: str | None, curator: str,
             existing: bool = False) -> dict:
    curator = check_name(curator, "curator name")
    ds_id = dataset_id(con, dataset)
    tag = None if tag is None else check_name(tag, "tag name")
    if existing and tag is not None:
        require_existing(con, ds_id, dataset, tag)
    if one(con, "SELECT 1 FROM items WHERE dataset_id = ? AND item_id = ?", [ds_id, str(item_id)]) is None:
        raise NotFoundError(f"Dataset '{dataset}' has no item '{item_id}'; check the id in the catalog.")
    item_id = str(item_id)
    before = {"keys": [item_id], "proposals": []}
    with registered(con, "_keys", keys_block([item_id])):
        before["tags"] = tag_rows(con, ds_id)
        delete_keys(con, ds_id)
    old = before["tags"][0]["tag"] if before["tags"] else None
    if tag is not None:
        con.execute(
            "INSERT INTO tags VALUES (?, ?, ?, 'manual', NULL, NULL, NULL, ?, ?)", [ds_id, item_id, tag, curator, utcnow()]
        )
    summary = f"tagged item '{item_id}' as '{tag}'" if tag is not None else f"removed the tag of item '{item_id}'"
    if old is not None and tag is not None and old != tag:
        summary += f" (was '{old}')"
    payload = {"summary": summary, "tags": [t for t in dict.fromkeys([old, tag]) if t is not None],
               "item_id": item_id, "tag": tag, "previous": old}
    eid = event(con, ds_id, "set_item", curator, payload, before)
    return {"event": eid, "items": 1, "summary": summary}


def require_existing(con: duckdb.DuckDBPyConnection, ds_id: int, dataset: str, tag: str) -> None:
    """Refuse a tag that was picked from a list of existing tags and is gone now: checked inside the
    decision's transaction, so another curator's rename or merge between the pick and the click
    cannot make the picked (stale) name a new tag again."""
    if not tag_exists(con, ds_id, tag):
        raise NotFoundError(f"Tag '{tag}' no longer exists in dataset '{dataset}' (another curator may have renamed "
                            "or merged it); pick the tag again.")


def undo(con: duckdb.DuckDBPyConnection, dataset: str, curator: str) -> dict:
    curator = check_name(curator, "curator name")
    ds_id = dataset_id(con, dataset)
    target = one(con, 
        "SELECT id, action, payload, before FROM tag_events WHERE dataset_id = ? AND action <> 'undo' AND NOT undone "
        "ORDER BY id DESC LIMIT 1",
        [ds_id],
    )
    if target is None:
        raise StoreError(f"There is nothing to undo in dataset '{dataset}'; no tag decision is left that is not already undone.")
    tid, action, payload, snap = target[0], target[1], loads(target[2], {}), loads(target[3], {})
    keys = list(snap.get("keys", []))
    pairs = [(p[0], p[1]) for p in snap.get("proposals", [])]
    now = {"keys": keys, "proposals": proposal_state(con, pairs)}
    with registered(con, "_keys", keys_block(keys)):
        now["tags"] = tag_rows(con, ds_id)
        delete_keys(con, ds_id)
    _put(con, ds_id, snap.get("tags", []))
    for set_id, cluster, status, tag in snap.get("proposals", []):
        con.execute("UPDATE proposals SET status = ?, tag = ? WHERE set_id = ? AND cluster = ?", [status, tag, set_id, cluster])
    con.execute("UPDATE tag_events SET undone = true WHERE id = ?", [tid])
    summary = f"undid #{tid}: {payload.get('summary', action)}"
    eid = event(con, ds_id, "undo", curator, {"summary": summary, "tags": payload.get("tags", []), "undid": tid,
                                              "action": action}, now, undoes=tid)
    return {"event": eid, "undid": tid, "action": action, "tags": payload.get("tags", []), "summary": summary}


def history(con: duckdb.DuckDBPyConnection, dataset: str, curator: str | None = None, tag: str | None = None,
            since: dt.datetime | str | None = None) -> pd.DataFrame:
    ds_id = dataset_id(con, dataset)
    where, params = ["dataset_id = ?"], [ds_id]
    if curator is not None:
        where.append("curator = ?")
        params.append(curator)
    if tag is not None:
        where.append("list_contains(from_json(json_extract(payload, '$.tags'), '[\"VARCHAR\"]'), ?)")
        params.append(tag)
    if since is not None:
        where.append("event_at >= ?")
        params.append(to_utc_naive(since))
    df = con.execute(
        "SELECT id, event_at AS at, action, curator, json_extract_string(payload, '$.summary') AS summary, "
        "array_to_string(from_json(json_extract(payload, '$.tags'), '[\"VARCHAR\"]'), ', ') AS tags, undone, undoes "
        f"FROM tag_events WHERE {' AND '.join(where)} ORDER BY id DESC",
        params,
    ).df()
    df["undoes"] = df["undoes"].astype("Int64")
    return df


def tag_counts(con: duckdb.DuckDBPyConnection, dataset: str) -> pd.DataFrame:
    """Tags in use with their item counts (for the Tags page's merge/rename pickers)."""
    ds_id = dataset_id(con, dataset)
    return con.execute(
        "SELECT tag, count(*) AS items, count(*) FILTER (WHERE source = 'manual') AS manual, max(tagged_at) AS last_tagged "
        "FROM tags WHERE dataset_id = ? GROUP BY tag ORDER BY items DESC, tag",
        [ds_id],
    ).df()
