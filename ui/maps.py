"""The Explore page's map: which latents, their 2-D map (computed once, stored), colours, the chart and
what the curator selected on it. Nothing here calls ``st.*``, so the benchmark and the tests use the
very functions the page does.

Why the chart is built as it is (measured by ``benchmarks/map_size.py``, see its docstring):

* The component is Altair/Vega-Lite with ``on_select``: it is the one Streamlit chart with a box
  selection (pydeck only picks single objects), and on a canvas it holds the full demo. Vega-Lite has
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
* Box selection drags, a click picks points (shift-click adds), the wheel zooms, shift-drag pans, and
  a double-click clears. Only the selection parameter (``box`` or ``pick``) is reported to Streamlit,
  so zooming and panning never rerun the page.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import altair as alt
import numpy as np
import pandas as pd

from mmae_core.errors import NotFoundError
from mmae_core.evaluation.projection import project_2d
from store import Store
from store.projections import ALL_SPLITS, OVERLAY

FUSED = "fused"
SPLIT_ORDER = ("train", "test", "ood")
METHOD_LABELS = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
COLOUR_BY = ("cluster", "label", "tag", "modality", "novelty")  # novelty: ui.archive.novelty_colours
MAX_POINTS = 30_000  # the full demo (29,059 items) is drawn whole by default
DRAW_CAPS = (5_000, 10_000, 30_000, 100_000)
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


def selected_rows(state: Mapping | None, frame: pd.DataFrame, select: str) -> np.ndarray:
    """Map rows (the ``i`` column) inside the curator's box, or the points they clicked."""
    try:
        sel = dict(state or {}).get("selection", {})
        sel = dict(sel or {}).get(select) or {}
    except (TypeError, ValueError):
        return np.empty(0, dtype=np.int64)
    if select == "box":
        if not isinstance(sel, Mapping) or "x" not in sel or "y" not in sel:
            return np.empty(0, dtype=np.int64)
        try:
            x0, x1 = sorted(float(v) for v in sel["x"])
            y0, y1 = sorted(float(v) for v in sel["y"])
        except (TypeError, ValueError):
            return np.empty(0, dtype=np.int64)
        m = frame["x"].between(x0, x1).to_numpy() & frame["y"].between(y0, y1).to_numpy()
        return frame["i"].to_numpy()[m].astype(np.int64)
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

