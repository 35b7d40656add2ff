"""Home: the first page. An empty store gets one button that creates the demo; otherwise what to do next."""
from __future__ import annotations

import os

import streamlit as st

from mmae_core.data.demo import make_demo
from mmae_core.errors import StudioError
from ui import state
from ui.widgets import link, remember_summary, run_action

DEMO_NAME = "demo"


def demo_scale() -> float:
    """Full size unless the operator asks for a smaller demo (``MMAE_STUDIO_DEMO_SCALE``, e.g. 0.1 on a
    small machine; the tests use it too)."""
    try:
        scale = float(os.environ.get("MMAE_STUDIO_DEMO_SCALE", "1") or 1)
    except ValueError:
        return 1.0
    return scale if 0 < scale <= 1 else 1.0

st.title("MMAE Studio")
st.caption(
    "Train a multimodal autoencoder on aligned image, audio and text features, compare it with the "
    "baselines, and turn its clusters into reviewed tags."
)
store = state.current_store()


def create_demo() -> None:
    """The full-size synthetic demo (~29,000 items); generation and saving take about ten seconds."""
    with st.status("Creating the synthetic demo dataset…", expanded=True) as status:
        st.write("Generating 50 classes of image, audio and text features (synthetic, seed 42)…")

        def work() -> dict:
            fs = make_demo(DEMO_NAME, seed=42, scale=demo_scale())
            st.write(f"Saving {sum(sp.n for sp in fs.splits.values()):,} items to the store…")
            out = store.add_dataset(fs)
            remember_summary(store, fs)
            return out

        done = run_action(work)
        if not done:
            status.update(label="The demo dataset was not created.", state="error")
            return
        status.update(label="The demo dataset is ready.", state="complete")
    state.choose_dataset(DEMO_NAME)
    state.flash(f"Created the synthetic demo dataset '{DEMO_NAME}' ({done.value['items']:,} items). Next: train a model on the Train page.")
    st.rerun()


try:
    listing = store.list_datasets()
except StudioError as err:
    st.error(str(err))
    st.stop()

if not len(listing):
    st.subheader("The store is empty")
    st.write(
        "Start with the built-in demo: a **synthetic** LUMA-shaped dataset (50 classes such as airplane, dog "
        "and violin; image 50-d, audio 1024-d, text 768-d; train, test and an out-of-distribution split) "
        "with titles and captions. Or import your own aligned feature files on the Data page."
    )
    if st.button("Create the demo dataset", type="primary", icon=":material/auto_awesome:"):
        create_demo()
    link("pages/data.py", "Data: import your own feature files", ":material/database:")
    st.stop()

# -- what to do next -------------------------------------------------------------------------------
dataset = state.current_dataset() or listing["name"].iloc[0]
models = store.list_models(dataset)
runs = store.runs(dataset)
props = store.proposal_table(dataset)
tags = store.tag_counts(dataset)
row = listing[listing["name"] == dataset]
synthetic = bool(row["synthetic"].iloc[0]) if len(row) else False

st.subheader(f"Next steps for {dataset}" + (" (synthetic demo)" if synthetic else ""))
steps = [
    (len(models) > 0, "pages/train.py", "Train a model", ":material/model_training:",
     f"{len(models)} model(s) trained" if len(models) else "no model yet: a few epochs are enough for a first look"),
    (len(runs) > 0, "pages/compare.py", "Compare it with the baselines", ":material/leaderboard:",
     f"{len(runs)} evaluation run(s)" if len(runs) else "unimodal, fused PCA, MCCA and MMAE over a k grid"),
    (len(props) > 0, "pages/tags.py", "Review the proposed tags", ":material/sell:",
     f"{len(props)} proposed tags, {int(tags['items'].sum()) if 'items' in tags and len(tags) else 0} items tagged"
     if len(props) else "cluster the latents into proposals, then accept, rename, merge or reject"),
]
first_open = next((i for i, s in enumerate(steps) if not s[0]), None)
for i, (done, page, label, icon, detail) in enumerate(steps):
    state_word = "Done" if done else ("Next" if i == first_open else "Later")
    c1, c2 = st.columns([1, 3])
    with c1:
        link(page, label, ":material/check_circle:" if done else icon)
    c2.caption(f"**{state_word}**: {detail}")
link("pages/explore.py", "Explore the latent space as a map", ":material/scatter_plot:")
link("pages/catalog.py", "Export the tagged catalog", ":material/table_view:")

st.subheader("Registered datasets")
shown = listing.assign(kind=listing["synthetic"].map({True: "synthetic demo", False: "imported"}))
st.dataframe(
    shown[["name", "kind", "splits", "items", "modalities", "created_at"]],
    hide_index=True,
    column_config={"created_at": st.column_config.DatetimeColumn("created (UTC)", format="YYYY-MM-DD HH:mm")},
)
if DEMO_NAME not in set(listing["name"]):
    with st.expander("Add the synthetic demo dataset"):
        if st.button("Create the demo dataset", icon=":material/auto_awesome:"):
            create_demo()
