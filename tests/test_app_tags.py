"""The Tags page through ``AppTest``: it renders with an empty store and with a trained demo model, and
every decision it offers reaches the store (asserted in the store, not in the page).

The stores come from ``conftest.py`` (``demo_store``: a private copy of the small trained demo;
``empty_store``). Most tests run the page file itself with the session state the sidebar would set
(one script run per step, fast); ``test_the_page_runs_inside_the_app_frame`` goes through ``app.py``.
The helpers here are shared by the other app tests of the curation pages.
"""
from __future__ import annotations

from ui.tagging import NEW_TAG

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from studio import pipeline
from mmae_core.data.demo import make_demo
from store import Store

from .conftest import DEMO_DATASET, DEMO_MODEL, _copy_db

ROOT = Path(__file__).resolve().parents[1]
DATASET = DEMO_DATASET
MODEL = DEMO_MODEL
CURATOR = "ann"
K = 6


def page_test(page: str, curator: str | None = CURATOR, **state: object) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / f"{page}.py"), default_timeout=180)
    if curator is not None:
        at.session_state["curator"] = curator
    for k, v in state.items():
        at.session_state[k] = v
    return at


def messages(at: AppTest, kind: str) -> list[str]:
    return [e.value for e in getattr(at, kind)]


def one_sentence(text: str) -> bool:
    body = text.strip()
    return body.endswith(".") and body.count(". ") == 0 and "\n" not in body and "Traceback" not in body


def button(at: AppTest, label_start: str):
    found = [b for b in at.button if b.label.startswith(label_start)]
    assert found, f"no button starting with {label_start!r}: {[b.label for b in at.button]}"
    return found[0]


@pytest.fixture
def demo(demo_store) -> Store:
    return demo_store.store()


@pytest.fixture(scope="session")
def proposed_template(demo_template, tmp_path_factory) -> Path:
    """The demo template with K proposals on the test split, made once (KMeans costs a second)."""
    db = tmp_path_factory.mktemp("proposed-template") / "proposed.duckdb"
    _copy_db(demo_template.db, db)
    pipeline.propose_tags(Store(db), DATASET, MODEL, K, "test")
    return db


@pytest.fixture
def proposed(demo_store, proposed_template) -> Store:
    _copy_db(proposed_template, demo_store.db)
    return demo_store.store()


def tag_rows(store: Store):
    cat = store.catalog(DATASET)
    return cat[cat["tag"].notna()]


# -- empty and fresh stores -----------------------------------------------------------------------
def test_empty_store_says_what_to_do(empty_store):
    at = page_test("tags")
    at.run()
    assert not at.exception
    assert any("no dataset" in m for m in messages(at, "info"))


def test_dataset_without_model_says_train_first(empty_store):
    empty_store.store().add_dataset(make_demo("tiny", scale=0.02))
    at = page_test("tags")
    at.run()
    assert not at.exception
    assert any("no trained model" in m and "Train" in m for m in messages(at, "info"))


def test_propose_from_the_page_stores_proposals(demo):
    at = page_test("tags")
    at.run()
    assert not at.exception
    assert any("no proposed tags yet" in m for m in messages(at, "info"))
    at.text_input(key="tags_k").input(str(K))
    button(at, "Propose tags").click()
    at.run()
    assert not at.exception
    table, assign = demo.proposals(DATASET, MODEL)
    assert len(table) == K and table.attrs["k"] == K and table.attrs["split"] == "test"
    assert len(assign) == 150
    assert any(f"Proposed {K} tags" in m for m in messages(at, "success"))
    # the list: every proposal with its numbers and the titles of its representative items
    listing = at.dataframe[0].value
    assert list(listing["cluster"]) == list(range(K))
    assert {"size", "cohesion", "purity", "majority_label", "name", "status"} <= set(listing.columns)
    titles = demo.catalog(DATASET).set_index("item_id")["title"]
    first = table["representatives"].iloc[0]
    assert listing["representative items"].iloc[0].split(" · ") == [titles[i] for i in first[:3]]
    # the chosen proposal's representatives, with their metadata
    reps = at.dataframe[1].value
    assert list(reps["item_id"]) == list(first) and {"label", "title", "caption"} <= set(reps.columns)


def test_k_larger_than_the_items_is_one_sentence_and_nothing_is_stored(demo):
    before = demo.checksum()
    at = page_test("tags")
    at.run()
    at.text_input(key="tags_k").input("151")
    button(at, "Propose tags").click()
    at.run()
    assert not at.exception
    errors = messages(at, "error")
    assert len(errors) == 1 and "k=151" in errors[0] and one_sentence(errors[0])
    assert demo.checksum() == before


# -- decisions ------------------------------------------------------------------------------------
def test_accept_then_catalog_has_the_rows_with_the_curator_and_undo_removes_them(proposed):
    table, assign = proposed.proposals(DATASET, MODEL)
    cluster = int(table["cluster"].iloc[1])
    at = page_test("tags")
    at.run()
    at.selectbox(key="tags_cluster").set_value(cluster)
    at.run()
    at.button(key="tags_accept").click()
    at.run()
    assert not at.exception
    name = table.set_index("cluster").loc[cluster, "name"]
    rows = tag_rows(proposed)
    members = set(assign.loc[assign["cluster"] == cluster, "item_id"])
    assert set(rows["item_id"]) == members
    assert set(rows["tag"]) == {name} and set(rows["curator"]) == {CURATOR} and set(rows["status"]) == {"accepted"}
    assert any("accepted cluster" in m.lower() for m in messages(at, "success"))
    assert proposed.proposals(DATASET, MODEL)[0].set_index("cluster").loc[cluster, "status"] == "accepted"

    at.button(key="tags_undo").click()
    at.run()
    assert not at.exception
    assert tag_rows(proposed).empty
    hist = proposed.history(DATASET)
    assert list(hist["action"][:2]) == ["undo", "accept"] and set(hist["curator"]) == {CURATOR}


def test_accept_under_a_new_name_rename_merge_and_reject(proposed):
    table, _ = proposed.proposals(DATASET, MODEL)
    c0, c1, c2 = (int(c) for c in table["cluster"].iloc[:3])
    at = page_test("tags")
    at.run()
    at.selectbox(key="tags_cluster").set_value(c0)
    at.text_input(key="tags_accept_name").set_value("first pick")
    at.button(key="tags_accept").click()
    at.run()
    at.selectbox(key="tags_cluster").set_value(c1)
    at.run()
    at.button(key="tags_accept").click()
    at.run()
    assert not at.exception
    second = table.set_index("cluster").loc[c1, "name"]
    assert set(tag_rows(proposed)["tag"]) == {"first pick", second}
    assert at.text_input(key="tags_accept_name").value == ""  # cleared after a successful accept

    at.selectbox(key="tags_rename_old").set_value("first pick")
    at.text_input(key="tags_rename_new").set_value("renamed")
    at.button(key="tags_rename_go").click()
    at.run()
    assert not at.exception
    assert set(tag_rows(proposed)["tag"]) == {"renamed", second}

    at.multiselect(key="tags_merge_from").set_value(["renamed", second])
    at.text_input(key="tags_merge_into").set_value("together")
    at.button(key="tags_merge_go").click()
    at.run()
    assert not at.exception
    rows = tag_rows(proposed)
    assert set(rows["tag"]) == {"together"} and len(rows) == int(table.set_index("cluster").loc[[c0, c1], "size"].sum())

    at.selectbox(key="tags_cluster").set_value(c2)
    at.run()
    at.button(key="tags_reject").click()
    at.run()
    assert not at.exception
    assert proposed.proposals(DATASET, MODEL)[0].set_index("cluster").loc[c2, "status"] == "rejected"
    assert list(proposed.history(DATASET)["action"]) == ["reject", "merge", "rename", "accept", "accept"]


def test_accept_every_proposal_above_a_purity_is_one_decision(proposed):
    table, _ = proposed.proposals(DATASET, MODEL)
    threshold = float(sorted(table["purity"])[len(table) // 2])
    expected = table[table["purity"] >= threshold]
    at = page_test("tags")
    at.run()
    at.slider(key="tags_purity").set_value(threshold)
    at.run()
    at.button(key="tags_accept_all").click()
    at.run()
    assert not at.exception
    after, _ = proposed.proposals(DATASET, MODEL)
    assert set(after.loc[after["status"] == "accepted", "cluster"]) == set(expected["cluster"])
    assert len(tag_rows(proposed)) == int(expected["size"].sum())
    hist = proposed.history(DATASET)
    assert len(hist) == 1 and hist["action"].iloc[0] == "accept"
    at.button(key="tags_undo").click()
    at.run()
    assert tag_rows(proposed).empty
    assert set(proposed.proposals(DATASET, MODEL)[0]["status"]) == {"proposed"}


def test_move_one_item_to_an_existing_tag_and_to_a_new_one(proposed):
    table, assign = proposed.proposals(DATASET, MODEL)
    c0, c1 = (int(c) for c in table["cluster"].iloc[:2])
    proposed.accept(DATASET, MODEL, c0, "bob")
    tag0 = table.set_index("cluster").loc[c0, "name"]
    item = sorted(assign.loc[assign["cluster"] == c1, "item_id"])[0]
    at = page_test("tags")
    at.run()
    at.selectbox(key="tags_cluster").set_value(c1)
    at.run()
    at.selectbox(key="tags_move_item").set_value(item)
    at.selectbox(key="tags_move_pick").set_value(tag0)
    at.button(key="tags_move_go").click()
    at.run()
    assert not at.exception
    cat = proposed.catalog(DATASET).set_index("item_id")
    assert cat.loc[item, "tag"] == tag0 and cat.loc[item, "status"] == "manual" and cat.loc[item, "curator"] == CURATOR

    at.selectbox(key="tags_move_item").set_value(item)
    at.selectbox(key="tags_move_pick").set_value(NEW_TAG)
    at.run()
    at.text_input(key="tags_move_new").set_value("odd one")
    at.button(key="tags_move_go").click()
    at.run()
    assert proposed.catalog(DATASET).set_index("item_id").loc[item, "tag"] == "odd one"


def test_a_tag_renamed_by_another_curator_before_the_click_is_refused(proposed):
    table, assign = proposed.proposals(DATASET, MODEL)
    c0, c1 = (int(c) for c in table["cluster"].iloc[:2])
    proposed.accept(DATASET, MODEL, c0, "bob", name="alpha")
    item = sorted(assign.loc[assign["cluster"] == c1, "item_id"])[0]
    at = page_test("tags")
    at.run()
    at.selectbox(key="tags_cluster").set_value(c1)
    at.run()
    assert "alpha" in at.selectbox(key="tags_move_pick").options
    proposed.rename(DATASET, "alpha", "beta", "bob")  # another session, between drawing and clicking
    before = proposed.checksum()
    at.selectbox(key="tags_move_item").set_value(item)
    at.selectbox(key="tags_move_pick").set_value("alpha")
    at.button(key="tags_move_go").click()
    at.run()
    assert not at.exception
    errors = messages(at, "error")
    assert len(errors) == 1 and "no longer exists" in errors[0] and one_sentence(errors[0]), errors
    assert proposed.checksum() == before and not proposed.tag_exists(DATASET, "alpha")
    assert "beta" in at.selectbox(key="tags_move_pick").options


@pytest.mark.parametrize("case", ["empty rename", "duplicate rename", "duplicate accept name", "empty move"])
def test_bad_names_are_one_sentence_and_leave_the_store_as_it_was(proposed, case):
    table, assign = proposed.proposals(DATASET, MODEL)
    c0, c1 = (int(c) for c in table["cluster"].iloc[:2])
    proposed.accept(DATASET, MODEL, c0, "bob", name="alpha")
    proposed.accept(DATASET, MODEL, c1, "bob", name="beta")
    before = proposed.checksum()
    at = page_test("tags")
    at.run()
    if case == "empty rename":
        at.selectbox(key="tags_rename_old").set_value("alpha")
        at.text_input(key="tags_rename_new").set_value("   ")
        at.button(key="tags_rename_go").click()
    elif case == "duplicate rename":
        at.selectbox(key="tags_rename_old").set_value("alpha")
        at.text_input(key="tags_rename_new").set_value("beta")
        at.button(key="tags_rename_go").click()
    elif case == "duplicate accept name":
        at.selectbox(key="tags_cluster").set_value(int(table["cluster"].iloc[2]))
        at.text_input(key="tags_accept_name").set_value("alpha")
        at.button(key="tags_accept").click()
    else:
        at.selectbox(key="tags_move_pick").set_value(NEW_TAG)
        at.text_input(key="tags_move_new").set_value("")
        at.button(key="tags_move_go").click()
    at.run()
    assert not at.exception
    errors = messages(at, "error")
    assert len(errors) == 1 and one_sentence(errors[0]), errors
    assert ("already exists" in errors[0]) == case.startswith("duplicate")
    assert proposed.checksum() == before


def test_no_curator_name_disables_decisions(proposed):
    at = page_test("tags", curator=None)
    at.run()
    assert not at.exception
    assert any("Curator" in m for m in messages(at, "warning"))
    assert at.button(key="tags_accept").disabled and at.button(key="tags_undo").disabled


def test_a_second_session_sees_the_first_sessions_decision_on_rerun(proposed):
    table, _ = proposed.proposals(DATASET, MODEL)
    c0 = int(table["cluster"].iloc[0])
    a, b = page_test("tags", curator="ann"), page_test("tags", curator="bob")
    a.run()
    b.run()
    assert [m.value for m in b.metric if m.label == "Accepted"] == ["0"]
    a.selectbox(key="tags_cluster").set_value(c0)
    a.button(key="tags_accept").click()
    a.run()
    b.run()
    assert not b.exception
    assert [m.value for m in b.metric if m.label == "Accepted"] == ["1"]
    assert any("by ann" in c.value for c in b.caption)  # the undo hint names the other curator's decision


def test_audit_trail_filters_by_curator_and_tag(proposed):
    table, _ = proposed.proposals(DATASET, MODEL)
    c0, c1 = (int(c) for c in table["cluster"].iloc[:2])
    proposed.accept(DATASET, MODEL, c0, "bob", name="alpha")
    proposed.accept(DATASET, MODEL, c1, "cid", name="beta")
    at = page_test("tags")
    at.run()
    trail = at.dataframe[-1].value
    assert len(trail) == 2
    at.selectbox(key="tags_hist_curator").set_value("cid")
    at.run()
    assert list(at.dataframe[-1].value["curator"]) == ["cid"]
    at.selectbox(key="tags_hist_curator").set_value("(anyone)")
    at.selectbox(key="tags_hist_tag").set_value("alpha")
    at.run()
    assert list(at.dataframe[-1].value["tags"]) == ["alpha"]


def test_the_page_runs_inside_the_app_frame(proposed, app):
    at = app("tags", curator=CURATOR)
    assert not at.exception
    assert [t.value for t in at.title][-1] == "Tags"
    at.button(key="tags_accept").click()
    at.run()
    assert not at.exception
    assert len(tag_rows(proposed)) == int(proposed.proposals(DATASET, MODEL)[0]["size"].iloc[0])
    assert any("accepted cluster 0" in m.lower() for m in messages(at, "success"))


def test_items_whose_modalities_disagree_are_listed_for_review(proposed):
    from studio.archive import conflict_items

    at = page_test("tags")
    at.run()
    assert not at.exception
    assert any(t.label.endswith("Modalities disagree") for t in at.tabs)
    assert not any("score" in d.value.columns for d in at.dataframe)  # computed only when asked for
    at.toggle(key="tags_conflict_on").set_value(True).run()
    assert not at.exception
    expected = conflict_items(proposed, DATASET, MODEL, "test")
    flagged = expected[expected["flagged"]]
    shown = next(d.value for d in at.dataframe if "score" in d.value.columns)
    assert list(shown.columns[:5]) == ["item_id", "score", "image → tag", "audio → tag", "text → tag"]
    assert shown["item_id"].tolist() == flagged["item_id"].head(25).tolist()
    names = set(proposed.proposals(DATASET, MODEL)[0]["name"])
    assert set(shown["image → tag"].dropna()) <= names
    assert any(f"{len(flagged):,} of {len(expected):,} test items" in c.value for c in at.caption)


def test_accept_says_how_many_items_carry_a_hand_set_tag_and_keeps_or_replaces_them(proposed):
    table, assign = proposed.proposals(DATASET, MODEL)
    cluster = int(table["cluster"].iloc[0])
    members = sorted(assign.loc[assign["cluster"] == cluster, "item_id"].astype(str))
    proposed.set_items(DATASET, members[:3], "by hand", "bob")
    at = page_test("tags")
    at.run()
    at.selectbox(key="tags_cluster").set_value(cluster).run()
    assert at.tabs and [t.label for t in at.tabs][-1].endswith("Audit trail")  # the page is in tabs
    assert any("3 of its items already carry a tag set by hand" in c.value and "keep them" in c.value for c in at.caption)
    at.button(key="tags_accept").click().run()
    assert not at.exception
    cat = proposed.catalog(DATASET).set_index("item_id")
    assert (cat.loc[members[:3], "tag"] == "by hand").all() and (cat.loc[members[3:], "status"] == "accepted").all()
    assert "kept 3 hand-set tags" in proposed.history(DATASET)["summary"].iloc[0]
    at.button(key="tags_undo").click().run()
    at.radio(key="tags_manual").set_value("replace").run()
    assert any("replace them" in c.value for c in at.caption)
    at.button(key="tags_accept").click().run()
    cat = proposed.catalog(DATASET).set_index("item_id")
    assert (cat.loc[members, "status"] == "accepted").all()
    hist = proposed.history(DATASET)
    assert "replaced 3 hand-set tags" in hist["summary"].iloc[0]
    assert at.radio(key="tags_manual").value == "replace"
