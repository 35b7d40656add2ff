"""What the Explore, Tags, Catalog and Search pages share: the current dataset/model/curator (from
``ui.state``), decisions run as callbacks with a one-sentence outcome, the tag picker, and the catalog
filter.

Decisions run in ``on_click`` callbacks: Streamlit runs a callback before the page script, so the
page that follows already shows the store after the decision (a recoloured map, the new status) in
the same rerun. The outcome is a ``ui.state.flash`` message (app.py shows it at the top; a page run
on its own shows it under its title). A ``StudioError`` becomes its own sentence; anything else is
logged with its traceback and shown as one sentence too (``ui.widgets.internal_error_sentence``),
because a curator never sees a traceback and the store's transaction has rolled back.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from mmae_core.errors import StudioError
from store import CatalogFilter, Store, to_bytes
from ui import state
from ui.widgets import internal_error_sentence, need_dataset, need_model

log = logging.getLogger("mmae_studio")

# Plain text, like the other pseudo-options ("(anyone)"): an emoji showed as an empty box where the
# browser's font lacks it. The new name's field carries a Material icon instead (always available).
NEW_TAG = "(new tag…)"
NO_TAG = "(remove the tag)"


@dataclass
class PageContext:
    """The store and the current dataset/model/curator of this session."""

    store: Store
    dataset: str
    model: str | None
    curator: str


def current_curator() -> str:
    return state.curator()


def page_context(with_model: bool = True) -> PageContext:
    """The session's store, dataset, model and curator; when one is missing the page says what to do
    next (``ui.widgets.need_dataset``/``need_model``) and stops."""
    store = state.current_store()
    dataset = need_dataset(store)
    model = need_model(store, dataset) if with_model else None
    return PageContext(store, dataset, model, current_curator())


def need_curator(ctx: PageContext) -> bool:
    """True when decisions can be recorded; else says how to enter a name (the page stays browsable)."""
    if ctx.curator:
        return True
    st.warning("Type your name in the sidebar's **Curator** field to tag: every decision is saved with it.",
               icon=":material/person:")
    return False


# -- decisions ------------------------------------------------------------------------------------
def show_flash() -> None:
    """Outcomes of the last decision not shown yet (app.py shows them first when the frame runs)."""
    state.show_flash()


def run_decision(action: Callable[[], object], describe: Callable[[object], str] | None = None) -> object | None:
    """Run a store action; its summary (or its error, as one sentence) is flashed; the result or None."""
    try:
        result = action()
    except StudioError as err:
        state.flash(str(err), "error")
        return None
    except Exception as err:  # noqa: BLE001 - a bug of ours: logged, shown as one sentence
        log.exception("a tag decision failed")
        state.flash(internal_error_sentence(err), "error")
        return None
    text = describe(result) if describe else (result.get("summary") if isinstance(result, dict) else str(result))
    state.flash((text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")) if text else "Saved.", "success")
    return result


def show_error(err: BaseException) -> None:
    """One sentence in the page for an error raised while rendering."""
    if isinstance(err, StudioError):
        st.error(str(err), icon=":material/error:")
    else:
        log.exception("page failed", exc_info=err)
        st.error(internal_error_sentence(err), icon=":material/error:")


# -- the tag picker -------------------------------------------------------------------------------
def existing_tags(store: Store, dataset: str) -> list[str]:
    counts = store.tag_counts(dataset)
    return sorted(counts["tag"].astype(str).tolist()) if len(counts) else []


def tag_picker(store: Store, dataset: str, key: str, allow_remove: bool = True, tags: list[str] | None = None) -> None:
    """An existing tag, a new name, or (optionally) 'remove the tag'; read back with ``picked_tag``.
    ``tags``: the dataset's tags when the page has read them already."""
    options = [NEW_TAG, *(existing_tags(store, dataset) if tags is None else tags)] + ([NO_TAG] if allow_remove else [])
    c1, c2 = st.columns(2)
    with c1:
        st.selectbox("Tag", options, key=f"{key}_pick", help="Pick an existing tag, or a new tag and type its name.")
    with c2:
        st.text_input("New tag name", key=f"{key}_new", disabled=st.session_state.get(f"{key}_pick", NEW_TAG) != NEW_TAG,
                      icon=":material/new_label:",
                      placeholder="e.g. dogs barking")


def picked_tag(key: str) -> tuple[bool, str | None]:
    """(remove?, name) from a ``tag_picker``; the name may be empty (the store refuses it in a sentence)."""
    pick = st.session_state.get(f"{key}_pick", NEW_TAG)
    if pick == NO_TAG:
        return True, None
    if pick == NEW_TAG or pick is None:
        return False, str(st.session_state.get(f"{key}_new") or "")
    return False, str(pick)


def picked_existing(key: str) -> bool:
    """Whether a ``tag_picker``'s tag was picked from the existing tags (the store then refuses it if
    another curator renamed or merged it away since the list was drawn)."""
    return st.session_state.get(f"{key}_pick", NEW_TAG) not in (NEW_TAG, NO_TAG, None)


def tag_items_callback(store: Store, dataset: str, ids_key: str, picker_key: str) -> None:
    """``on_click``: tag the item ids held in ``st.session_state[ids_key]`` as the picked tag (one decision)."""
    ids = list(st.session_state.get(ids_key) or [])
    remove, name = picked_tag(picker_key)
    curator = current_curator()
    existing = picked_existing(picker_key)
    if run_decision(lambda: store.set_items(dataset, ids, None if remove else name, curator, existing=existing)):
        st.session_state[f"{picker_key}_new"] = ""


def tag_items_form(ctx: PageContext, ids: list[str], key: str, what: str = "selected items") -> None:
    """Tag the given items at once: one transaction, one line in the audit trail, one step of undo."""
    st.session_state[f"{key}_ids"] = list(ids)
    tag_picker(ctx.store, ctx.dataset, key)
    st.button(
        f"Tag the {len(ids):,} {what}", key=f"{key}_go", type="primary", disabled=not ids or not ctx.curator,
        on_click=tag_items_callback, args=(ctx.store, ctx.dataset, f"{key}_ids", key),
        help=None if ctx.curator else "Enter your name in the sidebar first.",
    )


# -- the catalog ----------------------------------------------------------------------------------
def catalog_download(store: Store, dataset: str, flt: CatalogFilter | None, fmt: str) -> Callable[[], bytes]:
    """What a Catalog download button builds when clicked: the CLI's export bytes of the whole catalog,
    or of the rows the filter matches (chosen in DuckDB, in catalog order)."""
    def build() -> bytes:
        full = store.catalog(dataset)
        if flt is not None:
            full = full[full["item_id"].isin(store.catalog_ids(dataset, flt))]
        return to_bytes(full, fmt)
    return build


def item_details(catalog: pd.DataFrame, ids: list[str] | np.ndarray) -> pd.DataFrame:
    """Catalog rows of ``ids`` in that order (id, split, label, metadata, tag, status ...)."""
    idx = catalog.set_index("item_id")
    ids = [str(i) for i in ids]
    out = idx.reindex(ids)
    out.index.name = "item_id"
    return out.reset_index()


def representative_titles(catalog: pd.DataFrame, representatives: pd.Series, n: int = 3) -> list[str]:
    """Per proposal, the titles (else captions, else ids) of its first ``n`` representative items."""
    col = next((c for c in ("title", "caption") if c in catalog.columns), None)
    # a plain dict, not a reindex per proposal: this runs on every rerun of the Tags page
    names = dict(zip(catalog["item_id"].astype(str), catalog[col])) if col else {}
    out = []
    for reps in representatives:
        ids = [str(i) for i in list(reps)[:n]]
        out.append(" · ".join(t if isinstance(t := names.get(i), str) and t else i for i in ids))
    return out


DETAIL_DROP = ("model", "cluster", "tagged_at")


def show_items(df: pd.DataFrame, limit: int = 500, extra_first: list[str] | None = None, key: str | None = None) -> None:
    """A compact item table: id, label, tag, status and metadata (curation details are in the catalog)."""
    cols = [c for c in df.columns if c not in DETAIL_DROP]
    if extra_first:
        cols = [*extra_first, *[c for c in cols if c not in extra_first]]
    shown = df[cols].head(limit)
    st.dataframe(shown, hide_index=True, width="stretch", key=key,
                 column_config={"tag": st.column_config.TextColumn("tag", width="medium")})
    if len(df) > limit:
        st.caption(f"Showing the first {limit:,} of {len(df):,} items; the Catalog page has them all.")
