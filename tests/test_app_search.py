"""The Search page through ``AppTest``: item queries, uploaded vectors (good and bad), tagging results
and the retrieval metrics, each checked against the store and ``mmae_core.search.retrieval``."""
from __future__ import annotations

from ui.tagging import NEW_TAG

import io

import numpy as np
import pytest

from mmae_core.model.checkpoint import load_checkpoint
from mmae_core.search.retrieval import encode_query, nearest
from studio.search import shared_space, tag_space
from store import Store

from .test_app_tags import DATASET, MODEL, messages, one_sentence, page_test


def npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


@pytest.fixture
def demo(demo_store) -> Store:
    return demo_store.store()


def results(at):
    """The results table (the first dataframe with a rank column)."""
    for df in at.dataframe:
        if "rank" in df.value.columns:
            return df.value
    return None


def metrics_table(at):
    for df in at.dataframe:
        if "p_at_10" in df.value.columns:
            return df.value
    return None


def query(at, source: str, target: str, item: str) -> None:
    """Ask the page for ``item``'s ``source`` latent's nearest ``target`` items."""
    at.run()
    at.selectbox(key="search_from").set_value(source)
    at.run()
    at.selectbox(key="search_to").set_value(target)
    at.text_input(key="search_find").set_value(item)
    at.run()


def test_empty_store_says_what_to_do(empty_store):
    at = page_test("search")
    at.run()
    assert not at.exception
    assert any("no dataset" in m for m in messages(at, "info"))


def test_item_query_returns_the_nearest_items_and_the_metrics(demo):
    at = page_test("search")
    at.run()
    assert not at.exception
    at.selectbox(key="search_from").set_value("text")
    at.run()
    at.selectbox(key="search_to").set_value("image")
    at.text_input(key="search_find").set_value("demo-test-000003")
    at.run()
    assert not at.exception
    # the default: the tag space of the model's latents; then the shared space, when asked
    ids_q, zq = demo.latents(DATASET, MODEL, "test", "text")
    ids_t, zt = demo.latents(DATASET, MODEL, "test", "image")
    for space in (tag_space(demo, DATASET, MODEL), shared_space(demo, DATASET, MODEL)):
        found = results(at)
        idx, scores = nearest(space.transform_view("text", zq[3:4])[0], space.transform_view("image", zt), top=10)
        assert list(found["item_id"]) == list(ids_t[idx])
        np.testing.assert_allclose(found["cosine"].to_numpy(dtype=float), np.round(scores, 4), atol=1e-4)
        assert {"label", "title", "tag"} <= set(found.columns)
        at.selectbox(key="search_space").set_value("shared").run()
        assert not at.exception
    # the raw latents, when asked
    at.selectbox(key="search_space").set_value("latent").run()
    assert not at.exception
    found = results(at)
    idx, scores = nearest(zq[3], zt, top=10)
    assert list(found["item_id"]) == list(ids_t[idx])
    np.testing.assert_allclose(found["cosine"].to_numpy(dtype=float), np.round(scores, 4), atol=1e-4)

    table = metrics_table(at)
    pairs = set(zip(table["query"], table["target"]))
    assert ("text", "image") in pairs and ("image", "text") in pairs and ("fused", "audio") in pairs
    # the model's rows and, by default, MCCA's beside them, with the worst pair of each in a caption
    assert list(table["method"]) == ["mmae"] * 9 + ["mcca"] * 9
    assert table["p_at_10"].between(0, 1).all() and (table["queries"] == 150).all()
    worst = table[table["query"] != "fused"].groupby("method")["p_at_10"].min()
    assert any(f"model {worst['mmae']:.3f}, MCCA {worst['mcca']:.3f}" in c.value for c in at.caption)
    at.toggle(key="search_baseline").set_value(False).run()
    assert not at.exception
    assert set(metrics_table(at)["method"]) == {"mmae"} and len(metrics_table(at)) == 9
    # what the labels allow: the supervised search's six modality pairs, and its worst pair beside the model's
    at.toggle(key="search_supervised").set_value(True).run()
    assert not at.exception
    table = metrics_table(at)
    assert list(table["method"]) == ["mmae"] * 9 + ["supervised"] * 6
    sup = table[table["method"] == "supervised"]
    assert set(sup["metric"]) == {"posterior"} and sup["p_at_10"].between(0, 1).all()
    worst = table[table["query"] != "fused"].groupby("method")["p_at_10"].min()
    assert any(f"supervised search {worst['supervised']:.3f}" in c.value for c in at.caption)


def test_tag_the_results_in_one_decision(demo):
    at = page_test("search")
    at.run()
    at.text_input(key="search_find").set_value("demo-test-000010")
    at.run()
    found = list(results(at)["item_id"])
    at.selectbox(key="search_tag_pick").set_value(NEW_TAG)
    at.text_input(key="search_tag_new").set_value("found by search")
    at.run()
    at.button(key="search_tag_go").click()
    at.run()
    assert not at.exception
    cat = demo.catalog(DATASET)
    assert set(cat.loc[cat["tag"] == "found by search", "item_id"]) == set(found)
    hist = demo.history(DATASET)
    assert len(hist) == 1 and hist["curator"].iloc[0] == "ann"


def test_uploaded_vector_is_encoded_with_the_models_standardization(demo):
    fs = demo.load_dataset(DATASET)
    vec = fs.splits["test"].features["audio"][5]
    at = page_test("search")
    at.run()
    at.radio(key="search_mode").set_value("vector")
    at.run()
    at.selectbox(key="search_from").set_value("audio")
    at.run()
    at.selectbox(key="search_to").set_value("fused")
    at.selectbox(key="search_space").set_value("latent")
    at.file_uploader(key="search_upload").set_value(("query.npy", npy(vec.astype(np.float64)), "application/octet-stream"))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    found = results(at)
    tm = load_checkpoint(demo.model_checkpoint(DATASET, MODEL))
    q = encode_query(tm, "audio", vec)
    ids_t, zt = demo.latents(DATASET, MODEL, "test", "fused")
    idx, _ = nearest(q, zt, top=10)
    assert list(found["item_id"]) == list(ids_t[idx])
    # the stored audio latent of that item is what the uploaded vector encodes to
    _, za = demo.latents(DATASET, MODEL, "test", "audio")
    np.testing.assert_allclose(q, za[5], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("payload, words", [
    (np.zeros(7, dtype=np.float32), "shape (7,)"),
    (np.array([{"a": 1}], dtype=object), "Python objects"),
    (b"not a numpy file", "not a readable .npy"),
])
def test_bad_uploads_are_one_sentence(demo, payload, words):
    before = demo.checksum()
    at = page_test("search")
    at.run()
    at.radio(key="search_mode").set_value("vector")
    at.run()
    data = payload if isinstance(payload, bytes) else npy(payload)
    at.file_uploader(key="search_upload").set_value(("bad.npy", data, "application/octet-stream"))
    at.run()
    assert not at.exception
    errors = messages(at, "error")
    assert len(errors) == 1 and words in errors[0] and "bad.npy" in errors[0] and one_sentence(errors[0]), errors
    assert results(at) is None and demo.checksum() == before


def test_the_page_runs_inside_the_app_frame(demo, app):
    at = app("search", curator="ann")
    assert not at.exception
    assert [t.value for t in at.title][-1] == "Search"
    assert len(results(at)) == 10 and len(metrics_table(at)) == 18  # the model and MCCA


def test_tag_only_the_chosen_results_as_one_transaction_by_the_sessions_curator(demo):
    at = page_test("search")
    query(at, "image", "text", "demo-test-000020")
    found = list(results(at)["item_id"])
    ms = next(m for m in at.multiselect if m.key.startswith("search_chosen_"))
    chosen = found[:4]
    ms.set_value(chosen)
    at.selectbox(key="search_tag_pick").set_value(NEW_TAG)
    at.text_input(key="search_tag_new").set_value("same picture")
    at.run()
    assert at.button(key="search_tag_go").label.startswith("Tag the 4 ")
    before = len(demo.history(DATASET))
    at.button(key="search_tag_go").click()
    at.run()
    assert not at.exception
    cat = demo.catalog(DATASET)
    tagged = cat.loc[cat["tag"] == "same picture"]
    assert set(tagged["item_id"]) == set(chosen) and set(tagged["curator"]) == {"ann"}
    assert (tagged["status"] == "manual").all()
    hist = demo.history(DATASET)
    assert len(hist) == before + 1 and hist["curator"].iloc[0] == "ann"  # one decision, one audit event
    # the results list now shows the new tag on those items
    shown = results(at).set_index("item_id")
    assert (shown.loc[chosen, "tag"] == "same picture").all()


def test_a_model_without_tags_is_searched_in_the_shared_space_and_the_page_says_so(demo):
    """Fused latents all alike give no tags to learn: the results come from the shared space, and a
    caption says why rather than the page pretending it searched the tag space."""
    fs = demo.load_dataset(DATASET)
    latents = {s: {**{m: demo.latents(DATASET, MODEL, s, m)[1] for m in fs.modalities},
                   "fused": np.zeros((sp.n, 128), dtype=np.float32)} for s, sp in fs.splits.items()}
    demo.add_model(DATASET, "flat", b"not used", {"seed": 1}, {}, latents)
    at = page_test("search", dataset=DATASET, model="flat")
    query(at, "text", "image", "demo-test-000003")
    assert not at.exception
    said = [c for c in messages(at, "caption") if "no tag space" in c]
    assert len(said) == 1 and "used the shared space" in said[0] and one_sentence(said[0])
    table = metrics_table(at)
    assert set(table.loc[table["method"] == "mmae", "space"]) == {"shared"}  # MCCA beside it: "features"
    space = shared_space(demo, DATASET, "flat")
    ids_q, zq = demo.latents(DATASET, "flat", "test", "text")
    ids_t, zt = demo.latents(DATASET, "flat", "test", "image")
    q = list(ids_q).index("demo-test-000003")
    idx, _ = nearest(space.transform_view("text", zq[q:q + 1])[0], space.transform_view("image", zt), top=10)
    assert list(results(at)["item_id"]) == list(ids_t[idx])
