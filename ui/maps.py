"""The Explore page's map: which latents, their 2-D map (computed once, stored), colours, the chart and
what the curator selected on it. Nothing here calls ``st.*``, so the benchmark and the tests use the
very functions the page does.

Why the chart is built as it is (measured by ``benchmarks/map_size.py``, see its docstring):

* The component is Altair/Vega-Lite with ``on_select``: it is the one Streamlit chart with a box
  selection (pydeck selects by click only), and on a canvas it holds the full demo. Vega-Lite has
  no lasso; a box, clicked points and "select whole colour groups" on the page cover that need.
* Streamlit ships a chart's data as Arrow, not JSON, so the data is what the picture needs: ``x``,
  ``y`` (float32), ``c`` (the colour group, dictionary-encoded) and ``i`` (int32, the row of the map).
  Ids, titles and tags stay on the server and are looked up by ``i`` after a selection: 29,059 points
  cost 371 KB instead of 3.6 MB of inline JSON.
* The canvas renderer is set explicitly (Streamlit picks it above 2,000 marks anyway): SVG was 2-3x
  slower to zoom and pan at both 4,200 and 29,059 points.
* Above ``LIVELY_MAX`` points the unselected points are not faded and there are no tooltips: fading
  makes every move of the box repaint every point (0.7-1.6 s per move at 29,059 points on the busy
  test machine, 60-80 ms without, as only the box's region is repainted).
* Above ``MAX_POINTS`` every point is still drawn, as a datashader raster (``raster_png``, cached per
  map by the page) in a plain image with a box drawn over it (``ui.map_overlay``, data from
  ``overlay_data``); the box comes back in map coordinates and is resolved here on the server
  (``selected_rows``) against every point. Measured by ``benchmarks/map_render.py`` in headless
  Chromium (its docstring has the table): Altair's canvas took 16.6 s to paint 200,000 points and 47 s
  for 1,000,000; pydeck (WebGL, points sent as JSON) 87 s for 200,000 and selects by click only. At
  200,000 points, over five runs on the loaded 2-core machine, the raster under a Vega-Lite layer
  painted in 2.5 s (median) and its box came back in 0.85 s, as Vega loads, compiles and re-renders;
  the plain image with a box paints in 1.8 s, as fast as ``st.image`` of the same PNG (1.9 s; a blank
  Streamlit page: 1.6 s), and its box comes back in 0.44 s, one plain rerun. 1,000,000 points: 2.4 s
  and 0.4-1.2 s. Below ``MAX_POINTS`` the chart of points wins: its selection returns in 0.2-0.3 s, it
  has tooltips and picks points by click.
* Box selection drags, a click picks points (shift-click adds), the wheel zooms, shift-drag pans, and
  a double-click clears. Only the selection parameter (``box`` or ``pick``) is reported to Streamlit,
  so zooming and panning never rerun the page.
"""
from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import altair as alt
import numpy as np
import pandas as pd

from mmae_core.errors import NotFoundError
from studio import background_map
from mmae_core.evaluation.projection import fit_sample_size, project_2d
from store import Store
from store.projections import ALL_SPLITS, OVERLAY

FUSED = "fused"
SPLIT_ORDER = ("train", "test", "ood")
METHOD_LABELS = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
COLOUR_BY = ("cluster", "label", "tag", "modality", "novelty")  # novelty: ui.archive.novelty_colours
MAX_POINTS = 30_000  # up to this many points the map is a chart of points (the full demo, 29,059, fits)
LIVELY_MAX = 5_000  # above this many points: no fading of unselected points, no tooltips
SELECT_MODES = {"box": "Box (drag)", "pick": "Points (click, shift-click)"}
# t-SNE/UMAP of more points than this is started by a button (it takes from tens of seconds to minutes)
AUTO_COMPUTE = 5_000

NONE_LABEL = "(no label)"
UNTAGGED = "(untagged)"
UNCLUSTERED = "(not clustered)"
NO_PROPOSALS = "(no proposals yet)"


@dataclass
class MapRows:
    """The rows a map is made of: item id, latent kind and split of each row (the latents themselves
    are read only when a map is computed: a stored map needs just these to be coloured and selected)."""

    ids: np.ndarray  # (n,) object: the item of each row
    kinds: np.ndarray  # (n,) object: 'fused' or a modality
    splits: np.ndarray  # (n,) object
    parts: list[tuple[str, str]]  # (split, kind) blocks in row order


@dataclass
class MapResult:
    rows: MapRows
    xy: np.ndarray  # (n, 2) float32, NaN where the row has no latent
    computed: bool  # True: computed in this call (and stored); False: read from the store
    seconds: float | None


def dataset_layout(store: Store, dataset: str) -> tuple[list[str], list[str]]:
    """(splits, modalities) of a dataset in its own order, from the store's listing."""
    ds = store.list_datasets()
    row = ds[ds["name"] == dataset]
    if not len(row):
        return list(SPLIT_ORDER), []
    splits = [s.strip() for s in str(row.iloc[0]["splits"]).split(",") if s.strip()]
    mods = [m.split(":")[0].strip() for m in str(row.iloc[0]["modalities"]).split(",") if m.strip()]
    return splits, mods


def model_modalities(store: Store, dataset: str, model: str) -> list[str]:
    """The modalities the model has per-modality latents of, in the dataset's order."""
    present = [k for k in dict.fromkeys(store.latent_kinds(dataset, model)["kind"]) if k != FUSED]
    _, order = dataset_layout(store, dataset)
    ranked = [m for m in order if m in present]
    return ranked + sorted(m for m in present if m not in ranked)


def map_splits(store: Store, dataset: str, model: str) -> list[str]:
    """Splits with latents in the dataset's order, plus ``all`` when there are several."""
    have = set(store.latent_kinds(dataset, model)["split"])
    order, _ = dataset_layout(store, dataset)
    splits = [s for s in order if s in have] + sorted(s for s in have if s not in order)
    return splits + ([ALL_SPLITS] if len(splits) > 1 else [])


def map_kinds(modalities: list[str]) -> list[str]:
    return [FUSED, *modalities] + ([OVERLAY] if len(modalities) > 1 else [])


def map_rows(store: Store, dataset: str, model: str, split: str, kind: str, catalog: pd.DataFrame) -> MapRows:
    """The rows of a map, in the order ``store.projections`` documents (split ``all``: the splits one
    after another; kind ``overlay``: the modalities one after another). Item ids come from the catalog,
    which lists each split's items in the same order as the stored latents."""
    splits = [s for s in map_splits(store, dataset, model) if s != ALL_SPLITS] if split == ALL_SPLITS else [split]
    kinds = model_modalities(store, dataset, model) if kind == OVERLAY else [kind]
    by_split = {s: catalog.loc[catalog["split"] == s, "item_id"].to_numpy(dtype=object) for s in splits}
    ids, ks, ss, parts = [], [], [], []
    for k in kinds:
        for s in splits:
            ids.append(by_split[s])
            ks.append(np.full(len(by_split[s]), k, dtype=object))
            ss.append(np.full(len(by_split[s]), s, dtype=object))
            parts.append((s, k))
    if not parts or not sum(len(i) for i in ids):
        raise NotFoundError(f"Model '{model}' has no latents to map on the {split} split; pick another split.")
    return MapRows(np.concatenate(ids), np.concatenate(ks), np.concatenate(ss), parts)


def map_latents(store: Store, dataset: str, model: str, rows: MapRows) -> np.ndarray:
    """The latents behind the rows (NaN rows: items lacking that modality), checked against the ids."""
    blocks = []
    start = 0
    for s, k in rows.parts:
        ids, x = store.latents(dataset, model, s, k)
        if not np.array_equal(ids.astype(str), rows.ids[start:start + len(ids)].astype(str)):
            raise NotFoundError(f"The {s} latents of model '{model}' do not match the dataset's items; register the model again.")
        blocks.append(x)
        start += len(ids)
    return np.concatenate(blocks)


def background_umap_stored(store: Store, dataset: str, model: str, split: str, kind: str, seed: int) -> bool:
    """True when the map computed in the background after training is stored for this view."""
    return kind == background_map.DEFAULT_KIND and store.projection(
        dataset, model, split, kind, background_map.DEFAULT_METHOD, seed) is not None


def opening_method(store: Store, dataset: str, model: str, split: str, kind: str, seed: int) -> str:
    """The map the page opens with: the background UMAP when it is stored for this view, else PCA."""
    return background_map.DEFAULT_METHOD if background_umap_stored(store, dataset, model, split, kind, seed) else "pca"


def umap_on_its_way(store: Store, dataset: str, model: str, method: str, kind: str) -> bool:
    """True when the page shows PCA while this process computes the model's default UMAP map."""
    return method == "pca" and kind == background_map.DEFAULT_KIND and background_map.pending(store, dataset, model)


def sample_note(method: str, points: int) -> str | None:
    """What the page says when a t-SNE/UMAP map was fitted on a sample (``mmae_core.evaluation.projection``)."""
    fitted = fit_sample_size(method, points)
    if not fitted:
        return None
    how = "with UMAP's transform" if method == "umap" else "at their nearest sample points"
    return (f"{method_label(method)} fitted on a sample of {fitted:,} points; the other {points - fitted:,} are "
            f"placed on it {how}")


def needs_button(method: str, n: int) -> bool:
    """t-SNE/UMAP of many points takes long: start it on request, not on page load."""
    return method != "pca" and n > AUTO_COMPUTE


def load_map(store: Store, dataset: str, model: str, split: str, kind: str, method: str, seed: int,
             rows: MapRows | None = None, compute: bool = True,
             on_progress: Callable[[str], None] | None = None) -> MapResult | None:
    """The stored map, else (with ``compute``) compute it, store it and return it; else None."""
    if rows is None:
        rows = map_rows(store, dataset, model, split, kind, store.catalog(dataset))
    xy = store.projection(dataset, model, split, kind, method, seed)
    if xy is not None and len(xy) == len(rows.ids):
        return MapResult(rows, xy, False, None)
    if not compute:
        return None
    t0 = time.perf_counter()
    x = map_latents(store, dataset, model, rows)
    xy = project_2d(x, method, seed=seed, on_progress=on_progress)  # type: ignore[arg-type]
    seconds = time.perf_counter() - t0
    if not store.save_projection(dataset, model, split, kind, method, seed, xy, seconds):
        stored = store.projection(dataset, model, split, kind, method, seed)  # another session was faster
        xy = stored if stored is not None else xy
    return MapResult(rows, xy, True, seconds)


# -- colours --------------------------------------------------------------------------------------
def colours(by: str, rows: MapRows, catalog: pd.DataFrame | None = None,
            proposals: tuple[pd.DataFrame, pd.DataFrame] | None = None) -> np.ndarray:
    """The colour group of every map row, as text (what the legend shows)."""
    n = len(rows.ids)
    if by == "modality":
        return rows.kinds.astype(object)
    if by == "cluster":
        table, assign = proposals if proposals is not None else (pd.DataFrame(), pd.DataFrame())
        if not len(table):
            return np.full(n, NO_PROPOSALS, dtype=object)
        names = {int(r.cluster): f"{int(r.cluster):02d} {r.tag if isinstance(r.tag, str) and r.tag else r.name}"
                 for r in table.itertuples()}
        cl = pd.Series(assign["cluster"].to_numpy(), index=assign["item_id"].astype(str))
        got = cl.reindex(rows.ids.astype(str))
        return np.array([names.get(int(c), UNCLUSTERED) if pd.notna(c) else UNCLUSTERED for c in got], dtype=object)
    if catalog is None:
        raise ValueError("colouring by label or tag needs the catalog")
    idx = catalog.set_index("item_id")
    col = "label" if by == "label" else "tag"
    fill = NONE_LABEL if by == "label" else UNTAGGED
    vals = idx[col].reindex(rows.ids.astype(str))
    return np.array([str(v) if isinstance(v, str) and v != "" else fill for v in vals], dtype=object)


def map_frame(xy: np.ndarray, groups: np.ndarray, max_points: int = MAX_POINTS, seed: int = 0) -> tuple[pd.DataFrame, int]:
    """The chart's data: x, y, c, i for rows with coordinates, at most ``max_points`` of them (a fixed
    random sample when there are more). Returns the frame and the number of plottable rows."""
    ok = np.flatnonzero(np.isfinite(xy).all(axis=1))
    total = int(ok.size)
    if total > max_points:
        ok = np.sort(np.random.default_rng(seed).choice(ok, size=max_points, replace=False))
    cats = sorted({str(g) for g in groups[ok]}, key=lambda s: (s.startswith("("), s))
    frame = pd.DataFrame({
        "x": xy[ok, 0].astype(np.float32),
        "y": xy[ok, 1].astype(np.float32),
        "c": pd.Categorical(groups[ok].astype(str), categories=cats),
        "i": ok.astype(np.int32),
    })
    return frame, total


def build_chart(frame: pd.DataFrame, colour_title: str, select: str = "box", height: int = 560,
                tooltip: bool | None = None, mark: str = "circle", highlight: bool | None = None) -> alt.Chart:
    """A canvas scatter with one selection parameter named ``select`` ('box' or 'pick').

    ``highlight`` fades the points outside the selection, and ``tooltip`` names a point's colour
    group on hover; ``None`` turns each on up to ``LIVELY_MAX`` points only. Measured: fading makes
    every box move repaint all points (over a second per move at 29,000 points on a busy 2-core
    machine, against 70 ms without it, where only the box's region is repainted).
    """
    n = len(frame)
    tooltip = n <= LIVELY_MAX if tooltip is None else tooltip
    highlight = n <= LIVELY_MAX if highlight is None else highlight
    n_groups = int(frame["c"].nunique()) if n else 0
    press = "[mousedown[!event.shiftKey], window:mouseup] > window:mousemove!"
    if select == "box":
        param = alt.selection_interval(name="box", encodings=["x", "y"], on=press, translate=press, zoom=False,
                                       clear="dblclick")
    else:
        # ``nearest`` (a click picks the closest point) builds a Voronoi diagram: fine for small maps only
        param = alt.selection_point(name="pick", fields=["i"], on="click", toggle="event.shiftKey", clear="dblclick",
                                    nearest=n <= LIVELY_MAX)
    view = alt.selection_interval(name="view", bind="scales", encodings=["x", "y"], zoom="wheel!",
                                  translate="[mousedown[event.shiftKey], window:mouseup] > window:mousemove!")
    size = 8 if n > 10_000 else 16 if n > 2_000 else 40
    legend = alt.Legend(columns=2 if n_groups > 18 else 1, symbolLimit=0, labelLimit=160)
    scheme = "tableau10" if n_groups <= 10 else "category20"
    enc = {
        "x": alt.X("x:Q", axis=None, scale=alt.Scale(zero=False)),
        "y": alt.Y("y:Q", axis=None, scale=alt.Scale(zero=False)),
        "color": alt.Color("c:N", title=colour_title, legend=legend, scale=alt.Scale(scheme=scheme)),
    }
    if highlight:
        enc["opacity"] = alt.condition(param, alt.value(0.85), alt.value(0.12))
    else:
        enc["opacity"] = alt.value(0.7)
    if tooltip:
        enc["tooltip"] = [alt.Tooltip("c:N", title=colour_title)]
    base = alt.Chart(frame)
    marked = base.mark_square(size=size) if mark == "square" else base.mark_circle(size=size)
    chart = (
        marked.encode(**enc)
        .add_params(param, view)
        .properties(height=height, usermeta={"embedOptions": {"renderer": "canvas"}})
    )
    return chart


# Vega's "tableau10" and "category20" schemes as hex, so the raster and the legend draw the same colours
TABLEAU10 = ("#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b", "#eeca3b", "#b279a2", "#ff9da6", "#9d755d",
             "#bab0ac")
CATEGORY20 = ("#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896", "#9467bd",
              "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d",
              "#17becf", "#9edae5")
RASTER_SIZE = (1000, 560)  # pixels of the rasterised map (the chart stretches it to the page's width)


def palette(categories: list[str]) -> list[str]:
    """One colour per colour group, cycling as Vega's ordinal scale does."""
    scheme = TABLEAU10 if len(categories) <= 10 else CATEGORY20
    return [scheme[i % len(scheme)] for i in range(len(categories))]


@dataclass(frozen=True)
class Extent:
    """The rectangle of map coordinates a raster covers: the whole map, or the box zoomed into."""

    x0: float
    x1: float
    y0: float
    y1: float

    @staticmethod
    def of(xy: np.ndarray, margin: float = 0.02) -> "Extent":
        ok = np.isfinite(xy).all(axis=1)
        if not ok.any():
            return Extent(-1.0, 1.0, -1.0, 1.0)
        lo, hi = xy[ok].min(axis=0).astype(float), xy[ok].max(axis=0).astype(float)
        pad = np.maximum((hi - lo) * margin, 1e-6)
        return Extent(lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1])


def raster_png(frame: pd.DataFrame, extent: Extent, size: tuple[int, int] = RASTER_SIZE) -> bytes:
    """The points of ``frame`` as a PNG (transparent background), coloured by group with datashader.

    Why a raster: the browser then paints one image whatever the number of points. Measured by
    ``benchmarks/map_render.py``: 1,000,000 points take about 0.2 s to aggregate and 0.5 s to shade on
    the 2-core test machine, and the PNG is about 300 KB, against tens of MB of points for any chart
    that draws each point in the browser. Colour is the groups' mix per pixel (``count_cat``), with
    histogram-equalised alpha so dense and sparse regions both show; isolated points are spread to 2 px.
    """
    import datashader as ds
    import datashader.transfer_functions as tf

    cats = [str(c) for c in frame["c"].cat.categories]
    canvas = ds.Canvas(plot_width=size[0], plot_height=size[1], x_range=(extent.x0, extent.x1),
                       y_range=(extent.y0, extent.y1))
    if not len(frame) or not cats:
        img = tf.Image(np.zeros((size[1], size[0]), dtype=np.uint32))
    else:
        agg = canvas.points(frame, "x", "y", ds.count_cat("c"))
        img = tf.shade(agg, color_key=dict(zip(cats, palette(cats))), how="eq_hist", min_alpha=150)
        img = tf.dynspread(img, threshold=0.5, max_px=2)
    buf = io.BytesIO()
    img.to_pil().save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def overlay_data(frame: pd.DataFrame, colour_title: str, extent: Extent, png: bytes, height: int = 560,
                 alt: str = "") -> dict:
    """What ``ui.map_overlay.raster_map`` draws: the raster as a data URL, the region it covers (to turn the
    drawn box into map coordinates) and the legend. Only the image and one row per colour group go to the
    browser; the box is resolved on the server against every point of ``frame``."""
    cats = [str(c) for c in frame["c"].cat.categories]
    return {
        "url": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
        "extent": [extent.x0, extent.x1, extent.y0, extent.y1],
        "height": height,
        "title": colour_title,
        "legend": [[c, h] for c, h in zip(cats, palette(cats))],
        "alt": alt,
    }


def use_raster(points: int) -> bool:
    """Draw a raster of every point rather than a chart of points (see the module's docstring)."""
    return points > MAX_POINTS


def frame_digest(frame: pd.DataFrame) -> str:
    """A short fingerprint of what a raster shows (positions and colour groups), to cache the image by."""
    parts = [pd.util.hash_array(frame[c].to_numpy()).sum() for c in ("x", "y")]
    parts.append(pd.util.hash_array(frame["c"].cat.codes.to_numpy()).sum())
    return f"{len(frame)}:{':'.join(str(int(p)) for p in parts)}:{hash(tuple(frame['c'].cat.categories))}"


def _selection(state: Mapping | None, select: str) -> object:
    try:
        sel = dict(state or {}).get("selection", {})
        return dict(sel or {}).get(select) or {}
    except (TypeError, ValueError):
        return {}


def box_extent(state: Mapping | None) -> Extent | None:
    """The curator's box in map coordinates, whatever the drag direction; None when there is none."""
    sel = _selection(state, "box")
    if not isinstance(sel, Mapping) or "x" not in sel or "y" not in sel:
        return None
    try:
        x0, x1 = sorted(float(v) for v in sel["x"])
        y0, y1 = sorted(float(v) for v in sel["y"])
    except (TypeError, ValueError):
        return None
    return Extent(x0, x1, y0, y1)


def selected_rows(state: Mapping | None, frame: pd.DataFrame, select: str) -> np.ndarray:
    """Map rows (the ``i`` column) inside the curator's box, or the points they clicked."""
    if select == "box":
        box = box_extent(state)
        if box is None:
            return np.empty(0, dtype=np.int64)
        m = frame["x"].between(box.x0, box.x1).to_numpy() & frame["y"].between(box.y0, box.y1).to_numpy()
        return frame["i"].to_numpy()[m].astype(np.int64)
    sel = _selection(state, select)
    points = sel if isinstance(sel, list) else []
    picked = []
    for p in points:
        try:
            picked.append(int(p["i"]))
        except (KeyError, TypeError, ValueError):
            continue
    keep = np.isin(np.asarray(picked, dtype=np.int64), frame["i"].to_numpy())
    return np.unique(np.asarray(picked, dtype=np.int64)[keep])


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def kind_label(kind: str) -> str:
    if kind == OVERLAY:
        return "all modalities together (overlay)"
    return "fused z" if kind == FUSED else f"z_{kind}"


def split_label(split: str) -> str:
    return "all splits" if split == ALL_SPLITS else split

