"""Explore: 2-D maps of a model's latents, coloured by cluster, label, tag or modality; select points
to see the items and tag them. Maps are computed once per (model, split, latent, method, seed) and
stored; everything else is in ``ui.maps`` and the store. Novelty (colour and the "New and unusual"
ranking) comes from ``ui.archive`` over ``studio.archive``."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import streamlit as st

from mmae_core.evaluation.projection import METHODS
from ui import archive, maps
from ui.map_overlay import raster_map
from ui.tagging import item_details, need_curator, page_context, show_error, show_flash, show_items, tag_items_form
from ui.state import keep
from ui.widgets import upload_limit_bytes, uploaded_files

COLOUR_TITLES = {"cluster": "cluster", "label": "label", "tag": "tag", "modality": "latent", "novelty": "novelty"}



@st.cache_data(max_entries=8, show_spinner="Drawing every point of the map…")
def raster_png(view: str, colour_by: str, digest: str, extent: maps.Extent, _frame: pd.DataFrame) -> bytes:
    """The map's image, drawn once per (map, colours, region): a selection rerun only re-sends it."""
    return maps.raster_png(_frame, extent)


st.title("Explore")
ctx = page_context()
store, dataset, model = ctx.store, ctx.dataset, ctx.model
st.caption(f"Dataset **{dataset}** · model **{model}**: a 2-D map of the model's latents. Maps are computed once and "
           "stored, so every later visit and every other curator sees them at once.")
show_flash()

splits = maps.map_splits(store, dataset, model)
kinds = maps.map_kinds(maps.model_modalities(store, dataset, model))
c1, c2, c3, c4, c5 = st.columns([1, 1.5, 0.8, 0.8, 1])
split = c1.selectbox("Split", splits, index=splits.index("test") if "test" in splits else 0,
                     format_func=maps.split_label, key="explore_split")
kind = c2.selectbox("Latent", kinds, format_func=maps.kind_label, key="explore_kind",
                    help="The overlay maps z of every modality together, as in the paper's figure.")
method_key = keep("explore_method", list(METHODS)[0], (dataset, model))  # kept across page visits
# Open on UMAP once it is stored, until the curator picks a map or selects on one: a selection in hand
# keeps its map, so the background UMAP landing never redraws the map under it and drops the selection.
pinned = st.session_state.get("explore_pinned") == (dataset, model)
if not st.session_state.get("explore_method_chosen") and not pinned:
    st.session_state[method_key] = maps.opening_method(store, dataset, model, split, kind,
                                                       int(st.session_state.get("explore_seed", 42)))
method = c3.selectbox("Map", list(METHODS), format_func=maps.method_label, key=method_key,
                      on_change=lambda: st.session_state.update(explore_method_chosen=True))
seed = int(c4.number_input("Seed", min_value=0, max_value=2**31 - 1, value=42, step=1, key="explore_seed"))
by = c5.selectbox("Colour by", list(maps.COLOUR_BY), key=keep("explore_colour", list(maps.COLOUR_BY)[1]),
                  help="Cluster: the latest proposed tags of this model. Modality: use it with the overlay. "
                       "Novelty: how unusual an item is against the train split (bands at its 50/90/99% quantiles).")

if maps.umap_on_its_way(store, dataset, model, method, kind):
    @st.fragment(run_every=3)
    def wait_for_umap() -> None:
        if not maps.umap_on_its_way(store, dataset, model, method, kind):
            st.rerun()
        then = ("you can choose it under Map when ready; this PCA map stays, as it holds your selection" if pinned
                else "it replaces this PCA map here when ready")
        st.info("A UMAP map, which separates groups better than PCA, is being computed in the background since "
                f"training ended; {then}.", icon=":material/hourglass_top:")

    wait_for_umap()
elif pinned and method == "pca" and maps.background_umap_stored(store, dataset, model, split, kind, seed):
    st.caption(":material/info: The UMAP map, which separates groups better than PCA, is ready: choose it under "
               "Map. This PCA map stays while you work on its selection.")

catalog = store.catalog(dataset)
try:
    rows = maps.map_rows(store, dataset, model, split, kind, catalog)
    result = maps.load_map(store, dataset, model, split, kind, method, seed, rows=rows, compute=False)
    if result is None:
        n = len(rows.ids)
        what = f"{maps.method_label(method)} map of {n:,} points"
        if maps.needs_button(method, n):
            st.info(f"The {what} has not been computed yet; it runs on one core and can take a few minutes, "
                    "then it is stored for everyone.", icon=":material/schedule:")
            if not st.button(f"Compute the {what}", type="primary", key="explore_compute"):
                st.stop()
            with st.status(f"Computing the {what}…", expanded=True) as status:
                result = maps.load_map(store, dataset, model, split, kind, method, seed, rows=rows, on_progress=status.write)
                status.update(label=f"Computed and stored the {what}.", state="complete", expanded=False)
        else:
            with st.spinner(f"Computing the {what} (stored for next time)…"):
                result = maps.load_map(store, dataset, model, split, kind, method, seed, rows=rows)
except Exception as err:  # StudioError as one sentence; anything else logged, never a traceback
    show_error(err)
    st.stop()

proposals = store.proposals(dataset, model) if by == "cluster" else None
novelty_attrs = None
if by == "novelty":
    try:
        with st.spinner("Scoring novelty (reconstruction error and distance to the nearest tag)…"):
            ntable, novelty_attrs = archive.novelty(store, dataset, model, sorted(set(result.rows.splits.tolist())))
    except Exception as err:
        show_error(err)
        st.stop()
    groups = archive.novelty_colours(result.rows.ids, ntable, novelty_attrs)
else:
    groups = maps.colours(by, result.rows, catalog, proposals)
frame, total = maps.map_frame(result.xy, groups, max_points=len(result.xy), seed=seed)  # every item is drawn
raster = maps.use_raster(total)
view_key = "|".join(map(str, (dataset, model, split, kind, method, seed)))
views: dict = st.session_state.setdefault("explore_views", {})
alt_text = (f"{maps.method_label(method)} map of {len(frame):,} {maps.split_label(split)} items "
            f"({maps.kind_label(kind)}), coloured by {by}")
if raster:
    select = "box"
    extent = views.get(view_key) or maps.Extent.of(result.xy)
    png = raster_png(view_key, by, maps.frame_digest(frame), extent, frame)
    state = raster_map(maps.overlay_data(frame, COLOUR_TITLES[by], extent, png, alt=alt_text),
                       key=f"explore_raster_{split}_{kind}_{method}_{seed}")
else:
    select = st.radio("Select with", list(maps.SELECT_MODES), format_func=maps.SELECT_MODES.get, horizontal=True,
                      key="explore_select")
    state = st.altair_chart(maps.build_chart(frame, COLOUR_TITLES[by], select), on_select="rerun",
                            selection_mode=[select], key=f"explore_map_{split}_{kind}_{method}_{seed}_{select}",
                            alt=alt_text)

notes = [f"{len(frame):,} points" + (", drawn as an image (select with a box)" if raster else "")]
sampled = maps.sample_note(method, total)
if sampled:
    notes.append(sampled)
missing = len(result.rows.ids) - total
if missing:
    notes.append(f"{missing:,} items lack this latent and are not drawn")
notes.append(f"computed now in {result.seconds:.1f} s and stored" if result.computed else "read from the store")
if novelty_attrs is not None:
    notes.append(f"novelty against {novelty_attrs['groups']} {novelty_attrs['source']}")
if by == "cluster" and proposals is not None:
    table = proposals[0]
    notes.append(f"clusters of the proposals on the {table.attrs['split']} split" if len(table)
                 else "no proposals yet: propose tags on the Tags page")
how = ("Drag a box to select; double-click clears; zoom into a box with the button below." if raster else
       "Drag a box or click points (shift-click adds); wheel zooms, shift-drag pans, double-click clears.")
st.caption(" · ".join(notes) + ". " + how)

picked = maps.selected_rows(state, frame, select)
if raster:
    z1, z2 = st.columns([1, 1])
    box = maps.box_extent(state)
    if z1.button("Zoom into the box", disabled=box is None, key="explore_zoom",
                 help="Draws the box's region again at full resolution; the selection stays as it is."):
        views[view_key] = box
        st.rerun()
    if z2.button("Show the whole map", disabled=view_key not in views, key="explore_unzoom"):
        views.pop(view_key, None)
        st.rerun()
group_names = [str(c) for c in frame["c"].cat.categories]
whole = st.multiselect("…or select whole colour groups", group_names, key="explore_groups",
                       help="Every item of the chosen groups, including points a sample left out.")
if whole:
    in_groups = np.flatnonzero(np.isin(groups.astype(str), whole) & np.isfinite(result.xy).all(axis=1))
    picked = np.union1d(picked, in_groups)
ids = list(dict.fromkeys(result.rows.ids[picked].astype(str).tolist()))
if ids:
    st.session_state["explore_pinned"] = (dataset, model)

st.subheader(f"Selection: {len(ids):,} item{'s' if len(ids) != 1 else ''}")
if not ids:
    st.caption("Nothing selected yet: select points on the map to see the items and tag them.")
else:
    show_items(item_details(catalog, ids), limit=300)
    if need_curator(ctx):
        tag_items_form(ctx, ids, key="explore_tag", what="selected items")

# -- New and unusual: the items that fit no tag yet, most novel first -----------------------------------
st.subheader("New and unusual")
novel_splits = [s for s in maps.map_splits(store, dataset, model) if s not in ("train", maps.ALL_SPLITS)]
UPLOAD = "New material (upload, not imported)"
if not novel_splits:
    st.caption("This dataset has no split besides train to rank; upload new material below, or import it as "
               "the dataset's test or ood split.")
ref_splits = [s for s in maps.map_splits(store, dataset, model) if s != maps.ALL_SPLITS]
r1, r2 = st.columns([1, 1])
reference = r1.selectbox(
    "Calibrate against the split", ref_splits,
    key=keep("explore_novel_ref", "test" if "test" in ref_splits else ref_splits[0], (dataset, model)),
    help="Known, ordinary items the model was not trained on (test): a score is read as the share of them it "
         "beats. The train split makes nearly everything look unusual, because the model fits it best.")
false_alarm = r2.number_input("False-alarm rate (%)", min_value=0.1, max_value=50.0, step=0.5,
                              key=keep("explore_novel_fa", 5.0),
                              help="The review threshold flags this share of ordinary items too; lower it for a "
                                   "shorter list that misses more.") / 100.0


def show_ranked(what: str, spinner: str, score: Callable[[], tuple[pd.DataFrame, dict]]) -> pd.DataFrame:
    """Run a novelty ranking under a spinner (an error is its sentence and stops the page), calibrate it
    against the reference split and say how many of ``what`` are above the review threshold."""
    try:
        with st.spinner(spinner):
            ranked, nattrs = score()
            ranked, nattrs = archive.calibrated(store, dataset, model, ranked, nattrs, reference, false_alarm)
    except Exception as err:
        show_error(err)
        st.stop()
    flagged = int(ranked["review"].sum())
    st.caption(f"**{flagged:,} of {len(ranked):,} {what} to review**: their score is above what only "
               f"{nattrs['false_alarm']:.1%} of the {nattrs['reference_items']:,} {reference} items reach "
               f"(threshold {nattrs['threshold']:.2f}); work down the list. The percentile column says how many "
               f"{reference} items score lower; the reference is {nattrs['groups']} {nattrs['source']}.")
    if reference == "train":
        st.caption(":material/warning: Calibrated against the train split, which the model fits best: expect too many "
                   "items above the threshold. Calibrate against a split of ordinary items the model has not seen.")
    return ranked


what = st.radio("Rank", [*(["A split of this dataset"] if novel_splits else []), UPLOAD], horizontal=True,
                key="explore_novel_what")
if what == UPLOAD:
    st.caption("Feature files of items that are not in the store yet, in any import layout (split folders or "
               "files such as ood/image.npy, an .npz, or a .zip), with some or all of the model's modalities. They "
               "are scored against this dataset and not saved; import them on the Data page to tag them.")
    files = st.file_uploader("Feature files or one .zip", accept_multiple_files=True, key="explore_novel_upload")
    pairs = uploaded_files(files)
    if pairs:
        top = int(st.number_input("Show the top", min_value=5, max_value=5_000, value=50, step=5, key="explore_novel_up_top"))
        ranked = show_ranked("uploaded items", f"Encoding the upload with model {model} and scoring it…",
                             lambda: archive.upload_novelty(store, dataset, model, pairs, upload_limit_bytes()))
        show_items(ranked.rename(columns={"nearest": "nearest tag"}), limit=top,
                   extra_first=["item_id", "split", "review", "percentile", "score", "recon", "distance", "nearest tag"],
                   key="explore_novel_up_table")
else:
    n1, n2 = st.columns([1, 1])
    nsplit = n1.selectbox("Rank the items of", novel_splits, index=novel_splits.index("ood") if "ood" in novel_splits else 0,
                          key="explore_novel_split")
    top = int(n2.number_input("Show the top", min_value=5, max_value=5_000, value=50, step=5, key="explore_novel_top"))
    if st.toggle("Rank them by novelty", key="explore_novel_on",
                 help="Score = reconstruction error + distance to the nearest accepted tag, each standardized against "
                      "the train split (docs/results.md, 'Novelty'). Higher = more unusual."):
        ranked = show_ranked(f"{nsplit} items", f"Scoring the {nsplit} items…",
                             lambda: archive.novelty(store, dataset, model, [nsplit]))
        head = ranked.head(top)
        details = item_details(catalog, head["item_id"].tolist()).drop(columns=["split"], errors="ignore")
        shown = head.rename(columns={"nearest": "nearest tag"}).merge(details, on="item_id", how="left")
        show_items(shown, limit=top, extra_first=["item_id", "review", "percentile", "score", "recon", "distance", "nearest tag"],
                   key="explore_novel_table")
        if need_curator(ctx):
            tag_items_form(ctx, head["item_id"].astype(str).tolist(), key="explore_novel_tag", what=f"top {len(head)} novel items")
