"""Data: import aligned feature files (upload or a folder on the server), see what was read, manage datasets.

The loaders and the store do the checking; this page arranges them. An import either registers the
whole dataset or, on the first problem, shows one sentence naming the file and writes nothing.
"""
from __future__ import annotations

from pathlib import Path

import altair as alt
import streamlit as st

from mmae_core.errors import StoreError
from mmae_core.data.features import import_bytes, load_files, load_path
from store.common import check_dataset_name
from studio.pipeline import ImportShare
from ui import state
from ui.widgets import (
    dataset_summary,
    default_name,
    attempt,
    refusals,
    remember_summary,
    resolve_server_path,
    root_entries,
    run_action,
    upload_limit_bytes,
    uploaded_files,
)

REPORT = "_data_import_report"
PROBLEMS = "_data_import_problems"

st.title("Data")
store = state.current_store()
root = state.data_root()


def check_target(name: str, replace: bool) -> str:
    """The checked dataset name; an existing one needs 'Replace it'."""
    name = check_dataset_name(name)
    if name in store.dataset_names() and not replace:
        raise StoreError(
            f"A dataset named '{name}' is already in the store; tick 'Replace it' (the old one is kept as a backup) or choose another name."
        )
    return name


def show_summary(summary, title: str | None = None) -> None:
    """Per-modality summary: items per split, dimension, missing rows, label counts."""
    if title:
        st.markdown(title)
    kind = "synthetic demo" if summary.synthetic else "imported"
    st.caption(f"{kind} · source: {summary.source or 'unknown'} · modalities: "
               + ", ".join(f"{m} ({d}-d)" for m, d in summary.modalities.items()))
    table = summary.table.rename(columns={"labels": "distinct labels", "missing": "missing rows"})
    st.dataframe(table, hide_index=True)
    missing = {m: c for m, c in summary.missing.items() if c}
    if missing:
        st.warning(
            "Some items lack a modality ("
            + ", ".join(f"{m}: {c:,}" for m, c in missing.items())
            + "); they are encoded from what they have. Train with the 'aligned' preset, which is built for that."
        )
    if summary.ignored:
        st.caption("Ignored (not a feature, label, id or items file): " + ", ".join(summary.ignored))
    if not summary.labelled:
        st.caption("No labels: Compare will report Silhouette, Calinski-Harabasz and Davies-Bouldin, not ARI/NMI.")
    if len(summary.label_counts):
        with st.expander(f"Label counts ({summary.label_counts['label'].nunique()} labels)"):
            chart = (
                alt.Chart(summary.label_counts)
                .mark_bar()
                .encode(
                    x=alt.X("items:Q", title="items"),
                    y=alt.Y("label:N", sort="-x", title=None),
                    color=alt.Color("split:N"),
                    tooltip=["split", "label", "items"],
                )
                .properties(height=max(160, 14 * summary.label_counts["label"].nunique()))
            )
            st.altair_chart(chart, width="stretch")
            st.dataframe(summary.label_counts.pivot_table(index="label", columns="split", values="items", fill_value=0))


# -- import ------------------------------------------------------------------------------------------
st.subheader("Import a dataset")
st.caption(
    "Accepted: one .npz per split (an array per modality, optional labels and ids); .npy per modality and "
    "split (train_image.npy or train/image.npy); Parquet/CSV per modality with an item_id column; an items "
    "table; or a .zip of those. Rows are aligned by position, or by item_id where files have one."
)
source = st.radio("From", ["Upload files", "A folder on the server"], horizontal=True, key="data_source")
loader = None
proposed = "my-dataset"
files_key: object = None
if source == "Upload files":
    files = st.file_uploader(
        "Feature files (several at once) or one .zip", accept_multiple_files=True, key="data_upload",
        help="Up to LUMA size (about 214 MB); larger data: put it under the data root and use the server folder.",
    )
    pairs = uploaded_files(files)
    files_key = [(f, len(b)) for f, b in pairs]
    if pairs:
        proposed = default_name(pairs)

        def loader(name: str, stage: Path, pairs=pairs):  # bound now, called on click
            return load_files(pairs, name, max_upload_bytes=upload_limit_bytes())
else:
    st.caption(f"Data root on the server: `{root}` (set by the operator with MMAE_STUDIO_DATA_ROOT).")
    entries = root_entries(root)
    if entries:
        st.caption("In it: " + ", ".join(f"`{e}`" for e in entries[:20]) + (" …" if len(entries) > 20 else ""))
    elif not root.exists():
        st.caption("The data root does not exist yet; ask the operator to create it and put data in it.")
    typed = st.text_input("Folder or file under the data root", key="data_path", placeholder="e.g. luma/ or luma.zip")
    if typed.strip():
        proposed = Path(typed.strip().rstrip("/")).stem or proposed

        def loader(name: str, stage: Path, typed=typed):
            path = resolve_server_path(typed, root)
            store.check_space(import_bytes(path))  # an archive too large for the disk: refused before reading
            return load_path(path, name, root=root, stream=True, stage=stage)

names = store.dataset_names()
name = st.text_input("Dataset name", value=proposed, key=f"data_name_{proposed}")
exists = name.strip() in names
replace = st.checkbox(
    f"Replace it: '{name.strip()}' exists (the old one is kept as a backup)" if exists else "Replace a dataset of the same name",
    key="data_replace", disabled=not exists, value=False,
)
attempt_key = (source, str(st.session_state.get("data_path", "")), repr(files_key), name.strip(), replace)
if st.button("Import", type="primary", disabled=loader is None, icon=":material/upload:"):
    # A folder on the server is streamed: Parquet and zip members are converted into this folder beside
    # the store, and the loaded set reads them until it is stored and summarised.
    with store.staging() as stage:
        with st.spinner("Reading and checking the files…"):
            # Every refusal at once: the name and the files are checked independently, nothing is written.
            as_named = attempt(lambda: check_dataset_name(name)).value or "upload"  # a bad name is the first step's refusal
            (target, fs), problems = refusals(lambda: check_target(name, replace), lambda: loader(as_named, stage))
        st.session_state[PROBLEMS] = (attempt_key, problems)
        if not problems:
            items = sum(sp.n for sp in fs.splits.values())
            bar = st.progress(0.0, text=f"Saving {items:,} items to the store…")
            share = ImportShare(fs)

            def written(split: str, modality: str, rows: int) -> None:
                bar.progress(share(split, modality, rows), text=f"Saved {split}/{modality} ({rows:,} rows)")

            done = run_action(lambda: store.add_dataset(fs, replace=replace, on_written=written))
            if done:
                res = done.value
                st.session_state[REPORT] = remember_summary(store, fs)
                st.session_state.pop(PROBLEMS, None)
                state.choose_dataset(res["name"])
                extra = f" The previous one is kept as '{res['replaced']}'." if res.get("replaced") else ""
                state.flash(f"Imported dataset '{res['name']}' ({res['items']:,} items).{extra} Next: train a model on the Train page.")
                st.rerun()

shown_key, problems = st.session_state.get(PROBLEMS, (None, []))
if problems and shown_key == attempt_key:  # until the files, the name or the choice change
    st.markdown(f"**Nothing was imported.** Fix {'this' if len(problems) == 1 else 'these ' + str(len(problems))} "
                "and press Import again; the store is as it was.")
    for problem in problems:
        st.error(problem, icon=":material/error:")

report = st.session_state.get(REPORT)
if report is not None and report.name in names:
    with st.container(border=True):
        show_summary(report, f"**Validation report of the last import: {report.name}** · every check passed")
        if st.button("Dismiss", key="data_dismiss"):
            st.session_state.pop(REPORT, None)
            st.rerun()

# -- registered datasets -----------------------------------------------------------------------------
st.subheader("Registered datasets")
listing = store.list_datasets()
if not len(listing):
    st.info("No dataset yet. Import one above, or create the demo dataset on Home.")
    st.stop()
st.dataframe(
    listing.assign(kind=listing["synthetic"].map({True: "synthetic demo", False: "imported"}))[
        ["name", "kind", "splits", "items", "modalities", "created_at"]
    ],
    hide_index=True,
    column_config={"created_at": st.column_config.DatetimeColumn("created (UTC)", format="YYYY-MM-DD HH:mm")},
)

current = state.current_dataset()
# filled last (it may read the whole dataset); not when the import report above shows the same tables
reported = report is not None and report.name == current
summary_slot = st.container() if current in names and not reported else None

with st.expander("Delete a dataset"):
    victim = st.selectbox("Dataset to delete", store.dataset_names(backups=True), key="data_delete_name")
    sure = st.checkbox(
        f"Yes, delete '{victim}' with its models, latents, runs, proposals, tags and audit trail",
        key=f"data_delete_confirm_{victim}",
    )
    if st.button("Delete", disabled=not sure, icon=":material/delete:", key="data_delete"):
        done = run_action(lambda: store.delete_dataset(victim))
        if done:
            if state.current_dataset() == victim:
                state.choose_dataset(None)
            st.session_state.pop(REPORT, None)
            state.flash(f"Deleted dataset '{victim}'.")
            st.rerun()

backups = [n for n in store.dataset_names(backups=True) if n not in names]
if backups:
    st.caption("Backups kept by 'Replace' (delete them above when no longer needed): " + ", ".join(backups))

if summary_slot is not None:
    with summary_slot:
        summary = run_action(lambda: dataset_summary(store, current))
        if summary:
            show_summary(summary.value, f"**{current}** (the current dataset; pick another in the sidebar)")
