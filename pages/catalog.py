"""Catalog: the tagged catalog of a dataset as a filterable table, downloadable as CSV (safe for
spreadsheets), Parquet or JSON, shown a page at a time. The bytes come from ``store.export.to_bytes``, so an unfiltered
download is byte for byte what ``python -m mmae_core export`` writes. Files are built when a button is
clicked (Streamlit's deferred download): at 29,000 items CSV and JSON take about a second each, which
the page would otherwise pay on every rerun; ``ui.widgets.download_button`` says why a click must not
rerun the page."""
from __future__ import annotations

import streamlit as st

from store import CatalogFilter
from store.export import FORMATS, json_loss
from ui.tagging import catalog_download, page_context, show_flash
from ui.widgets import download_button

UNTAGGED = "(untagged)"
MIME = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet", "json": "application/json"}
LABELS = {"csv": "CSV (safe for spreadsheets)", "parquet": "Parquet", "json": "JSON"}
PAGE_SIZES = (50, 100, 500)

st.title("Catalog")
ctx = page_context(with_model=False)
store, dataset = ctx.store, ctx.dataset
show_flash()

choices = store.catalog_choices(dataset)
total, tagged = choices["items"], choices["tagged"]
st.caption(f"Dataset **{dataset}**: {total:,} items, {tagged:,} tagged. Status tells what is left to do: "
           "accepted (from a proposal), manual (tagged by hand), proposed (in a pending proposal), rejected, untagged.")
if tagged == 0:
    st.info("No item is tagged yet: accept proposed tags on the Tags page, or select items on the Explore page "
            "and tag them.", icon=":material/info:")

c1, c2, c3, c4 = st.columns(4)
tags = c1.multiselect("Tag", [UNTAGGED, *choices["tags"]], key="catalog_tags")
statuses = c2.multiselect("Status", choices["statuses"], key="catalog_status")
curators = c3.multiselect("Curator", choices["curators"], key="catalog_curators")
splits = c4.multiselect("Split", choices["splits"], key="catalog_splits")
text = st.text_input("Text in the id, label, tag or metadata", key="catalog_text", placeholder="e.g. violin")

# Filters, count and the page run in DuckDB: only the rows shown come into the page (a million-item
# catalog in pandas took seconds and about a gigabyte on every rerun).
flt = CatalogFilter(tags=tuple(t for t in tags if t != UNTAGGED), untagged=UNTAGGED in tags, statuses=tuple(statuses),
                    curators=tuple(curators), splits=tuple(splits), text=text)
filtered = flt != CatalogFilter()
p1, p2 = st.columns([1, 1])
size = int(p2.selectbox("Rows per page", PAGE_SIZES, index=1, key="catalog_page_size"))
page_no = int(st.session_state.get("catalog_page") or 1)
shown, matches = store.catalog_page(dataset, flt, (page_no - 1) * size, size)
pages = max(1, -(-matches // size))
if page_no > pages:  # the filters shrank the list under the page asked for: show its last page
    st.session_state["catalog_page"] = page_no = pages
    shown, matches = store.catalog_page(dataset, flt, (page_no - 1) * size, size)
p1.number_input(f"Page (of {pages:,})", min_value=1, max_value=pages, step=1, key="catalog_page")
first = (page_no - 1) * size
st.markdown(f"**{matches:,}** of {total:,} items" + (f" · rows {first + 1:,}–{first + len(shown):,}" if len(shown) else ""))
st.dataframe(shown, hide_index=True, width="stretch")

st.markdown("**Download " + ("the filtered rows" if filtered else "the whole catalog") + "**")
cols = st.columns(len(FORMATS))
for col, fmt in zip(cols, FORMATS):
    download_button(LABELS[fmt], catalog_download(store, dataset, flt if filtered else None, fmt), container=col,
                    file_name=f"{dataset}-catalog.{fmt}", mime=MIME[fmt], key=f"catalog_download_{fmt}",
                    icon=":material/download:", disabled=not matches)
loss = json_loss(store.float_meta(dataset), "json")  # JSON has no infinity: say so before the download, as the CLI does
if loss:
    st.caption(("The JSON download of the whole catalog: " if filtered else "The JSON download: ") + loss)
st.caption(f"Without filters these are exactly the files `python -m mmae_core export --dataset {dataset} "
           "--format csv|parquet|json --out FILE` writes.")
