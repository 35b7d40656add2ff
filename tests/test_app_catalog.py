"""The Catalog page through ``AppTest``: empty store, filters, and downloads whose bytes are exactly
``store.export.to_bytes`` (the CLI's export) of the rows shown."""
from __future__ import annotations

import pytest
from streamlit.runtime.media_file_manager import MediaFileManager

from studio import pipeline
from store import Store, to_bytes

from .test_app_tags import DATASET, MODEL, messages, page_test

MIME = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet", "json": "application/json"}


@pytest.fixture
def tagged(demo_store) -> Store:
    """The demo store with two accepted proposals (by ann and bob) and one hand-tagged item."""
    store = demo_store.store()
    pipeline.propose_tags(store, DATASET, MODEL, 5, "test")
    store.accept(DATASET, MODEL, 0, "ann", name="=cmd|calc")  # a formula-looking tag: CSV must defuse it
    store.accept(DATASET, MODEL, 1, "bob", name="beta")
    store.set_item(DATASET, "demo-train-000007", "gamma", "ann")
    return store


@pytest.fixture(autouse=True)
def deferred(monkeypatch) -> dict:
    """What each download button would send when clicked: the page registers a callable with
    Streamlit's media manager (deferred download); keep the newest one per file name to call it."""
    made: dict = {}
    original = MediaFileManager.add_deferred

    def add_deferred(self, data_callable, mimetype, coordinates, file_name=None, **kw):
        made[file_name] = (data_callable, mimetype)
        return original(self, data_callable, mimetype, coordinates, file_name, **kw)

    monkeypatch.setattr(MediaFileManager, "add_deferred", add_deferred)
    return made


def downloads(deferred: dict) -> dict[str, bytes]:
    out = {}
    for name, (make, mime) in deferred.items():
        fmt = name.rsplit(".", 1)[-1]
        assert name == f"{DATASET}-catalog.{fmt}" and mime == MIME[fmt]
        out[fmt] = make()
    deferred.clear()
    return out


def expected(df) -> dict[str, bytes]:
    return {fmt: to_bytes(df, fmt) for fmt in MIME}


def test_empty_store_says_what_to_do(empty_store):
    at = page_test("catalog")
    at.run()
    assert not at.exception
    assert any("no dataset" in m for m in messages(at, "info"))


def test_unfiltered_downloads_are_the_cli_export_bytes(tagged, deferred, tmp_path):
    from studio.cli import main

    at = page_test("catalog")
    at.run()
    assert not at.exception
    table = at.dataframe[0].value
    assert len(table) == 100 and any("**1,154** of 1,154 items" in m.value for m in at.markdown)
    files = downloads(deferred)
    assert files == expected(tagged.catalog(DATASET))
    # A click must not rerun the page: the rerun would clear the queue holding the built file's answer.
    buttons = at.get("download_button")
    assert len(buttons) == 3 and all(b.proto.ignore_rerun for b in buttons)
    for fmt in MIME:  # the CLI's export writes the very same bytes
        out = tmp_path / f"cli.{fmt}"
        assert main(["export", "--db", str(tagged.path), "--dataset", DATASET, "--format", fmt, "--out", str(out)]) == 0
        assert out.read_bytes() == files[fmt]
    csv = to_bytes(tagged.catalog(DATASET), "csv").decode()
    assert "'=cmd|calc" in csv and ",=cmd" not in csv


def test_filters_narrow_the_table_and_the_downloads(tagged, deferred):
    at = page_test("catalog")
    at.run()
    at.multiselect(key="catalog_tags").set_value(["beta", "gamma"])
    at.run()
    assert not at.exception
    shown = at.dataframe[0].value
    full = tagged.catalog(DATASET)
    assert set(shown["tag"]) == {"beta", "gamma"} and len(shown) == int(full["tag"].isin(["beta", "gamma"]).sum())
    files = downloads(deferred)
    assert files == expected(full[full["tag"].isin(["beta", "gamma"])])
    assert b"beta" in files["csv"] and b"=cmd" not in files["csv"]

    at.multiselect(key="catalog_curators").set_value(["ann"])
    at.run()
    assert set(at.dataframe[0].value["item_id"]) == {"demo-train-000007"}

    at.multiselect(key="catalog_tags").set_value([])
    at.multiselect(key="catalog_curators").set_value([])
    at.multiselect(key="catalog_status").set_value(["manual"])
    at.multiselect(key="catalog_splits").set_value(["train"])
    at.run()
    assert list(at.dataframe[0].value["item_id"]) == ["demo-train-000007"]


def test_text_filter_searches_ids_labels_and_metadata(tagged):
    full = tagged.catalog(DATASET)
    word = str(full.loc[full["split"] == "ood", "title"].iloc[0]).split()[0]
    at = page_test("catalog")
    at.run()
    at.text_input(key="catalog_text").set_value(word.upper())
    at.selectbox(key="catalog_page_size").set_value(500)
    at.run()
    assert not at.exception
    shown = at.dataframe[0].value
    expected = full[full["title"].str.lower().str.contains(word.lower(), regex=False)
                    | full["caption"].str.lower().str.contains(word.lower(), regex=False)
                    | full["label"].str.lower().str.contains(word.lower(), regex=False)
                    | full["item_id"].str.lower().str.contains(word.lower(), regex=False)]
    assert 0 < len(shown) < len(full)
    assert set(shown["item_id"]) >= set(expected["item_id"])
    at.text_input(key="catalog_text").set_value("no-such-words-anywhere")
    at.run()
    assert len(at.dataframe[0].value) == 0 and all(b.disabled for b in at.download_button)


def test_untagged_filter(tagged):
    at = page_test("catalog")
    at.run()
    at.multiselect(key="catalog_tags").set_value(["(untagged)"])
    at.run()
    shown = at.dataframe[0].value
    n = int(tagged.catalog(DATASET)["tag"].isna().sum())
    assert shown["tag"].isna().all() and len(shown) == 100
    assert any(f"**{n:,}** of 1,154 items" in m.value for m in at.markdown)


def test_the_catalog_is_shown_a_page_at_a_time(tagged):
    """Only one page of rows comes into the page, with the count of all; moving pages shows the next
    rows in catalog order, and the last page holds the rest."""
    full = tagged.catalog(DATASET)
    at = page_test("catalog")
    at.run()
    assert not at.exception
    assert list(at.dataframe[0].value["item_id"]) == list(full["item_id"][:100])
    assert any("of 12)" in n.label for n in at.number_input)
    at.number_input(key="catalog_page").set_value(2)
    at.run()
    assert list(at.dataframe[0].value["item_id"]) == list(full["item_id"][100:200])
    assert any("rows 101–200" in m.value for m in at.markdown)
    at.number_input(key="catalog_page").set_value(12)
    at.run()
    assert list(at.dataframe[0].value["item_id"]) == list(full["item_id"][1100:])
    # a filter that leaves fewer rows than the page asked for shows its last page, not an empty table
    at.multiselect(key="catalog_tags").set_value(["beta"])
    at.run()
    assert not at.exception and set(at.dataframe[0].value["tag"]) == {"beta"}


def test_the_page_runs_inside_the_app_frame(tagged, app, deferred):
    at = app("catalog", curator="ann")
    assert not at.exception
    assert [t.value for t in at.title][-1] == "Catalog"
    assert downloads(deferred)["parquet"] == to_bytes(tagged.catalog(DATASET), "parquet")


def test_the_json_download_says_when_infinite_values_become_null(demo_store):
    """JSON has no infinity: the page says so before the download, as the CLI's export does."""
    import numpy as np

    from testkit.data import make_featureset

    fs = make_featureset("inf")
    fs.splits["train"].meta.loc[2, "score"] = np.inf
    demo_store.store().add_dataset(fs)
    at = page_test("catalog")
    at.session_state["dataset"] = "inf"
    at.run()
    assert not at.exception
    assert any("JSON download" in c.value and "infinite" in c.value for c in at.caption)
    at = page_test("catalog")
    at.run()  # the demo has no infinite value: no such note
    assert not any("infinite" in c.value for c in at.caption)
