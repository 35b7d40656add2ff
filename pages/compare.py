"""Compare: unimodal PCA, fused PCA, MCCA and the MMAE over a k grid, beside the paper's Tables II–IV.

Results are cached by content in the store itself: every evaluation is saved as a run with its
parameters, and the page first looks for a run of the same dataset, model, split and parameters. So a
second visit (in any session, or after a restart) shows the table at once instead of clustering again;
reading a run's metrics is memoised with ``st.cache_data``.
"""
from __future__ import annotations

import json

import altair as alt
import pandas as pd
import streamlit as st

from mmae_core.clustering.graph import parse_k_grid
from mmae_core.config import DEFAULT_PRESET, EvalConfig
from mmae_core.errors import StudioError
from studio.pipeline import evaluate_model
from mmae_core.evaluation.reference import paper_reference
from store.export import to_bytes
from ui import state
from ui.preset_pair import PAPER, preset_pair, preset_sentences, row_label, side_by_side
from ui.widgets import (
    LABELLED_METRICS,
    UNLABELLED_METRICS,
    beaten_sentences,
    dataset_summary,
    download_button,
    eval_params,
    find_run,
    k_suggestion,
    need_dataset,
    run_action,
)

BASELINES_ONLY = "(baselines only, no MMAE)"

st.title("Compare")
store = state.current_store()
dataset = need_dataset(store)


@st.cache_data(show_spinner=False, max_entries=256)
def run_metrics(db: str, run_id: int) -> pd.DataFrame:
    """A stored run's metrics never change (runs are append-only), so the run id is the content key."""
    return state.current_store().run_metrics(run_id)


def chart(table: pd.DataFrame, metric: str, label: str, paper: pd.DataFrame | None) -> alt.LayerChart:
    ours = table[["method", "k", metric]].dropna().assign(source="ours")
    layers = []
    lines = ours
    rules = pd.DataFrame()
    if paper is not None and metric in paper.columns:
        pk = paper[paper["k"].notna()][["method", "k", metric]].assign(source="paper (Tables III-IV)")
        lines = pd.concat([ours, pk], ignore_index=True)
        rules = paper[paper["k"].isna()][["method", metric]].assign(source="paper (Table II, k not stated)")
    dash = alt.StrokeDash(
        "source:N", title="source",
        scale=alt.Scale(domain=["ours", "paper (Tables III-IV)"], range=[[1, 0], [6, 4]]),
    )
    base = alt.Chart(lines).encode(
        x=alt.X("k:Q", title="k (clusters)", scale=alt.Scale(zero=False)),
        y=alt.Y(f"{metric}:Q", title=label),
        color=alt.Color("method:N", title="method"),
        tooltip=["source", "method", "k", alt.Tooltip(f"{metric}:Q", format=".3f")],
    )
    layers.append(base.mark_line(point=True).encode(strokeDash=dash))
    if len(rules):
        layers.append(
            alt.Chart(rules).mark_rule(strokeDash=[2, 3], opacity=0.7).encode(
                y=f"{metric}:Q", color="method:N",
                tooltip=["source", "method", alt.Tooltip(f"{metric}:Q", format=".3f")],
            )
        )
    return alt.layer(*layers).properties(height=320, title=f"{label} against k")


def show_results(table: pd.DataFrame, run: pd.Series | int, model: str | None, split: str, summary, suggestion) -> None:
    run_id = int(run["id"]) if isinstance(run, pd.Series) else int(run)
    labelled = table["ari"].notna().any() if "ari" in table else False
    metrics = LABELLED_METRICS if labelled else UNLABELLED_METRICS
    if not labelled:
        st.info("This split has no labels, so ARI and NMI cannot be computed; the table shows Silhouette, "
                "Calinski-Harabasz and Davies-Bouldin (lower is better) instead.")
    beaten = beaten_sentences(table, metrics)
    if "mmae" in set(table["method"]):
        if beaten:
            st.warning("**A baseline beats the MMAE here.** " + " ".join(beaten))
        else:
            st.success("The MMAE has the best " + " and ".join(v for k, v in metrics.items() if not (k == "silhouette" and labelled))
                       + " at every k of this grid.")
    # on by default only for LUMA-shaped data: elsewhere the paper's lines stretch the chart away from ours
    show_paper = st.toggle("Show the paper's rows (LUMA, test split) beside ours",
                           key=state.keep("compare_paper", suggestion.luma_shaped, dataset))
    paper = paper_reference() if show_paper else None
    tabs = st.tabs(list(metrics.values()))
    for tab, (metric, label) in zip(tabs, metrics.items()):
        with tab:
            st.altair_chart(chart(table, metric, label, paper), width="stretch")
    shown = table.assign(source="ours", model=model or "")
    if paper is not None:
        shown = pd.concat([shown, paper.assign(model="paper")], ignore_index=True)
    shown["k"] = shown["k"].astype("Int64")  # whole numbers in the CSV ('10', not '10.0'); Table II's k stays empty
    cols = [c for c in ("source", "table", "method", "k", "ari", "nmi", "silhouette", "calinski_harabasz",
                        "davies_bouldin", "n_items", "note") if c in shown.columns]
    st.dataframe(
        shown[cols], hide_index=True,
        column_config={c: st.column_config.NumberColumn(format="%.3f") for c in
                       ("ari", "nmi", "silhouette", "calinski_harabasz", "davies_bouldin")},
    )
    st.caption("Rows marked 'paper' are the numbers reported in the paper (Tables II–IV, on LUMA's test split), "
               "shown for reference; Table II does not say which k it used.")
    download_button(
        "Download as CSV", to_bytes(shown[cols], "csv"),
        file_name=f"{dataset}-run{run_id}-{split}.csv", mime="text/csv", icon=":material/download:",
        key=f"compare_csv_{run_id}",
    )


# -- settings --------------------------------------------------------------------------------------
summ = run_action(lambda: dataset_summary(store, dataset))
if not summ:
    st.stop()
summary = summ.value
models = list(store.list_models(dataset)["name"]) if len(store.list_models(dataset)) else []
if not models:
    st.info(f"Dataset {dataset} has no trained model yet, so only the baselines can be compared. "
            "Train a model on the Train page to add the MMAE.")
choices = models[::-1] + [BASELINES_ONLY]
current = state.current_model()
c = st.columns([2, 1, 2, 1, 1])
model_choice = c[0].selectbox("Model", choices, index=choices.index(current) if current in choices else 0, key="compare_model")
splits = list(summary.splits)
split = c[1].selectbox("Split", splits, key=state.keep("compare_split", "test" if "test" in splits else splits[0], dataset))
suggestion = k_suggestion(summary, split)
k_text = c[2].text_input("k grid", key=state.keep("compare_k", suggestion.grid_text, (dataset, split)),
                         help="Whole numbers separated by commas; each at most the number of items in the split. "
                              f"The default is {suggestion.reason}.")
seed = c[3].number_input("KMeans seed", 0, 2**31 - 1, key=state.keep("compare_seed", 42))
n_init = c[4].number_input("KMeans starts", 1, 100, key=state.keep("compare_n_init", EvalConfig.n_init),
                           help="Starts per method and k; the one with the lowest inertia is kept. More is steadier "
                                "on small sets and slower: 10 takes about twice as long as 4.")
weights: dict[str, float] = {}
if len(summary.modalities) >= 2:
    wc = st.columns(len(summary.modalities))
    for col, m in zip(wc, summary.modalities):
        w = col.number_input(f"Fused-PCA weight: {m}", 0.0, 100.0, 1.0, step=0.1, key=f"compare_w_{m}",
                             help="α, β, γ of the paper: how much each standardized block counts before the PCA.")
        if float(w) != 1.0:
            weights[m] = float(w)
model = None if model_choice == BASELINES_ONLY else model_choice

cfg = None
try:
    cfg = EvalConfig(k_grid=parse_k_grid(k_text), split=split, seed=int(seed), n_init=int(n_init),
                     fused_weights=weights).checked(summary.splits[split])
    if weights and all(v == 0 for v in weights.values()) and len(weights) == len(summary.modalities):
        raise StudioError("Every fused-PCA weight is 0; give at least one modality a positive weight.")
except StudioError as err:
    st.error(str(err))
    cfg = None

results = None
if cfg is not None:
    runs = store.runs(dataset)
    hit = find_run(runs, model, split, eval_params(cfg)) if len(runs) else None
    if hit is not None:
        st.caption(f"Evaluated before with these settings (run {int(hit['id'])}, {hit['created_at']:%Y-%m-%d %H:%M} UTC): "
                   "shown from the store.")
        results = (run_metrics(str(store.path), int(hit["id"])), hit)
    elif st.button("Evaluate", type="primary", icon=":material/play_arrow:"):
        with st.status("Evaluating: fitting the baselines and clustering every representation…", expanded=True) as status:
            done = run_action(lambda: evaluate_model(store, dataset, model, cfg, log=st.write))
            status.update(label="Evaluated." if done else "Not evaluated.", state="complete" if done else "error")
        if done:
            run_id = int(done.value["run"].iloc[0])
            results = (run_metrics(str(store.path), run_id), run_id)
    else:
        st.caption("These settings have not been evaluated yet; the demo at full size takes a minute or so.")
if results is not None:
    show_results(results[0], results[1], model, split, summary, suggestion)

# -- the default preset beside the paper preset --------------------------------------------------------
pair = preset_pair(store.list_models(dataset)) if models else None
if pair is not None and cfg is not None:
    st.subheader("The default preset beside the paper preset")
    st.caption(f"Newest model of each: {row_label(DEFAULT_PRESET, pair[0])} and {row_label(PAPER, pair[1])}, "
               "with the settings above.")
    runs = store.runs(dataset)
    found = {m: find_run(runs, m, split, eval_params(cfg)) if len(runs) else None for m in pair}
    missing = [m for m in pair if found[m] is None]
    if missing and st.button("Evaluate both presets", icon=":material/compare_arrows:", key="compare_pair_go"):
        with st.status("Evaluating both presets…", expanded=True) as status:
            for m in missing:
                done = run_action(lambda m=m: evaluate_model(store, dataset, m, cfg, log=st.write))
                if not done:
                    break
                found[m] = int(done.value["run"].iloc[0])
            status.update(label="Evaluated." if done else "Not evaluated.", state="complete" if done else "error")
    if all(found[m] is not None for m in pair):
        tables = [run_metrics(str(store.path), int(found[m]["id"]) if isinstance(found[m], pd.Series) else int(found[m]))
                  for m in pair]
        labelled = tables[0]["ari"].notna().any() if "ari" in tables[0] else False
        metrics = LABELLED_METRICS if labelled else UNLABELLED_METRICS
        for who, table in zip(("default", "paper"), tables):
            beaten = beaten_sentences(table, metrics)
            if beaten:
                st.warning(f"**A baseline beats the {who} preset here.** " + " ".join(beaten))
            else:
                st.success(f"No baseline beats the {who} preset at any k of this grid.")
        if labelled:
            st.info(" ".join(s for m in ("ari", "nmi") for s in preset_sentences(tables[0], tables[1], m, metrics[m])))
        both = side_by_side(tables[0], tables[1], pair)
        st.dataframe(both[[c for c in ("method", "k", *metrics) if c in both]], hide_index=True,
                     column_config={c: st.column_config.NumberColumn(format="%.3f") for c in metrics})
    else:
        st.caption("Evaluate both presets to see them side by side.")

# -- history -----------------------------------------------------------------------------------------
st.subheader("Earlier runs")
runs = store.runs(dataset)
if not len(runs):
    st.caption("No run yet for this dataset.")
    st.stop()
hist = runs.sort_values("id", ascending=False).assign(
    model=lambda d: d["model"].fillna(BASELINES_ONLY),
    k_grid=lambda d: [", ".join(map(str, json.loads(p).get("k_grid", []))) for p in d["params"]],
    weights=lambda d: [json.dumps(json.loads(p).get("fused_weights") or {}) for p in d["params"]],
    seed=lambda d: [json.loads(p).get("seed") for p in d["params"]],
    starts=lambda d: [json.loads(p).get("n_init") for p in d["params"]],
)
st.dataframe(hist[["id", "model", "split", "k_grid", "seed", "starts", "weights", "rows", "created_at"]], hide_index=True)
pick = st.selectbox("Open a run", list(hist["id"]), key="compare_history_pick")
if pick is not None:
    old = run_metrics(str(store.path), int(pick)).astype({"k": "Int64"}, errors="ignore")
    st.dataframe(old, hide_index=True)
    download_button("Download this run as CSV", to_bytes(old, "csv"), file_name=f"{dataset}-run{int(pick)}.csv",
                    mime="text/csv", key=f"compare_hist_csv_{int(pick)}", icon=":material/download:")
