"""Tags: the cluster browser. Each proposed tag with its size, cohesion, purity, majority label and
representative items; accept, rename, merge, reject (one by one or every proposal above a purity),
move single items, undo, and the audit trail. Every decision is one store transaction with the
curator's name; the logic is in ``store`` (tags, tag_batch) and ``studio.pipeline``."""
from __future__ import annotations

import datetime as dt
import functools

import pandas as pd
import streamlit as st

from studio import pipeline
from mmae_core.errors import StudioError
from store.tags import MANUAL_CHOICES
from ui import archive, maps, state
from mmae_core.clustering.graph import AUTO, parse_k_value
from ui.widgets import dataset_summary, k_suggestion
from ui.tagging import (
    existing_tags, item_details, need_curator, page_context, picked_existing, picked_tag, representative_titles, run_decision,
    show_error, show_flash, show_items, tag_picker,
)

ANYONE = "(anyone)"
MEMBERS_SHOWN = 500  # a proposal's members listed at once: a 10,000-item cluster is read a page, not whole
MANUAL_LABELS = {"keep": "keep their tag", "replace": "replace it with the proposal's"}


def manual_choice() -> str:
    return str(st.session_state.get("tags_manual") or "keep")
ANY_TAG = "(any tag)"

st.title("Tags")
ctx = page_context()
store, dataset, model = ctx.store, ctx.dataset, ctx.model
st.caption(f"Dataset **{dataset}** · model **{model}**: proposed tags are clusters of the model's fused latents. "
           "Every decision is saved at once, with your name, and can be undone.")
show_flash()


@functools.cache  # defined anew on every run of the page: read once per run (two sections ask)
def latent_splits() -> list[str]:
    """The splits with latents of the model."""
    return [s for s in maps.map_splits(store, dataset, model) if s != maps.ALL_SPLITS]


def propose_form(first: bool) -> None:
    splits = latent_splits()
    default_split = "test" if "test" in splits else splits[0]
    summary = dataset_summary(store, dataset)
    suggestion = k_suggestion(summary, default_split)
    with st.form("tags_propose"):
        c1, c2, c3 = st.columns(3)
        k_text = c1.text_input("Number of proposed tags (k)", key=state.keep("tags_k", suggestion.k_text, dataset),
                               help="auto: the number is found from the data (Leiden on the latents' neighbour graph; "
                                    "items in no group form one 'unassigned' proposal). Or a number, clustered by KMeans "
                                    f"as in the paper ({suggestion.reason}: {suggestion.k}). The Compare page shows how each k scores.")
        split = c2.selectbox("Split", splits, index=splits.index(default_split))
        seed = c3.number_input("Seed", min_value=0, max_value=2**31 - 1, value=42, step=1)
        go = st.form_submit_button("Propose tags" if first else "Propose again (replaces the list below)",
                                   type="primary" if first else "secondary")
    if go:
        try:
            k = parse_k_value(k_text)
            how = "a number of tags found from the data" if k == AUTO else f"{k} proposed tags"
            with st.spinner(f"Clustering the {split} items of {dataset} into {how}…"):
                table = pipeline.propose_tags(store, dataset, model, k, split, int(seed))
        except StudioError as err:
            st.error(str(err))
            return
        a = table.attrs
        found = f" (k = {a['k']} found by Leiden)" if a.get("k_found_by") == "leiden" else ""
        state.flash(f"Proposed {len(table)} tags on the {split} split{found}; review them below.")
        st.rerun()


try:
    table = store.proposal_table(dataset, model)  # k rows; members are read a page at a time below
except StudioError as err:
    show_error(err)
    st.stop()

if not len(table):
    st.info(f"Model '{model}' has no proposed tags yet: cluster its latents into proposals to review.",
            icon=":material/info:")
    propose_form(first=True)
    st.stop()

curator = ctx.curator
can_decide = need_curator(ctx)
attrs = table.attrs
counts = table["status"].value_counts()
m1, m2, m3, m4 = st.columns(4)
m1.metric("Proposed tags", f"{len(table)}", help=f"k = {attrs['k']} on the {attrs['split']} split")
m2.metric("Pending", int(counts.get("proposed", 0)))
m3.metric("Accepted", int(counts.get("accepted", 0)))
m4.metric("Rejected", int(counts.get("rejected", 0)))
st.caption(f"Latest proposals of model '{model}': k = {attrs['k']} on the {attrs['split']} split, "
           f"made {pd.Timestamp(attrs['created_at']):%Y-%m-%d %H:%M} UTC.")

# The page was one long scroll: review, rename/merge, the modality check and the audit trail are tabs.
# A key keeps the open tab across reruns: without one, a decision's flash message above shifted the tabs,
# and the browser reopened the first tab after a rename (seen in Chromium).
t_review, t_rename, t_conflicts, t_trail = st.tabs(
    [":material/fact_check: Review proposals", ":material/edit: Rename or merge",
     ":material/call_split: Modalities disagree", ":material/history: Audit trail"],
    key="tags_tab")
with t_review:
    # -- undo and the batch decision -----------------------------------------------------------------
    history = store.history(dataset)
    undoable = history[(history["action"] != "undo") & (~history["undone"])]
    u1, u2 = st.columns([1, 1])
    with u1:
        st.markdown("**Undo the last decision**")
        if len(undoable):
            last = undoable.iloc[0]
            st.caption(f"#{last['id']} by {last['curator']}: {last['summary']}")
        else:
            st.caption("Nothing to undo.")
        st.button("Undo", key="tags_undo", icon=":material/undo:", disabled=not (can_decide and len(undoable)),
                  on_click=lambda: run_decision(lambda: store.undo(dataset, curator)))
    st.radio("Items already tagged by hand", MANUAL_CHOICES, key=state.keep("tags_manual", "keep"),
             format_func=MANUAL_LABELS.get, horizontal=True,
             help="What Accept does to items a curator tagged by hand: keep their tag (the default) or replace it "
                  "with the proposal's. The audit trail records the choice.")
    with u2:
        st.markdown("**Accept every pending proposal with purity ≥**")
        has_purity = table["purity"].notna().any()
        threshold = st.slider("Purity threshold", 0.0, 1.0, 0.9, 0.05, key="tags_purity", label_visibility="collapsed",
                              disabled=not has_purity)
        pending = table[(table["status"] == "proposed") & (table["purity"] >= threshold)]
        hand_all = store.hand_tagged_in(dataset, model, None, float(threshold)) if len(pending) else {"items": 0}
        if hand_all["items"]:
            st.caption(f":material/back_hand: {hand_all['items']:,} of these items already carry a tag set by hand; "
                       "the choice below says whether they keep it.")
        st.button(f"Accept {len(pending)} proposal{'s' if len(pending) != 1 else ''} ({int(pending['size'].sum()):,} items)",
                  key="tags_accept_all", disabled=not (can_decide and len(pending)),
                  on_click=lambda: run_decision(
                      lambda: store.accept_many(dataset, model, None, curator,
                                                min_purity=float(st.session_state["tags_purity"]),
                                                manual=manual_choice())),
                  help=None if has_purity else "These items have no labels, so proposals have no purity; accept them one by one.")

    # -- the list ------------------------------------------------------------------------------------
    st.subheader("Proposed tags")
    cluster = st.session_state.get("tags_cluster")
    cluster = int(cluster) if cluster in set(table["cluster"].astype(int)) else int(table["cluster"].iloc[0])
    members = store.proposal_members(dataset, model, cluster, limit=MEMBERS_SHOWN)
    # Only the items this page shows (three representatives per proposal, the reviewed proposal's
    # representatives and members), not the whole catalog: it keeps a decision's rerun short.
    shown_ids = [str(i) for reps in table["representatives"] for i in list(reps)[:3]]
    shown_ids += [str(i) for i in table.set_index("cluster").loc[cluster, "representatives"]] + members
    catalog = store.catalog_rows(dataset, shown_ids)
    view = table[["cluster", "name", "status", "tag", "size", "cohesion", "purity", "majority_label"]].copy()
    view.attrs = {}
    view["representative items"] = representative_titles(catalog, table["representatives"])
    st.dataframe(view, hide_index=True, width="stretch", column_config={
        "cluster": st.column_config.NumberColumn("cluster", format="%d"),
        "cohesion": st.column_config.NumberColumn("cohesion", format="%.3f", help="Mean Silhouette of the cluster's items."),
        "purity": st.column_config.ProgressColumn("purity", min_value=0.0, max_value=1.0, format="%.2f",
                                                  help="Share of the items carrying the majority label."),
        "name": st.column_config.TextColumn("name", width="medium"),
        "tag": st.column_config.TextColumn("tag", width="medium"),  # was cut off ("four or")
        "majority_label": "majority label",
        "representative items": st.column_config.TextColumn(
            "representative items", help="Titles of the items nearest the cluster's centre; pick the proposal below for details.",
            width="large"),
    })

    by_cluster = table.set_index("cluster")
    tags = existing_tags(store, dataset)


    def describe(c: int) -> str:
        # Only what a decision cannot change (the proposed name and size; status and tag are in the table
        # above and the box below). Streamlit sends a selectbox's choice back as its label, and the browser
        # keeps the label it was given when the choice was made: had the label changed since (an accept
        # turns "proposed" into "accepted", here or in another session), the next click would find no such
        # option, the page would jump to the first proposal, and Accept/Reject would read the label text
        # instead of the cluster number (a ValueError traceback).
        r = by_cluster.loc[c]
        return f"{c:02d} · {r['name']} ({int(r['size'])} items)"


    picked = st.selectbox("Review a proposal", table["cluster"].astype(int).tolist(), format_func=describe,
                          key="tags_cluster")
    if picked != cluster:  # cannot happen with Streamlit's widget state; kept so the page never shows the wrong items
        cluster = int(picked)
        members = store.proposal_members(dataset, model, cluster, limit=MEMBERS_SHOWN)
        catalog = store.catalog_rows(dataset, [str(i) for i in by_cluster.loc[cluster, "representatives"]] + members)
    row = by_cluster.loc[cluster]
    with st.container(border=True):
        a, b, c, d = st.columns(4)
        a.metric("Items", int(row["size"]))
        b.metric("Cohesion", "—" if pd.isna(row["cohesion"]) else f"{row['cohesion']:.3f}")
        c.metric("Purity", "—" if pd.isna(row["purity"]) else f"{row['purity']:.2f}")
        d.metric("Majority label", row["majority_label"] if isinstance(row["majority_label"], str) else "—")
        st.markdown(f"Proposed name **{row['name']}** · status **{row['status']}**"
                    + (f" · tag **{row['tag']}**" if isinstance(row["tag"], str) else ""))
        st.markdown("**Most representative items** (nearest the cluster's centre)")
        show_items(item_details(catalog, list(row["representatives"])), key=f"tags_reps_{cluster}")
        with st.expander(f"All {int(row['size']):,} items of this proposal"):
            show_items(item_details(catalog, members), limit=MEMBERS_SHOWN, key=f"tags_members_{cluster}")
            if int(row["size"]) > len(members):
                st.caption(f"Showing the first {len(members):,} of {int(row['size']):,} items (by id); the Catalog page "
                           "has them all.")

        def accept_one() -> None:
            c = int(st.session_state["tags_cluster"])  # the proposal shown when the button was pressed
            name = (st.session_state.get("tags_accept_name") or "").strip()
            if run_decision(lambda: store.accept(dataset, model, c, curator, name or None, manual=manual_choice())):
                st.session_state["tags_accept_name"] = ""

        def reject_one() -> None:
            c = int(st.session_state["tags_cluster"])
            run_decision(lambda: store.reject(dataset, model, c, curator))

        hand_one = store.hand_tagged_in(dataset, model, [cluster])
        if hand_one["items"]:
            st.caption(f":material/back_hand: {hand_one['items']:,} of its items already carry a tag set by hand "
                       f"({', '.join(hand_one['tags'][:5])}); Accept will "
                       f"{'keep' if manual_choice() == 'keep' else 'replace'} them (see the choice above).")
        x1, x2, x3 = st.columns([2, 1, 1], vertical_alignment="bottom")
        x1.text_input("Accept as (leave empty for the proposed name)", key="tags_accept_name", placeholder=row["name"])
        x2.button("Accept", key="tags_accept", type="primary", icon=":material/check:", disabled=not can_decide,
                  on_click=accept_one)
        x3.button("Reject", key="tags_reject", icon=":material/close:", disabled=not can_decide, on_click=reject_one)

        st.markdown("**Move one item to another tag**")
        titles = item_details(catalog, members).set_index("item_id")
        title_col = next((col for col in ("title", "caption") if col in titles.columns), None)

        def item_label(i: str) -> str:
            # Without the item's tag, which decisions change: a stale label would move another item (see describe).
            t = titles.loc[i, title_col] if title_col else None
            return f"{i}" + (f" — {t}" if isinstance(t, str) else "")

        st.selectbox("Item", members, format_func=item_label, key="tags_move_item")
        tag_picker(store, dataset, key="tags_move", tags=tags)

        def move_item() -> None:
            item = st.session_state.get("tags_move_item")
            remove, name = picked_tag("tags_move")
            existing = picked_existing("tags_move")
            run_decision(lambda: store.set_item(dataset, str(item), None if remove else name, curator, existing=existing))

        st.button("Move the item", key="tags_move_go", disabled=not can_decide or not members, on_click=move_item)

    with st.expander("Propose tags again (another k or split)"):
        propose_form(first=False)

with t_rename:
    # -- rename and merge ----------------------------------------------------------------------------
    if not tags:
        st.caption("No tags yet: accept a proposal or tag items first.")
    else:
        r1, r2 = st.columns(2)
        with r1, st.container(border=True):
            st.selectbox("Tag to rename", tags, key="tags_rename_old")
            st.text_input("New name", key="tags_rename_new")

            def rename() -> None:
                old = st.session_state.get("tags_rename_old")
                new = st.session_state.get("tags_rename_new") or ""
                if run_decision(lambda: store.rename(dataset, str(old), new, curator)):
                    st.session_state["tags_rename_new"] = ""

            st.button("Rename", key="tags_rename_go", disabled=not can_decide, on_click=rename)
        with r2, st.container(border=True):
            st.multiselect("Tags to merge", tags, key="tags_merge_from")
            st.text_input("Merged tag name (one of them, or a new name)", key="tags_merge_into")

            def merge() -> None:
                sources = list(st.session_state.get("tags_merge_from") or [])
                into = st.session_state.get("tags_merge_into") or ""
                if run_decision(lambda: store.merge(dataset, sources, into, curator)):
                    st.session_state["tags_merge_from"] = []
                    st.session_state["tags_merge_into"] = ""

            st.button("Merge", key="tags_merge_go", disabled=not can_decide, on_click=merge)

with t_conflicts:
    # -- items whose modalities disagree: a caption or soundtrack that belongs to something else ----------
    # Off until asked for: the scores take seconds on a demo-sized split and depend on the tags, so
    # computing them on every rerun would put them behind every tag decision (target 0.5 s).
    review = st.toggle("Find items whose modalities point to different tags", key="tags_conflict_on")
    disagree = None
    if review:
        c_splits = latent_splits()
        d1, d2 = st.columns([1, 1])
        c_split = d1.selectbox("Split", c_splits, index=c_splits.index(attrs["split"]) if attrs["split"] in c_splits else 0,
                               key="tags_conflict_split")
        c_top = int(d2.number_input("Show the top", min_value=5, max_value=5_000, value=25, step=5, key="tags_conflict_top"))
        try:
            with st.spinner(f"Comparing where each modality of the {c_split} items points…"):
                disagree, c_attrs = archive.conflicts(store, dataset, model, c_split)
        except StudioError as err:
            show_error(err)
    else:
        st.caption("Lists the items whose image, audio or text latents point to different tags: a caption or "
                   "soundtrack that may belong to another item. Switch it on to compute them.")
    if disagree is not None:
        flagged = disagree[disagree["flagged"]]
        st.caption(f"{len(flagged):,} of {len(disagree):,} {c_split} items have modalities whose latents point to different "
                   f"{c_attrs['source']}; ranked by how strongly they disagree (score: docs/results.md, 'Conflicts'). Check whether "
                   "one modality belongs to another item.")
        if len(flagged):
            head = flagged.head(c_top)
            mods = [c for c in head.columns if c not in ("item_id", "score", "flagged")]
            details = item_details(store.catalog_rows(dataset, head["item_id"].tolist()), head["item_id"].tolist())
            shown = head.drop(columns=["flagged"]).rename(columns={m: f"{m} → tag" for m in mods}).merge(
                details.drop(columns=["split"], errors="ignore"), on="item_id", how="left")
            show_items(shown, limit=c_top, extra_first=["item_id", "score", *[f"{m} → tag" for m in mods]],
                       key="tags_conflict_table")

with t_trail:
    # -- the audit trail -----------------------------------------------------------------------------
    f1, f2, f3 = st.columns(3)
    curators = sorted(history["curator"].dropna().unique().tolist()) if len(history) else []
    who = f1.selectbox("Curator", [ANYONE, *curators], key="tags_hist_curator")
    tag_filter = f2.selectbox("Tag", [ANY_TAG, *tags], key="tags_hist_tag")
    since = f3.date_input("Since (UTC)", value=None, key="tags_hist_since")
    try:
        filtered = who != ANYONE or tag_filter != ANY_TAG or since is not None
        trail = history if not filtered else store.history(
            dataset, None if who == ANYONE else who, None if tag_filter == ANY_TAG else tag_filter,
            None if since is None else dt.datetime.combine(since, dt.time.min))
    except StudioError as err:
        show_error(err)
        trail = history.iloc[0:0]
    if len(trail):
        st.dataframe(trail, hide_index=True, width="stretch")
    else:
        st.caption("No decisions match." if len(history) else "No decisions yet.")
