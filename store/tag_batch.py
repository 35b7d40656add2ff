"""Tag decisions on many items or clusters at once.

A curator who box-selects 300 points on the map, or accepts every proposal above a purity, makes
*one* decision: it must be one transaction, one line in the audit trail and one step of undo. These
functions build on ``store.tags``' snapshot machinery (the ``before`` of an event holds the exact
prior rows), so ``undo`` takes a batch back exactly, like any single decision.

Renaming a tag onto another tag's name, or accepting a cluster under it, would quietly merge two
tags: ``store.tags.rename`` and ``accept`` refuse that themselves, for the CLI and the dashboard
alike, in the same transaction as the change.
"""
from __future__ import annotations

from collections.abc import Iterable

import duckdb

from mmae_core.errors import NotFoundError, StoreError

from . import tags as _tags
from .common import check_name, dataset_id, one, registered, utcnow
from .proposals import require_latest_set

_SHOWN = 6


def _shown(names: list[str]) -> str:
    text = ", ".join(f"'{n}'" for n in names[:_SHOWN])
    return text + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def set_items(con: duckdb.DuckDBPyConnection, dataset: str, item_ids: Iterable[object], tag: str | None,
              curator: str, existing: bool = False) -> dict:
    """Tag every item in ``item_ids`` as ``tag`` by hand (``None`` removes their tags): one event.
    ``existing``: the tag was picked from the existing ones and must still exist."""
    curator = check_name(curator, "curator name")
    ds_id = dataset_id(con, dataset)
    tag = None if tag is None else check_name(tag, "tag name")
    if existing and tag is not None:
        _tags.require_existing(con, ds_id, dataset, tag)
    ids = list(dict.fromkeys(str(i) for i in item_ids))
    if not ids:
        raise StoreError("No items are selected; select at least one item to tag.")
    with registered(con, "_keys", _tags.keys_block(ids)):
        unknown = one(
            con,
            "SELECT min(k.item_id), count(*) FROM _keys k ANTI JOIN items i ON i.dataset_id = ? AND i.item_id = k.item_id",
            [ds_id],
        )
        if unknown[1]:
            more = f" (and {unknown[1] - 1} more)" if unknown[1] > 1 else ""
            raise NotFoundError(f"Dataset '{dataset}' has no item '{unknown[0]}'{more}; check the ids in the catalog.")
        before = {"keys": sorted(ids), "proposals": [], "tags": _tags.tag_rows(con, ds_id)}
        _tags.delete_keys(con, ds_id)
        if tag is not None:
            con.execute(
                "INSERT INTO tags SELECT ?, item_id, ?, 'manual', NULL, NULL, NULL, ?, ? FROM _keys",
                [ds_id, tag, curator, utcnow()],
            )
    previous = sorted({r["tag"] for r in before["tags"]})
    n = len(ids)
    what = f"{n} item{'s' if n != 1 else ''}"
    summary = f"tagged {what} as '{tag}'" if tag is not None else f"removed the tags of {what}"
    if previous:
        summary += f" (previous tags: {_shown(previous)})"
    payload = {"summary": summary, "tags": list(dict.fromkeys([*previous, *([tag] if tag else [])])),
               "tag": tag, "items": n, "item_ids": ids[:50], "previous": previous}
    eid = _tags.event(con, ds_id, "set_item", curator, payload, before)
    return {"event": eid, "items": n, "tag": tag, "summary": summary}


def _chosen(con: duckdb.DuckDBPyConnection, set_id: int, model: str, clusters: Iterable[int] | None,
            min_purity: float | None) -> list[int]:
    """The clusters an accept of several proposals takes: the given ones, or every pending one whose
    purity is at least ``min_purity``; refused in a sentence when that is none."""
    if clusters is None:
        if min_purity is None:
            raise StoreError("Neither clusters nor a purity threshold were given; name the proposals to accept.")
        p = float(min_purity)
        chosen = [int(r[0]) for r in con.execute(
            "SELECT cluster FROM proposals WHERE set_id = ? AND status = 'proposed' AND purity >= ? ORDER BY cluster",
            [set_id, p],
        ).fetchall()]
        if not chosen:
            raise StoreError(
                f"No pending proposal of model '{model}' has a purity of at least {p:.2f}; lower the threshold or accept one by one."
            )
    else:
        chosen = sorted({int(c) for c in clusters})
        if not chosen:
            raise StoreError("No proposals were chosen; pick at least one proposal to accept.")
        for c in chosen:
            _tags.proposal(con, set_id, c, model)  # a sentence for an unknown cluster
    return chosen


def hand_tagged_in(con: duckdb.DuckDBPyConnection, dataset: str, model: str, clusters: Iterable[int] | None,
                   min_purity: float | None = None) -> dict:
    """How many items of these proposals already carry a tag set by hand, and which tags: what the
    page shows before an accept, so the curator can choose to keep (default) or replace them."""
    ds_id, _, set_id = require_latest_set(con, dataset, model)
    try:
        chosen = _chosen(con, set_id, model, clusters, min_purity)
    except StoreError:
        return {"items": 0, "tags": []}
    # counted in DuckDB: the page asks on every rerun, and "every proposal above a purity" can be most
    # of a million-item archive
    n, tags = one(con,
        "SELECT count(*), list_sort(list_distinct(list(t.tag))) FROM assignments a JOIN tags t "
        "ON t.dataset_id = ? AND t.item_id = a.item_id AND t.source = 'manual' "
        "WHERE a.set_id = ? AND list_contains(?::INTEGER[], a.cluster)", [ds_id, set_id, chosen])
    return {"items": int(n), "tags": list(tags or [])}


def accept_many(con: duckdb.DuckDBPyConnection, dataset: str, model: str, clusters: Iterable[int] | None,
                curator: str, min_purity: float | None = None, manual: str = _tags.KEEP_MANUAL) -> dict:
    """Accept several proposals of the model's latest set under their names: one event.

    ``clusters=None`` means every *pending* proposal whose purity is at least ``min_purity``
    (proposals without a purity, i.e. unlabelled data, never pass a purity threshold). Items tagged
    by hand keep their tag unless ``manual='replace'`` (``store.tags.accept_keys``).
    """
    curator = check_name(curator, "curator name")
    manual = _tags.check_manual(manual)
    ds_id, mid, set_id = require_latest_set(con, dataset, model)
    chosen = _chosen(con, set_id, model, clusters, min_purity)
    names = [r[0] for r in con.execute(
        "SELECT coalesce(tag, name) FROM proposals WHERE set_id = ? AND list_contains(?::INTEGER[], cluster) ORDER BY cluster",
        [set_id, chosen],
    ).fetchall()]
    keys, kept = _tags.accept_keys(con, ds_id, set_id, chosen, manual)
    before = {"keys": keys, "proposals": _tags.proposal_state(con, [(set_id, c) for c in chosen])}
    with registered(con, "_keys", _tags.keys_block(keys)):
        before["tags"] = _tags.tag_rows(con, ds_id)
        replaced = sum(r["source"] == "manual" for r in before["tags"])
        _tags.delete_keys(con, ds_id)
        con.execute(
            "INSERT INTO tags SELECT ?, a.item_id, coalesce(p.tag, p.name), 'proposal', ?, a.set_id, a.cluster, ?, ? "
            "FROM assignments a JOIN proposals p ON p.set_id = a.set_id AND p.cluster = a.cluster "
            "WHERE a.set_id = ? AND list_contains(?::INTEGER[], a.cluster) AND a.item_id IN (SELECT item_id FROM _keys)",
            [ds_id, mid, curator, utcnow(), set_id, chosen],
        )
    con.execute(
        "UPDATE proposals SET status = 'accepted', tag = coalesce(tag, name) WHERE set_id = ? AND list_contains(?::INTEGER[], cluster)",
        [set_id, chosen],
    )
    rule = f" with purity of at least {float(min_purity):.2f}" if clusters is None else ""
    summary = (f"accepted {len(chosen)} proposal{'s' if len(chosen) != 1 else ''} of model '{model}'{rule} "
               f"({len(keys)} items{_tags.manual_note(manual, kept, replaced)}): {_shown(names)}")
    payload = {"summary": summary, "tags": list(dict.fromkeys(names)), "model": model, "set_id": set_id,
               "clusters": chosen, "items": len(keys), "min_purity": min_purity, "manual": manual,
               "kept_manual": kept, "replaced_manual": replaced}
    eid = _tags.event(con, ds_id, "accept", curator, payload, before)
    return {"event": eid, "accepted": len(chosen), "clusters": chosen, "tags": names, "items": len(keys),
            "summary": summary, "manual": manual, "kept_manual": kept, "replaced_manual": replaced}
