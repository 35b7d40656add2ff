"""Tag decisions, each with its exact undo, the audit trail and the catalog built from them."""
from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pandas as pd
import pytest

from store import NotFoundError, StoreError

from testkit.data import proposal_table, store_with_proposals, table_rows

K = 3


def tags_and_proposals(store) -> tuple[list, list]:
    return table_rows(store, "tags"), table_rows(store, "proposals")


@pytest.fixture
def setup(tmp_path):
    store, fs = store_with_proposals(tmp_path / "s.duckdb", k=K, linger=1.0)
    return store, fs


def test_accept_tags_every_item_of_the_cluster_and_undo_removes_them(setup):
    store, fs = setup
    start = tags_and_proposals(store)
    result = store.accept("toy", "m1", 1, "ann")
    assert result["tag"] == "proposed-1" and result["items"] == 10
    cat = store.catalog("toy").set_index("item_id")
    tagged = cat[cat["tag"] == "proposed-1"]
    assert sorted(tagged.index) == [f"tr{i:03d}" for i in range(1, 30, 3)]
    assert set(tagged["status"]) == {"accepted"} and set(tagged["model"]) == {"m1"} and set(tagged["curator"]) == {"ann"}
    assert set(tagged["cluster"]) == {1}
    table, _ = store.proposals("toy", "m1")
    assert table.set_index("cluster").loc[1, "status"] == "accepted"
    undone = store.undo("toy", "ann")
    assert undone["action"] == "accept" and undone["undid"] == result["event"]
    assert tags_and_proposals(store) == start
    assert store.catalog("toy")["tag"].isna().all()


def test_accept_with_a_name_and_over_earlier_tags_is_undone_exactly(setup):
    store, _ = setup
    store.set_item("toy", "tr000", "hand-made", "bob")
    store.accept("toy", "m1", 0, "ann", name="Dogs", manual="replace")  # hand-set tags stay unless asked
    start = tags_and_proposals(store)
    store.accept("toy", "m1", 0, "ann", name="Canines")  # re-accept under another name replaces the tags
    cat = store.catalog("toy").set_index("item_id")
    assert cat.loc["tr000", "tag"] == "Canines" and cat.loc["tr000", "status"] == "accepted"
    store.undo("toy", "ann")
    assert tags_and_proposals(store) == start
    store.undo("toy", "ann")
    assert store.catalog("toy").set_index("item_id").loc["tr000", "tag"] == "hand-made"


def test_reject_withdraws_only_that_proposals_tags(setup):
    store, _ = setup
    store.accept("toy", "m1", 2, "ann")
    store.set_item("toy", "tr002", "manual", "bob")  # a hand-made tag inside cluster 2 survives the reject
    start = tags_and_proposals(store)
    result = store.reject("toy", "m1", 2, "ann")
    assert result["items"] == 9
    cat = store.catalog("toy").set_index("item_id")
    assert cat.loc["tr002", "tag"] == "manual" and cat.loc["tr005", "status"] == "rejected"
    assert store.proposals("toy")[0].set_index("cluster").loc[2, "status"] == "rejected"
    store.undo("toy", "ann")
    assert tags_and_proposals(store) == start


def test_rename_changes_tags_and_proposals_and_undoes(setup):
    store, _ = setup
    store.accept("toy", "m1", 0, "ann")
    start = tags_and_proposals(store)
    weird = "Robert'); DROP TABLE tags; -- \"select\" ;"
    store.rename("toy", "proposed-0", weird, "bob")
    cat = store.catalog("toy")
    assert (cat["tag"] == weird).sum() == 10
    assert store.proposals("toy")[0].set_index("cluster").loc[0, "tag"] == weird
    assert len(table_rows(store, "tags")) == 10  # the table is still there
    store.undo("toy", "bob")
    assert tags_and_proposals(store) == start


def test_merge_folds_tags_into_one_and_undoes(setup):
    store, _ = setup
    store.accept("toy", "m1", 0, "ann")
    store.accept("toy", "m1", 1, "ann", name="pets")
    store.set_item("toy", "te003", "strays", "bob")
    start = tags_and_proposals(store)
    result = store.merge("toy", ["proposed-0", "strays"], "pets", "carol")
    assert result["items"] == 11
    counts = store.tag_counts("toy").set_index("tag")["items"].to_dict()
    assert counts == {"pets": 21}
    store.undo("toy", "carol")
    assert tags_and_proposals(store) == start


def test_set_item_and_removing_a_tag(setup):
    store, _ = setup
    store.set_item("toy", "te000", "odd", "ann")
    store.set_item("toy", "te000", "odder", "ann")
    cat = store.catalog("toy").set_index("item_id")
    assert cat.loc["te000", "tag"] == "odder" and cat.loc["te000", "status"] == "manual"
    assert pd.isna(cat.loc["te000", "cluster"]) and pd.isna(cat.loc["te000", "model"])
    store.set_item("toy", "te000", None, "ann")
    assert table_rows(store, "tags") == []
    store.undo("toy", "ann")
    assert [r[2] for r in table_rows(store, "tags")] == ["odder"]
    store.undo("toy", "ann")
    assert [r[2] for r in table_rows(store, "tags")] == ["odd"]
    store.undo("toy", "ann")
    assert table_rows(store, "tags") == []
    with pytest.raises(StoreError) as err:
        store.undo("toy", "ann")
    assert "nothing to undo" in str(err.value)


def test_undo_is_recorded_and_not_itself_undone(setup):
    store, _ = setup
    store.set_item("toy", "tr000", "a", "ann")
    store.set_item("toy", "tr001", "b", "ann")
    store.undo("toy", "bob")
    hist = store.history("toy")
    assert hist["action"].tolist() == ["undo", "set_item", "set_item"]
    assert hist["undone"].tolist() == [False, True, False]
    assert hist.iloc[0]["undoes"] == hist.iloc[1]["id"] and hist.iloc[0]["curator"] == "bob"
    store.undo("toy", "bob")  # the next undo takes the decision before, not the undo
    assert table_rows(store, "tags") == []


def test_history_filters_by_curator_tag_and_time(setup):
    store, _ = setup
    store.accept("toy", "m1", 0, "ann")
    time.sleep(0.01)
    cut = dt.datetime.now(dt.timezone.utc)
    time.sleep(0.01)
    store.rename("toy", "proposed-0", "zero", "bob")
    store.set_item("toy", "te001", "other", "bob")
    hist = store.history("toy")
    assert hist["action"].tolist() == ["set_item", "rename", "accept"]
    assert "renamed 'proposed-0' to 'zero'" in hist.iloc[1]["summary"]
    assert store.history("toy", curator="ann")["action"].tolist() == ["accept"]
    assert store.history("toy", tag="proposed-0")["action"].tolist() == ["rename", "accept"]
    assert store.history("toy", tag="zero")["action"].tolist() == ["rename"]
    assert store.history("toy", since=cut)["action"].tolist() == ["set_item", "rename"]
    assert store.history("toy", curator="bob", tag="other")["action"].tolist() == ["set_item"]
    assert store.history("toy", curator="nobody").empty


@pytest.mark.parametrize("bad", ["", "   ", "tab\there", "new\nline", "bell\x07"])
def test_empty_or_control_character_names_are_refused(setup, bad):
    store, _ = setup
    start = tags_and_proposals(store)
    before = store.checksum()
    for call in (
        lambda: store.accept("toy", "m1", 0, "ann", name=bad),
        lambda: store.set_item("toy", "tr000", bad, "ann"),
        lambda: store.set_item("toy", "tr000", "fine", bad),
    ):
        with pytest.raises(StoreError):
            call()
    store.accept("toy", "m1", 0, "ann")
    with pytest.raises(StoreError):
        store.rename("toy", "proposed-0", bad, "ann")
    with pytest.raises(StoreError):
        store.merge("toy", ["proposed-0"], bad, "ann")
    store.undo("toy", "ann")
    assert tags_and_proposals(store) == start
    assert len(store.history("toy")) == 2  # only the accept and its undo were recorded
    assert store.checksum() != before


def test_unknown_things_are_not_found_sentences(setup):
    store, _ = setup
    cases = [
        (lambda: store.accept("nope", "m1", 0, "ann"), "no dataset named 'nope'"),
        (lambda: store.accept("toy", "m9", 0, "ann"), "no model named 'm9'"),
        (lambda: store.accept("toy", "m1", 99, "ann"), "Cluster 99"),
        (lambda: store.rename("toy", "ghost", "x", "ann"), "no tag named 'ghost'"),
        (lambda: store.merge("toy", ["ghost"], "x", "ann"), "no tag named 'ghost'"),
        (lambda: store.set_item("toy", "no-such-item", "x", "ann"), "no item 'no-such-item'"),
        (lambda: store.latents("toy", "m1", "ood"), "no fused latents"),
    ]
    before = store.checksum()
    for call, words in cases:
        with pytest.raises(NotFoundError) as err:
            call()
        msg = str(err.value)
        assert words in msg and msg.endswith(".") and "\n" not in msg
    assert store.checksum() == before


def test_decisions_follow_the_latest_proposals(setup):
    store, fs = setup
    train = fs.splits["train"]
    store.save_proposals("toy", "m1", "train", 2, proposal_table(2), train.item_ids, np.arange(train.n) % 2)
    table, assign = store.proposals("toy", "m1")
    assert table.attrs["k"] == 2 and len(table) == 2 and len(assign) == train.n
    assert table["status"].tolist() == ["proposed", "proposed"]
    assert store.accept("toy", "m1", 1, "ann")["items"] == 15
    with pytest.raises(NotFoundError):
        store.accept("toy", "m1", 2, "ann")  # cluster 2 only existed in the older set


def test_catalog_has_metadata_and_statuses(setup):
    store, fs = setup
    store.accept("toy", "m1", 0, "ann")
    store.reject("toy", "m1", 1, "ann")
    cat = store.catalog("toy")
    assert list(cat.columns) == ["item_id", "split", "label", "title", "year", "score", "caption",
                                 "tag", "status", "cluster", "model", "curator", "tagged_at"]
    assert len(cat) == 42 and cat["item_id"].tolist()[:2] == ["tr000", "tr001"]
    by_id = cat.set_index("item_id")
    assert by_id.loc["tr000", "status"] == "accepted"
    assert by_id.loc["tr001", "status"] == "rejected"
    assert by_id.loc["tr002", "status"] == "proposed"
    assert by_id.loc["te000", "status"] == "untagged"
    assert by_id.loc["tr004", "title"] == "tr title 4" and by_id.loc["te002", "year"] == 2002
    assert by_id.loc["tr004", "label"] == "class-1"


def test_catalog_of_chosen_items_equals_those_rows_of_the_whole_catalog(setup):
    store, fs = setup
    store.accept("toy", "m1", 0, "ann")
    store.set_item("toy", "te002", "by hand", "bob")
    whole = store.catalog("toy").set_index("item_id")
    ids = ["te002", "tr004", "no-such-item", "tr000", "te002"]
    part = store.catalog("toy", ids)
    assert part["item_id"].tolist() == ["te002", "tr004", "tr000"]  # asked order, unknown and repeats dropped
    expected = whole.loc[["te002", "tr004", "tr000"]].reset_index()
    pd.testing.assert_frame_equal(part, expected, check_dtype=False)
    assert len(store.catalog("toy", [])) == 0


def test_accepting_a_cluster_changes_exactly_its_items(tmp_path):
    """One set-based decision: every item of the cluster is tagged, a hand-set tag in it is kept, and no
    item outside it changes; the Tags page lists the cluster's members a page at a time."""
    from testkit.data import store_with_proposals

    store, fs = store_with_proposals(tmp_path / "s.duckdb", k=3)
    ids = [str(i) for i in fs.splits["train"].item_ids]
    store.set_item("toy", ids[4], "by-hand", "ann")  # item 4 is in cluster 1
    before = store.catalog("toy").set_index("item_id")
    out = store.accept("toy", "m1", 1, "bob")
    after = store.catalog("toy").set_index("item_id")
    members = {i for n, i in enumerate(ids) if n % 3 == 1}
    assert out["items"] == len(members) - 1 and out["kept_manual"] == 1
    changed = {i for i in after.index if not after.loc[i, ["tag", "status"]].equals(before.loc[i, ["tag", "status"]])}
    assert changed == members - {ids[4]}
    assert set(after.loc[sorted(changed), "tag"]) == {"proposed-1"} and after.loc[ids[4], "tag"] == "by-hand"
    assert store.proposal_members("toy", "m1", 1, limit=4) == sorted(members)[:4]
    assert store.proposal_members("toy", "m1", 1, offset=4, limit=100) == sorted(members)[4:]
