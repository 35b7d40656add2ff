"""Catalog: the tagged catalog of a dataset as a filterable table, downloadable as CSV (safe for
spreadsheets), Parquet or JSON. The bytes come from ``store.export.to_bytes``, so an unfiltered
download is byte for byte what ``python -m mmae_core export`` writes. Files are built when a button is
clicked (Streamlit's deferred download): at 29,000 items CSV and JSON take about a second each, which
the page would otherwise pay on every rerun; ``ui.widgets.download_button`` says why a click must not
rerun the page."""
from __future__ import annotations

from functools import partial

import streamlit as st

from store.export import FORMATS, json_loss, to_bytes
from ui.tagging import filter_catalog, page_context, show_flash
from ui.widgets import download_button

UNTAGGED = "(untagged)"
MIME = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet", "json": "application/json"}
LABELS = {"csv": "CSV (safe for spreadsheets)", "parquet": "Parquet", "json": "JSON"}

st.title("Catalog")
ctx = page_context(with_model=False)
store, dataset = ctx.store, ctx.dataset
show_flash()

catalog = store.catalog(dataset)
tagged = int(catalog["tag"].notna().sum())
st.caption(f"Dataset **{dataset}**: {len(catalog):,} items, {tagged:,} tagged. Status tells what is left to do: "
           "accepted (from a proposal), manual (tagged by hand), proposed (in a pending proposal), rejected, untagged.")
if tagged == 0:
    st.info("No item is tagged yet: accept proposed tags on the Tags page, or select items on the Explore page "
            "and tag them.", icon=":material/info:")


def options(col: str) -> list[str]:
    return sorted(str(v) for v in catalog[col].dropna().unique())


c1, c2, c3, c4 = st.columns(4)
tags = c1.multiselect("Tag", [UNTAGGED, *options("tag")], key="catalog_tags")
statuses = c2.multiselect("Status", options("status"), key="catalog_status")
curators = c3.multiselect("Curator", options("curator"), key="catalog_curators")
splits = c4.multiselect("Split", options("split"), key="catalog_splits")
text = st.text_input("Text in the id, label, tag or metadata", key="catalog_text", placeholder="e.g. violin")

shown = filter_catalog(catalog, tags=[t for t in tags if t != UNTAGGED], statuses=statuses, curators=curators,
                       splits=splits, text=text, untagged=UNTAGGED in tags)
filtered = len(shown) != len(catalog)
st.markdown(f"**{len(shown):,}** of {len(catalog):,} items")
st.dataframe(shown, hide_index=True, width="stretch")

st.markdown("**Download " + ("the filtered rows" if filtered else "the whole catalog") + "**")
cols = st.columns(len(FORMATS))
for col, fmt in zip(cols, FORMATS):
    download_button(LABELS[fmt], partial(to_bytes, shown, fmt), container=col, file_name=f"{dataset}-catalog.{fmt}",
                    mime=MIME[fmt], key=f"catalog_download_{fmt}", icon=":material/download:", disabled=not len(shown))
loss = json_loss(shown, "json")  # JSON has no infinity: say so before the download, as the CLI does
if loss:
    st.caption(f"The JSON download: {loss}")
st.caption(f"Without filters these are exactly the files `python -m mmae_core export --dataset {dataset} "
           "--format csv|parquet|json --out FILE` writes.")
