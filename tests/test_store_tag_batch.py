"""Batch decisions (``store/tag_batch.py``): one transaction, one audit event, one exact undo; and the
name checks that refuse a silent merge."""
from __future__ import annotations

import pytest

from store import NotFoundError, StoreError

from testkit.data import one_sentence, store_with_proposals, table_rows


@pytest.fixture
def store(tmp_path):
    s, _ = store_with_proposals(tmp_path / "s.duckdb", k=3, linger=1.0)
    return s


def snapshot(store):
    return table_rows(store, "tags"), table_rows(store, "proposals")


def test_set_items_tags_many_items_as_one_event_and_undo_restores_them(store):
    store.set_item("toy", "tr001", "old", "bob")
    start = snapshot(store)
    out = store.set_items("toy", ["tr000", "tr001", "te003", "tr000"], "picked", "ann")
    assert out["items"] == 3 and "previous tags: 'old'" in out["summary"]
    cat = store.catalog("toy").set_index("item_id")
    assert (cat.loc[["tr000", "tr001", "te003"], "tag"] == "picked").all()
    assert set(cat.loc[["tr000", "tr001", "te003"], "status"]) == {"manual"}
    hist = store.history("toy")
    assert list(hist["action"]) == ["set_item", "set_item"] and hist["curator"].iloc[0] == "ann"
    assert len(store.history("toy", tag="old")) == 2  # the batch is found under the tag it replaced too
    store.undo("toy", "ann")
    assert snapshot(store) == start


def test_set_items_with_none_removes_the_tags(store):
    store.set_items("toy", ["tr000", "tr001"], "x", "ann")
    store.set_items("toy", ["tr000", "tr001"], None, "ann")
    assert store.catalog("toy")["tag"].isna().all()


@pytest.mark.parametrize("ids, tag, error, words", [
    (["tr000", "nope"], "x", NotFoundError, "no item 'nope'"),
    ([], "x", StoreError, "No items are selected"),
    (["tr000"], "  ", StoreError, "tag name is empty"),
])
def test_set_items_refuses_bad_input_and_changes_nothing(store, ids, tag, error, words):
    before = store.checksum()
    with pytest.raises(error) as err:
        store.set_items("toy", ids, tag, "ann")
    assert words in str(err.value) and one_sentence(str(err.value))
    assert store.checksum() == before


def test_accept_many_by_purity_is_one_event_and_one_undo(store):
    start = snapshot(store)
    out = store.accept_many("toy", "m1", None, "ann", min_purity=0.7)  # purities 0.5, 0.75, 1.0
    assert out["clusters"] == [1, 2] and out["items"] == 20 and out["tags"] == ["proposed-1", "proposed-2"]
    table, _ = store.proposals("toy", "m1")
    assert table.set_index("cluster")["status"].to_dict() == {0: "proposed", 1: "accepted", 2: "accepted"}
    cat = store.catalog("toy")
    assert set(cat.loc[cat["tag"].notna(), "tag"]) == {"proposed-1", "proposed-2"}
    assert len(store.history("toy")) == 1
    store.undo("toy", "bob")
    assert snapshot(store) == start


def test_accept_many_by_cluster_list_and_nothing_above_the_threshold(store):
    out = store.accept_many("toy", "m1", [0, 2], "ann")
    assert out["clusters"] == [0, 2]
    before = store.checksum()
    with pytest.raises(StoreError, match="No pending proposal") as err:
        store.accept_many("toy", "m1", None, "ann", min_purity=0.99)  # cluster 2 is no longer pending
    assert one_sentence(str(err.value)) and store.checksum() == before
    with pytest.raises(NotFoundError, match="Cluster 7"):
        store.accept_many("toy", "m1", [7], "ann")
    assert store.checksum() == before


def test_rename_refuses_an_existing_name(store):
    store.accept("toy", "m1", 0, "ann", name="dogs")
    store.accept("toy", "m1", 1, "ann", name="cats")
    before = store.checksum()
    with pytest.raises(StoreError) as err:
        store.rename("toy", "dogs", "cats", "ann")
    assert "already exists (10 items)" in str(err.value) and "Merge" in str(err.value) and one_sentence(str(err.value))
    assert store.checksum() == before
    store.rename("toy", "dogs", "canines", "ann")
    assert store.tag_exists("toy", "canines") and not store.tag_exists("toy", "dogs")


def test_accept_refuses_another_tags_name_but_allows_its_own(store):
    store.accept("toy", "m1", 0, "ann", name="dogs")
    before = store.checksum()
    with pytest.raises(StoreError, match="already exists"):
        store.accept("toy", "m1", 1, "ann", name="dogs")
    assert store.checksum() == before
    store.accept("toy", "m1", 0, "ann", name="dogs")  # re-accepting under its own tag is fine
    store.accept("toy", "m1", 1, "ann", name="proposed-1")  # its proposed name is fine
    store.accept("toy", "m1", 2, "ann")


def test_a_tag_picked_from_the_list_is_refused_once_another_curator_renamed_it(store):
    """The dashboard's tag picker offers the tags that existed when the page was drawn; a rename or
    merge by another curator before the click must not turn the stale name into a new tag."""
    store.accept("toy", "m1", 0, "ann", name="dogs")
    store.rename("toy", "dogs", "canines", "bob")
    before = store.checksum()
    for act in (lambda: store.set_items("toy", ["tr000", "tr001"], "dogs", "ann", existing=True),
                lambda: store.set_item("toy", "tr000", "dogs", "ann", existing=True)):
        with pytest.raises(NotFoundError) as err:
            act()
        assert "no longer exists" in str(err.value) and "pick the tag again" in str(err.value)
        assert one_sentence(str(err.value))
        assert store.checksum() == before
    store.set_items("toy", ["tr000"], "canines", "ann", existing=True)  # a tag that exists is applied
    store.set_item("toy", "tr001", "dogs", "ann")  # typed as a new name: a new tag, as before
    assert store.tag_exists("toy", "dogs") and store.tag_exists("toy", "canines")


def test_accept_keeps_hand_set_tags_by_default_and_says_so_in_the_audit_trail(store):
    store.set_items("toy", ["tr001", "tr004"], "by-hand", "bob")  # both in cluster 1
    assert store.hand_tagged_in("toy", "m1", [1]) == {"items": 2, "tags": ["by-hand"]}
    out = store.accept("toy", "m1", 1, "ann")
    assert out["manual"] == "keep" and out["kept_manual"] == 2 and out["items"] == 8
    cat = store.catalog("toy").set_index("item_id")
    assert cat.loc[["tr001", "tr004"], "tag"].tolist() == ["by-hand", "by-hand"]
    assert set(cat.loc[["tr001", "tr004"], "status"]) == {"manual"}
    assert "kept 2 hand-set tags" in store.history("toy")["summary"].iloc[0]
    store.undo("toy", "ann")  # the undo leaves the kept tags alone too
    cat = store.catalog("toy").set_index("item_id")
    assert cat.loc[["tr001", "tr004"], "tag"].tolist() == ["by-hand", "by-hand"]


def test_accept_many_replaces_hand_set_tags_only_when_asked(store):
    store.set_items("toy", ["tr002", "tr005"], "by-hand", "bob")  # cluster 2
    start = snapshot(store)
    out = store.accept_many("toy", "m1", None, "ann", min_purity=0.7, manual="replace")
    assert out["manual"] == "replace" and out["replaced_manual"] == 2 and out["items"] == 20
    cat = store.catalog("toy").set_index("item_id")
    assert cat.loc["tr002", "tag"] == "proposed-2" and cat.loc["tr002", "status"] == "accepted"
    assert "replaced 2 hand-set tags" in store.history("toy")["summary"].iloc[0]
    store.undo("toy", "ann")
    assert snapshot(store) == start
    out = store.accept_many("toy", "m1", None, "ann", min_purity=0.7)  # the default keeps them
    assert out["kept_manual"] == 2 and store.catalog("toy").set_index("item_id").loc["tr005", "tag"] == "by-hand"
    before = store.checksum()
    with pytest.raises(StoreError, match="use 'keep' or 'replace'") as err:
        store.accept("toy", "m1", 0, "ann", manual="overwrite")
    assert one_sentence(str(err.value)) and store.checksum() == before
