"""Search: the items nearest a query by another modality's latent (or the fused one). The query is an
item of the dataset in one of its modalities, or an uploaded feature vector encoded with the model's
own standardization. Results show metadata and tags and can be tagged at once (one decision). The
retrieval metrics of the model (every ordered modality pair) are computed once per model and cached.
Query, index and metrics are ``studio.search`` (the CLI's ``search``/``search-eval``); this page
only arranges them."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from mmae_core.errors import DataError, StudioError
from mmae_core.search.retrieval import METRICS
from studio.search import (
    SPACE_WORDS, SPACES, Query, fell_back, query_latent, search_eval, search_items, with_details, worst_pairs,
)
from store import CatalogFilter, Store
from ui import maps
from ui.tagging import (
    need_curator, page_context, show_error, show_flash, show_items, tag_items_form,
)

MODES = {"item": "An item of the dataset", "vector": "An uploaded feature vector (.npy)"}
MAX_CHOICES = 300


@st.cache_data(show_spinner=False, max_entries=16)
def _metrics(_store: Store, path: str, dataset: str, model: str, model_id: int, split: str, metric: str,
             baselines: tuple[str, ...], space: str) -> pd.DataFrame:
    """Retrieval metrics of a model on a split: a model's latents never change, so (path, model id) is the key."""
    return search_eval(_store, dataset, model, split=split, metric=metric, baseline=baselines, space=space)


def _dims(store: Store, dataset: str) -> dict[str, int]:
    """Modality -> feature dimension, from the store's listing ("image:50, audio:1024, ...")."""
    ds = store.list_datasets()
    row = ds[ds["name"] == dataset]
    out = {}
    for part in str(row.iloc[0]["modalities"]).split(",") if len(row) else []:
        name, _, dim = part.partition(":")
        if dim.strip().isdigit():
            out[name.strip()] = int(dim)
    return out


st.title("Search")
ctx = page_context()
store, dataset, model = ctx.store, ctx.dataset, ctx.model
st.caption(f"Dataset **{dataset}** · model **{model}**: find the items whose latent in one modality is nearest a "
           "query from another, e.g. the clips whose pictures match this caption.")
show_flash()

models = store.list_models(dataset)
model_id = int(models.loc[models["name"] == model, "id"].iloc[0])
modalities = maps.model_modalities(store, dataset, model)
splits = [s for s in maps.map_splits(store, dataset, model) if s != maps.ALL_SPLITS]
if len(modalities) < 1:
    st.info(f"Model '{model}' has no per-modality latents, so there is nothing to search across; retrain it.")
    st.stop()

mode = st.radio("Query", list(MODES), format_func=MODES.get, horizontal=True, key="search_mode")
c1, c2, c3, c4, c5, c6 = st.columns([1, 1, 1, 0.7, 0.8, 0.8])
split = c1.selectbox("Split to search", splits, index=splits.index("test") if "test" in splits else 0, key="search_split")
source = c2.selectbox("Query modality", modalities, key="search_from")
targets = [m for m in modalities if m != source] + [m for m in modalities if m == source] + ["fused"]
target = c3.selectbox("Search in", targets, format_func=lambda k: "fused latent" if k == "fused" else f"{k} latents",
                      key="search_to")
top = int(c4.number_input("Results", min_value=1, max_value=200, value=10, step=1, key="search_top"))
metric = c5.selectbox("Similarity", list(METRICS), key="search_metric")
space = c6.selectbox("Compare in", list(SPACES), format_func=SPACE_WORDS.get, key="search_space",
                     help="Tag space (default): the chance that two items carry the same of the model's own tags, "
                          "averaged with their shared-space similarity; it finds an item's class across modalities "
                          "most often. Shared space: only the directions the model's per-modality latents share, "
                          "weighted by how strongly (a CCA fitted on the train split); it finds the same item's "
                          "other modality a little more often. Raw latents: the latents as stored.")

query: Query | None = None
query_item: str | None = None
try:
    if mode == "item":
        # The choices come from DuckDB, filtered and cut to MAX_CHOICES there: neither the catalog nor
        # the split's latents are read whole (at 1M items that was seconds and 512 MB per rerun).
        text = st.text_input("Find the query item (id, title, label…)", key="search_find", placeholder="e.g. violin")
        matches, n_matches = store.catalog_page(dataset, CatalogFilter(splits=(split,), text=text or ""), 0, MAX_CHOICES)
        if not n_matches:
            st.warning("No item of this split matches that text; try another word.")
        else:
            title_col = next((c for c in ("title", "caption") if c in matches.columns), None)
            titles = dict(zip(matches["item_id"], matches[title_col])) if title_col else {}
            choices = matches["item_id"].astype(str).tolist()
            query_item = st.selectbox(
                f"Query item ({n_matches:,} match{'es' if n_matches != 1 else ''}"
                + (f", first {MAX_CHOICES} listed" if n_matches > MAX_CHOICES else "") + ")",
                choices, key="search_item",
                format_func=lambda i: f"{i} — {titles[i]}" if isinstance(titles.get(i), str) else i,
            )
            try:
                query = query_latent(store, dataset, model, source, item=query_item, split=split)
            except DataError:  # the item lacks this modality: a hint, not an error
                st.warning(f"Item '{query_item}' has no {source} features; pick another query modality or item.")
    else:
        dim = _dims(store, dataset).get(source)
        up = st.file_uploader(f"A {source} feature vector ({dim} values, .npy)", type=["npy"], key="search_upload",
                              help="One vector saved with numpy.save; it is standardized as the model's training data was.")
        if up is None:
            st.caption(f"Upload a .npy file holding one {source} feature vector of {dim} values.")
        else:
            query = query_latent(store, dataset, model, source, vector=up.getvalue(), split=split, vector_name=up.name)
except StudioError as err:
    show_error(err)
    query = None

if query is not None:
    try:
        with st.spinner("Searching (a model's first search fits its search space and builds the index)…"):
            hits = search_items(store, dataset, model, query, target, top=top, metric=metric, space=space)
            found = with_details(hits, store.catalog_rows(dataset, hits["item_id"].tolist()))
    except StudioError as err:
        show_error(err)
        found = None
    if found is not None:
        found = found.rename(columns={"score": "cosine" if metric == "cosine" else "distance"})
        found[found.columns[2]] = found[found.columns[2]].round(4)
        what = f"'{query_item}' by its {source} latent" if query_item else f"the uploaded {source} vector"
        st.subheader(f"{len(found)} nearest {split} items to {what}, in the {target} latents")
        if hits.attrs["space"] != space:
            said = fell_back(space, hits.attrs["space"])
            st.caption(said[0].upper() + said[1:] + ".")
        if query_item is not None and query_item in set(found["item_id"]):
            st.caption(f"The query item itself is at rank {int(found.loc[found['item_id'] == query_item, 'rank'].iloc[0])}.")
        show_items(found, limit=top)
        if need_curator(ctx):
            chosen = st.multiselect("Results to tag", found["item_id"].tolist(), default=found["item_id"].tolist(),
                                    key=f"search_chosen_{query_item}_{target}_{top}")
            tag_items_form(ctx, chosen, key="search_tag", what="chosen results")

# -- how good is this search? --------------------------------------------------------------------
metric_split = "test" if "test" in splits else splits[0]
st.subheader(f"Retrieval quality of '{model}' on the {metric_split} split, in the {SPACE_WORDS[space]}")
compare = len(modalities) > 1 and st.toggle(
    "Show MCCA beside the model", value=True, key="search_baseline",
    help="Multiset CCA, a linear baseline fitted on the train split's features: each modality's canonical "
         "variates are its search space. Where it retrieves as well as the model, the model adds nothing here.")
supervised = len(modalities) > 1 and st.toggle(
    "Show what the labels allow (a supervised search)", value=False, key="search_supervised",
    help="A search that knows the classes: classifiers fitted on the train split's labels rank the targets by "
         "the chance that they share the query's class. Its class P@10 estimates what these features allow; "
         "where the model is far below it, a better model could still gain. Fitting takes seconds, "
         "about half a minute on the full demo.")
try:
    with st.spinner("Measuring every ordered pair of modalities (once per model)…"):
        table = _metrics(store, str(store.path), dataset, model, model_id, metric_split, metric,
                         ("mcca",) * compare + ("supervised",) * supervised, space)
except StudioError as err:
    show_error(err)
    st.stop()
st.dataframe(table, hide_index=True, width="stretch", column_config={
    "p_at_10": st.column_config.NumberColumn("class P@10", format="%.3f",
                                             help="Share of the 10 nearest items (the query excluded) with the query's label."),
    "map": st.column_config.NumberColumn("class mAP", format="%.3f"),
    "recall_at_1": st.column_config.NumberColumn("R@1", format="%.3f", help="The same item's latent is the first result."),
    "recall_at_5": st.column_config.NumberColumn("R@5", format="%.3f"),
    "recall_at_10": st.column_config.NumberColumn("R@10", format="%.3f"),
    "median_rank": st.column_config.NumberColumn("median rank", format="%.0f"),
})
n = int(table["queries"].max()) if len(table) else 0
if n:
    st.caption(f"Chance level: class P@10 ≈ the share of the largest label, R@10 ≈ {min(1.0, 10 / n):.3f} for {n:,} items. "
               "A paper-preset MMAE is not trained to align modalities; the aligned preset is.")
worst = worst_pairs(table)
if compare and worst.notna().all() and {"mmae", "mcca"} <= set(worst.index):
    verdict = ("the model is ahead" if worst["mmae"] > worst["mcca"] else
               "MCCA is ahead: here the model adds nothing to search" if worst["mmae"] < worst["mcca"] else "they tie")
    st.caption(f"Worst modality pair, class P@10: model {worst['mmae']:.3f}, MCCA {worst['mcca']:.3f} ({verdict}).")
if supervised and worst.notna().all() and {"mmae", "supervised"} <= set(worst.index):
    st.caption(f"Worst modality pair, class P@10: model {worst['mmae']:.3f}, supervised search {worst['supervised']:.3f} "
               "(it knows the classes: about what these features allow).")
