"""The Explore page through ``AppTest`` (maps computed once and read back from ``projections``, colours,
the overlay, tagging a selection) and the map helpers it is built from (``ui.maps``)."""
from __future__ import annotations

from ui.tagging import NEW_TAG

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from studio import pipeline
from mmae_core.evaluation.projection import project_2d
from store import Store
from ui import maps

from .test_app_tags import DATASET, MODEL, messages, page_test


@pytest.fixture
def demo(demo_store) -> Store:
    return demo_store.store()


def chart_data(at) -> pd.DataFrame:
    """The data the browser receives for the map (Arrow, as Streamlit ships it)."""
    charts = at.get("vega_lite_chart")
    assert len(charts) == 1
    proto = charts[0].proto
    assert len(proto.datasets) == 1
    return pa.ipc.open_stream(io.BytesIO(proto.datasets[0].data.data)).read_all().to_pandas()


def captions(at) -> str:
    return " | ".join(c.value for c in at.caption)


def test_empty_store_says_what_to_do(empty_store):
    at = page_test("explore")
    at.run()
    assert not at.exception
    assert any("no dataset" in m for m in messages(at, "info"))


def test_map_is_computed_once_stored_and_read_back_by_a_new_session(demo):
    at = page_test("explore")
    at.run()
    assert not at.exception
    assert "computed now" in captions(at)
    stored = demo.projections(DATASET, MODEL)
    assert stored[["split", "kind", "method", "seed", "points"]].values.tolist() == [["test", "fused", "pca", 42, 150]]
    ids, z = demo.latents(DATASET, MODEL, "test", "fused")
    xy = demo.projection(DATASET, MODEL, "test", "fused", "pca", 42)
    np.testing.assert_array_equal(xy, project_2d(z, "pca", seed=42))
    data = chart_data(at)
    assert list(data.columns) == ["x", "y", "c", "i"] and len(data) == 150
    np.testing.assert_array_equal(data["x"].to_numpy(), xy[data["i"].to_numpy(), 0])

    before = demo.checksum()
    again = page_test("explore")  # a second browser session
    again.run()
    assert not again.exception
    assert "read from the store" in captions(again)
    assert demo.checksum() == before


def test_overlay_maps_every_modality_together_and_colours_by_modality(demo):
    at = page_test("explore", explore_kind="overlay", explore_colour="modality")
    at.run()
    assert not at.exception
    data = chart_data(at)
    assert len(data) == 3 * 150
    assert set(data["c"]) == {"image", "audio", "text"}
    stored = demo.projections(DATASET, MODEL)
    assert stored[["kind", "method", "points"]].values.tolist() == [["overlay", "pca", 450]]


def test_colour_by_cluster_uses_the_latest_proposals(demo):
    pipeline.propose_tags(demo, DATASET, MODEL, 4, "test")
    table, _ = demo.proposals(DATASET, MODEL)
    at = page_test("explore", explore_colour="cluster")
    at.run()
    assert not at.exception
    groups = set(chart_data(at)["c"])
    assert groups == {f"{int(r.cluster):02d} {r.name}" for r in table.itertuples()}


def test_select_whole_groups_and_tag_them_in_one_decision(demo):
    cat = demo.catalog(DATASET)
    test_items = cat[cat["split"] == "test"]
    label = str(test_items["label"].iloc[0])
    expected = set(test_items.loc[test_items["label"] == label, "item_id"])
    at = page_test("explore", explore_colour="label")
    at.run()
    at.multiselect(key="explore_groups").set_value([label])
    at.run()
    assert not at.exception
    assert any(f"{len(expected)} items" in s.value for s in at.subheader)
    shown = at.dataframe[0].value
    assert set(shown["item_id"]) == expected and set(shown["label"]) == {label}
    at.selectbox(key="explore_tag_pick").set_value(NEW_TAG)
    at.run()
    at.text_input(key="explore_tag_new").set_value("picked on the map")
    at.button(key="explore_tag_go").click()
    at.run()
    assert not at.exception
    after = demo.catalog(DATASET)
    assert set(after.loc[after["tag"] == "picked on the map", "item_id"]) == expected
    assert set(after.loc[after["tag"] == "picked on the map", "curator"]) == {"ann"}
    hist = demo.history(DATASET)
    assert len(hist) == 1 and hist["action"].iloc[0] == "set_item"
    # recoloured by tag, the selection's new tag is on the map at once
    at.selectbox(key="explore_colour").set_value("tag")
    at.run()
    assert (chart_data(at)["c"] == "picked on the map").sum() == len(expected)


# -- ui.maps -------------------------------------------------------------------------------------
def frame_of(n: int = 6) -> pd.DataFrame:
    xy = np.array([[0, 0], [1, 1], [2, 2], [3, 3], [np.nan, np.nan], [5, 5]], dtype=np.float32)[:n]
    frame, total = maps.map_frame(xy, np.array(list("aabbcc"[:n]), dtype=object))
    assert total == 5
    return frame


def test_box_selection_returns_the_rows_inside_whatever_the_drag_direction():
    frame = frame_of()
    state = {"selection": {"box": {"x": [3.5, 0.5], "y": [0.5, 3.5]}}}
    assert maps.selected_rows(state, frame, "box").tolist() == [1, 2, 3]
    assert maps.selected_rows({"selection": {"box": {}}}, frame, "box").size == 0
    assert maps.selected_rows(None, frame, "box").size == 0


def test_point_selection_returns_clicked_rows_and_ignores_unknown_ones():
    frame = frame_of()
    state = {"selection": {"pick": [{"i": 5}, {"i": 0}, {"i": 4}, {"x": 1}, {"i": 5}]}}
    assert maps.selected_rows(state, frame, "pick").tolist() == [0, 5]  # row 4 has no coordinates


def test_map_frame_samples_large_maps_reproducibly_and_keeps_data_small():
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(1000, 2)).astype(np.float32)
    groups = np.array([f"g{i % 7}" for i in range(1000)], dtype=object)
    a, total = maps.map_frame(xy, groups, max_points=300, seed=3)
    b, _ = maps.map_frame(xy, groups, max_points=300, seed=3)
    assert total == 1000 and len(a) == 300 and a.equals(b)
    assert a["i"].is_monotonic_increasing and a["x"].dtype == np.float32 and a["i"].dtype == np.int32
    assert isinstance(a["c"].dtype, pd.CategoricalDtype)


def test_slow_maps_wait_for_a_button():
    assert not maps.needs_button("pca", 1_000_000)
    assert not maps.needs_button("tsne", 150)
    assert maps.needs_button("umap", 21_000) and maps.needs_button("tsne", 4_200 * 3)


def test_chart_reports_only_the_selection_parameter_and_draws_on_canvas():
    chart = maps.build_chart(frame_of(), "label", "box").to_dict()
    names = [p["name"] for p in chart["params"]]
    assert names == ["box", "view"] and chart["params"][1]["bind"] == "scales"
    assert chart["usermeta"]["embedOptions"]["renderer"] == "canvas"
    pick = maps.build_chart(frame_of(), "label", "pick").to_dict()
    assert pick["params"][0]["select"]["type"] == "point" and pick["params"][0]["select"]["fields"] == ["i"]


def test_the_page_runs_inside_the_app_frame(demo, app):
    at = app("explore", curator="ann")
    assert not at.exception
    assert [t.value for t in at.title][-1] == "Explore"
    assert len(chart_data(at)) == 150 and len(demo.projections(DATASET, MODEL)) == 1


# -- novelty ----------------------------------------------------------------------------------
def test_colour_by_novelty_bands_every_point_against_the_train_split(demo):
    from studio.archive import NOVELTY_BANDS, novelty_scores

    at = page_test("explore", explore_colour="novelty")
    at.run()
    assert not at.exception
    data = chart_data(at)
    assert len(data) == 150 and set(data["c"]) <= set(NOVELTY_BANDS) and len(set(data["c"])) >= 2
    # the same bands as the core's scores of the test split
    scores = novelty_scores(demo, DATASET, MODEL, ["test"])
    ids, _ = demo.latents(DATASET, MODEL, "test", "fused")
    q99 = scores.attrs["train_q99"]
    beyond = set(scores.loc[scores["score"] > q99, "item_id"])
    drawn = set(ids[data.loc[data["c"] == NOVELTY_BANDS[3], "i"].to_numpy()].astype(str))
    assert drawn == beyond
    assert "novelty against" in captions(at)


def test_new_and_unusual_ranks_the_ood_split_most_novel_first(demo):
    at = page_test("explore", explore_novel_on=True)
    at.run()
    assert not at.exception
    assert at.selectbox(key="explore_novel_split").value == "ood"
    table = next(d.value for d in at.dataframe if "score" in d.value.columns)
    assert list(table.columns[:7]) == ["item_id", "review", "percentile", "score", "recon", "distance", "nearest tag"]
    assert len(table) == 50 and table["score"].is_monotonic_decreasing
    assert table["item_id"].str.contains("-ood-").all()
    # calibrated against the test split (ordinary items the model has not seen), at a 5% false-alarm rate
    assert at.selectbox(key="explore_novel_ref").value == "test"
    assert "to review" in captions(at) and "5.0% of the 150 test items" in captions(at)
    assert table["percentile"].is_monotonic_decreasing and table["review"].iloc[0]
    # a review threshold flags about 5% of the test split itself (the false-alarm rate, not "all of them")
    from ui.archive import calibrated, novelty

    ranked, attrs = novelty(demo, DATASET, MODEL, ["test"])
    own, a = calibrated(demo, DATASET, MODEL, ranked, attrs, "test", 0.05)
    assert own["review"].mean() <= 0.05 and a["threshold"] > attrs["train_q50"]


def _zip(arrays: dict[str, np.ndarray | bytes]) -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, arr in arrays.items():
            if isinstance(arr, bytes):  # a table such as ood/items.csv
                zf.writestr(name, arr)
                continue
            one = io.BytesIO()
            np.save(one, arr)
            zf.writestr(name, one.getvalue())
    return buf.getvalue()


def test_new_and_unusual_ranks_an_upload_without_importing_it(demo):
    ood = demo.load_dataset(DATASET).splits["ood"]
    ids = np.array([f"new-{i}" for i in range(ood.n)])
    items = pd.DataFrame({"item_id": ids, "title": [f"new clip {i}" for i in range(ood.n)]}).to_csv(index=False).encode()
    good = _zip({"ood/image.npy": ood.features["image"], "ood/text.npy": ood.features["text"], "ood/ids.npy": ids,
                 "ood/items.csv": items})
    at = page_test("explore", explore_novel_what="New material (upload, not imported)")
    at.run()
    before = demo.checksum()  # after the first run, which stores the page's map
    at.file_uploader(key="explore_novel_upload").set_value(("new.zip", good, "application/zip")).run()
    assert not at.exception
    table = next(d.value for d in at.dataframe if "score" in d.value.columns)
    assert list(table.columns[:8]) == ["item_id", "split", "review", "percentile", "score", "recon", "distance", "nearest tag"]
    assert len(table) == 50 and table["score"].is_monotonic_decreasing and table["item_id"].str.startswith("new-").all()
    assert (table["title"] == "new clip " + table["item_id"].str.removeprefix("new-")).all()  # the upload's own metadata
    assert "uploaded items to review" in captions(at)
    assert demo.checksum() == before  # scored, not imported

    bad = _zip({"ood/image.npy": np.zeros((3, ood.features["image"].shape[1] + 2), dtype=np.float32)})
    at.file_uploader(key="explore_novel_upload").set_value(("bad.zip", bad, "application/zip")).run()
    assert not at.exception
    errors = messages(at, "error")
    assert len(errors) == 1 and "expects" in errors[0] and errors[0].count(". ") == 0, errors
    assert demo.checksum() == before


# -- every item of a large map: the datashader raster under a selection layer ------------------------
def test_raster_draws_every_point_in_its_groups_colour_where_it_lies():
    from PIL import Image

    xy = np.array([[0, 0]] * 30 + [[10, 10]] * 30, dtype=np.float32)
    groups = np.array(["a"] * 30 + ["b"] * 30, dtype=object)
    frame, _ = maps.map_frame(xy, groups, max_points=len(xy))
    extent = maps.Extent(-1.0, 11.0, -1.0, 11.0)
    img = np.asarray(Image.open(io.BytesIO(maps.raster_png(frame, extent, size=(120, 120)))).convert("RGBA"))
    assert img.shape == (120, 120, 4)
    colour = {g: tuple(int(h[i:i + 2], 16) for i in (1, 3, 5)) for g, h in zip("ab", maps.palette(["a", "b"]))}
    # (0, 0) lies 10 px right of the left edge and 10 px above the bottom (rows count from the top)
    assert tuple(img[109, 10, :3]) == colour["a"] and img[109, 10, 3] > 0
    assert tuple(img[9, 109, :3]) == colour["b"]
    assert img[60, 60, 3] == 0  # nothing drawn between the two groups


def test_raster_map_ships_the_image_and_legend_not_the_points():
    import base64
    import json

    rng = np.random.default_rng(0)
    xy = rng.normal(size=(50_000, 2)).astype(np.float32)
    groups = np.array([f"g{i % 12}" for i in range(50_000)], dtype=object)
    frame, _ = maps.map_frame(xy, groups, max_points=len(xy))
    assert maps.use_raster(len(frame)) and not maps.use_raster(maps.MAX_POINTS)
    extent = maps.Extent.of(xy)
    png = maps.raster_png(frame, extent)
    data = maps.overlay_data(frame, "label", extent, png)
    assert base64.b64decode(data["url"].split(",", 1)[1]) == png
    assert data["extent"] == [extent.x0, extent.x1, extent.y0, extent.y1]
    assert [k for k, _ in data["legend"]] == [f"g{i}" for i in sorted(range(12), key=str)]
    assert len(json.dumps(data)) < len(png) * 1.4 + 2_000  # the image and a legend, no points
    state = {"selection": {"box": {"x": [0.0, 5.0], "y": [-5.0, 0.0]}}}
    inside = (xy[:, 0] >= 0) & (xy[:, 0] <= 5) & (xy[:, 1] >= -5) & (xy[:, 1] <= 0)
    assert maps.selected_rows(state, frame, "box").tolist() == np.flatnonzero(inside).tolist()
    assert maps.box_extent(state) == maps.Extent(0.0, 5.0, -5.0, 0.0)


def test_a_map_above_the_points_limit_is_drawn_whole_as_an_image_and_its_box_selects(demo, monkeypatch):
    monkeypatch.setattr(maps, "MAX_POINTS", 100)  # the demo store's test split has 150 items
    at = page_test("explore")
    at.run()
    assert not at.exception
    assert "150 points, drawn as an image" in captions(at)
    assert not at.get("vega_lite_chart")  # no chart library: the raster component
    (comp,) = at.get("bidi_component")
    assert comp.proto.component_name == "mmae_raster_map" and "setStateValue" in comp.proto.js_content
    assert not at.get("radio") or "explore_select" not in [r.key for r in at.radio]
    assert at.button(key="explore_zoom").disabled  # nothing boxed yet
    xy = demo.projection(DATASET, MODEL, "test", "fused", "pca", 42)
    x0, x1 = float(np.median(xy[:, 0])), float(xy[:, 0].max())
    y0, y1 = float(xy[:, 1].min()), float(xy[:, 1].max())
    # what the browser reports after a drag: the box in map coordinates
    at.session_state["explore_raster_test_fused_pca_42"] = {"box": {"x": [x0, x1], "y": [y0, y1]}}
    at.run()
    assert not at.exception
    expected = int(((xy[:, 0] >= x0) & (xy[:, 0] <= x1)).sum())
    assert any(f"Selection: {expected} items" == s.value for s in at.subheader), [s.value for s in at.subheader]
    assert not at.button(key="explore_zoom").disabled


def test_the_page_opens_on_the_background_umap_once_it_is_stored(demo):
    from studio.background_map import compute_default_map

    at = page_test("explore")
    at.run()
    assert at.selectbox(key="explore_method").value == "pca"  # nothing computed yet: PCA, instant
    assert compute_default_map(demo, DATASET, MODEL)
    again = page_test("explore")
    again.run()
    assert not again.exception
    assert again.selectbox(key="explore_method").value == "umap"
    assert "read from the store" in captions(again)
    xy = demo.projection(DATASET, MODEL, "test", "fused", "umap", 42)
    data = chart_data(again)
    np.testing.assert_array_equal(data["x"].to_numpy(), xy[data["i"].to_numpy(), 0])


def test_the_map_and_colour_chosen_are_kept_across_page_visits(demo_store, app):
    at = app("explore")
    assert not at.exception
    at.selectbox(key="explore_method").set_value("tsne").run()
    at.selectbox(key="explore_colour").set_value("label").run()
    at.switch_page("pages/home.py").run()
    at.switch_page("pages/explore.py").run()
    assert not at.exception
    assert at.selectbox(key="explore_method").value == "tsne" and at.selectbox(key="explore_colour").value == "label"


def test_a_selection_keeps_its_map_when_the_background_umap_lands(demo, monkeypatch):
    """The UMAP computed after training replaces the PCA map by itself, but not under a selection: the
    map would be redrawn and the curator's box dropped with it."""
    from studio.background_map import compute_default_map

    monkeypatch.setattr(maps, "MAX_POINTS", 100)  # the raster map, whose box a test can set
    plain, boxed = page_test("explore"), page_test("explore")
    plain.run()
    boxed.run()
    assert boxed.selectbox(key="explore_method").value == "pca"
    xy = demo.projection(DATASET, MODEL, "test", "fused", "pca", 42)
    boxed.session_state["explore_raster_test_fused_pca_42"] = {
        "box": {"x": [float(xy[:, 0].min()), float(xy[:, 0].max())], "y": [float(xy[:, 1].min()), float(xy[:, 1].max())]}}
    boxed.run()
    assert "Selection: 150 items" in [s.value for s in boxed.subheader]
    assert compute_default_map(demo, DATASET, MODEL)
    plain.run()
    boxed.run()
    assert not plain.exception and not boxed.exception
    assert plain.selectbox(key="explore_method").value == "umap"  # nothing selected: the better map opens
    assert boxed.selectbox(key="explore_method").value == "pca"
    assert "Selection: 150 items" in [s.value for s in boxed.subheader]
    assert "The UMAP map, which separates groups better than PCA, is ready" in captions(boxed)
    assert "is ready" not in captions(plain)
