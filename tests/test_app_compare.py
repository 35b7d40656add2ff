"""The Compare page: evaluate into a stored run, reuse it on the next visit, refuse bad k, history, CSV."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ui.widgets import LABELLED_METRICS, UNLABELLED_METRICS, beaten_sentences, find_run


def by_label(items, label: str):
    return next(x for x in items if x.label == label)


def no_bug(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_compare_page_with_an_empty_store_says_what_to_do(empty_store, app):
    at = app("compare")
    no_bug(at)
    assert any("no dataset yet" in i.value.lower() for i in at.info)


def test_evaluate_stores_a_run_and_the_next_visit_reuses_it(demo_store, app):
    store = demo_store.store()
    at = app("compare")
    no_bug(at)
    at.text_input(key="compare_k").input("5, 10").run()
    at.number_input(key="compare_w_audio").set_value(0.5).run()
    by_label(at.button, "Evaluate").click().run()
    no_bug(at)
    runs = store.runs("demo")
    assert len(runs) == 1 and runs["model"].iloc[0] == demo_store.model and runs["split"].iloc[0] == "test"
    metrics = store.run_metrics(int(runs["id"].iloc[0]))
    assert set(metrics["method"]) == {"image", "audio", "text", "fused_pca", "mcca", "spectral_pca", "mmae"}
    assert sorted(set(metrics["k"].tolist())) == [5, 10]
    assert store.run_params(int(runs["id"].iloc[0]))["fused_weights"] == {"audio": 0.5}
    assert len(at.get("vega_lite_chart")) == 3  # ARI, NMI, Silhouette against k
    table = at.dataframe[0].value
    assert {"ours", "paper"} == set(table["source"])  # the paper's rows are beside ours, marked
    assert (table[table["source"] == "paper"]["table"].dropna().isin(["II", "III", "IV"])).all()
    # the 2-epoch demo model is weak: the page says plainly that a baseline beats it
    assert any("the MMAE." in w.value and "baseline beats" in w.value for w in at.warning)
    csv = by_label(at.get("download_button"), "Download as CSV")
    assert csv.proto.ignore_rerun  # a download needs no rerun of the grid page
    # a second visit (a new session) with the same settings shows the stored run without clustering again
    again = app("compare")
    again.text_input(key="compare_k").input("5, 10").run()
    again.number_input(key="compare_w_audio").set_value(0.5).run()
    no_bug(again)
    assert not [b for b in again.button if b.label == "Evaluate"]
    assert any("Evaluated before with these settings" in c.value for c in again.caption)
    assert len(store.runs("demo")) == 1
    # the history lists the run
    assert int(again.selectbox(key="compare_history_pick").value) == int(runs["id"].iloc[0])
    assert again.dataframe[-2].value["starts"].tolist() == [4]  # the KMeans starts of each run
    # other KMeans starts are other settings: not the stored run, and the new run records them
    again.number_input(key="compare_n_init").set_value(6).run()
    assert [b for b in again.button if b.label == "Evaluate"]
    by_label(again.button, "Evaluate").click().run()
    no_bug(again)
    runs = store.runs("demo")
    assert len(runs) == 2 and store.run_params(int(runs["id"].max()))["n_init"] == 6


def test_bad_k_is_one_sentence_and_the_store_is_unchanged(demo_store, app):
    store = demo_store.store()
    before = store.checksum()
    at = app("compare")
    for text, expected in [("5, 100000", "larger than the 150 items"), ("5, x", "whole numbers"),
                           ("", "empty"), ("1", "at least 2")]:
        at.text_input(key="compare_k").input(text).run()
        no_bug(at)
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and expected in errors[0], (text, errors)
        assert not [b for b in at.button if b.label == "Evaluate"]
    assert store.checksum() == before


def test_baselines_only_without_a_model(demo_store, app):
    store = demo_store.store()
    at = app("compare")
    at.selectbox(key="compare_model").set_value("(baselines only, no MMAE)").run()
    at.text_input(key="compare_k").input("4").run()
    by_label(at.button, "Evaluate").click().run()
    no_bug(at)
    runs = store.runs("demo")
    assert len(runs) == 1 and pd.isna(runs["model"].iloc[0])
    assert "mmae" not in set(store.run_metrics(int(runs["id"].iloc[0]))["method"])


# -- the helpers behind the page ----------------------------------------------------------------------
def test_beaten_sentences_name_every_k_where_a_baseline_wins():
    t = pd.DataFrame({
        "method": ["mmae", "image", "mcca", "mmae", "image", "mcca"],
        "k": [5, 5, 5, 10, 10, 10],
        "ari": [0.5, 0.6, 0.4, 0.7, 0.2, 0.1],
        "nmi": [0.9, 0.1, 0.1, 0.9, 0.1, 0.95],
        "silhouette": [0.1, 0.9, 0.9, 0.1, 0.9, 0.9],
    })
    out = beaten_sentences(t, LABELLED_METRICS)
    assert out == ["On ARI, image at k = 5 (by up to 0.100) beats the MMAE.",
                   "On NMI, mcca at k = 10 (by up to 0.050) beats the MMAE."]
    t2 = t.assign(davies_bouldin=[1.0, 0.5, 0.8, 1.0, 2.0, 0.2], calinski_harabasz=1.0)
    assert "On Davies-Bouldin, mcca at k = 5, 10 (by up to 0.800) and image at k = 5 (by up to 0.500) beat the MMAE." \
        in beaten_sentences(t2, UNLABELLED_METRICS)
    assert beaten_sentences(t[t["method"] != "mmae"], LABELLED_METRICS) == []


def test_find_run_matches_model_split_and_parameters():
    runs = pd.DataFrame({
        "id": [1, 2, 3],
        "model": ["m", None, "m"],
        "split": ["test", "test", "test"],
        "params": ['{"k_grid": [5], "seed": 42, "n_init": 4, "fused_weights": {}}'] * 2
        + ['{"k_grid": [5], "seed": 1, "n_init": 4, "fused_weights": {}}'],
    })
    p = {"k_grid": [5], "seed": 42, "n_init": 4, "fused_weights": {}}
    assert int(find_run(runs, "m", "test", p)["id"]) == 1
    assert int(find_run(runs, None, "test", p)["id"]) == 2
    assert find_run(runs, "m", "ood", p) is None
    assert int(find_run(runs, "m", "test", {**p, "seed": 1})["id"]) == 3
    assert find_run(runs, "m", "test", {**p, "fused_weights": {"image": np.float64(0.5).item()}}) is None


def ten_class_set(name: str = "digits10", n: int = 200):
    from mmae_core.data.dataset import FeatureSet, Split

    rng = np.random.default_rng(0)
    splits = {}
    for s, k in (("train", n), ("test", n // 2)):
        labels = np.array([f"d{i % 10}" for i in range(k)], dtype=object)
        feats = {m: rng.standard_normal((k, d)).astype(np.float32) for m, d in (("image", 6), ("text", 4))}
        splits[s] = Split(np.array([f"{s}-{i}" for i in range(k)], dtype=object), feats, labels)
    return FeatureSet(name, {"image": 6, "text": 4}, splits)


def test_defaults_are_sized_from_the_data_and_kept_across_visits(demo_store, app):
    store = demo_store.store()
    store.add_dataset(ten_class_set())
    at = app("compare", dataset="digits10")
    no_bug(at)
    assert at.text_input(key="compare_k").value == "auto"  # k found by the method, not the paper's 30-60
    at.selectbox(key="compare_model").set_value("(baselines only, no MMAE)").run()
    by_label(at.button, "Evaluate").click().run()
    no_bug(at)
    assert at.toggle(key="compare_paper").value is False  # not LUMA-shaped: the paper's rows are off
    table = at.dataframe[0].value
    assert set(table["source"]) == {"ours"} and str(table["k"].dtype) == "Int64"  # the CSV writes 10, not 10.0
    at.text_input(key="compare_k").input("4, 6").run()
    at.switch_page("pages/home.py").run()
    at.switch_page("pages/compare.py").run()
    no_bug(at)
    assert at.text_input(key="compare_k").value == "4, 6"  # kept across the page visit
    # the demo (LUMA-shaped: 50 classes of image, audio, text) keeps the paper's grid
    at.sidebar.selectbox[0].set_value("demo").run()
    assert at.text_input(key="compare_k").value == "30, 40, 42, 50, 60"


def pair_table(at) -> pd.DataFrame:
    return next(d.value for d in at.dataframe if d.value["method"].astype(str).str.startswith("MMAE, ").any())


def test_default_and_paper_presets_side_by_side(demo_store, app):
    """With a model of each preset, Compare evaluates both with the same settings and shows them in one
    table, saying where a baseline beats either and where the paper preset is ahead of the default."""
    from mmae_core.config import DEFAULT_PRESET, preset
    from studio.pipeline import train_and_register

    store = demo_store.store()
    at = app("compare")
    no_bug(at)
    assert not any("beside the paper preset" in h.value for h in at.subheader)  # the paper model alone: no pair
    default = train_and_register(store, demo_store.dataset, preset(DEFAULT_PRESET, epochs=2)).model_name
    at = app("compare")
    no_bug(at)
    assert any("beside the paper preset" in h.value for h in at.subheader)
    at.text_input(key="compare_k").input("5, 10").run()
    by_label(at.button, "Evaluate both presets").click().run()
    no_bug(at)
    runs = store.runs(demo_store.dataset)
    assert set(runs["model"]) == {default, demo_store.model} and len(runs) == 2
    table = pair_table(at)
    ours = [m for m in set(table["method"]) if m.startswith("MMAE")]
    assert sorted(ours) == sorted([f"MMAE, default preset '{DEFAULT_PRESET}' ({default})",
                                   f"MMAE, paper preset 'paper' ({demo_store.model})"])
    assert {"fused_pca", "mcca", "spectral_pca"} <= set(table["method"])
    assert sorted(set(table["k"].tolist())) == [5, 10] and len(table) == 2 * table["method"].nunique()  # baselines once
    # both 2-epoch models are weak on the demo: the page says plainly which baselines beat each
    said = " ".join(w.value for w in at.warning)
    assert "baseline beats the default preset" in said and "baseline beats the paper preset" in said
    assert any("paper preset" in i.value and "default" in i.value for i in at.info)
    # a second visit reuses both stored runs: no button, same table
    again = app("compare")
    again.text_input(key="compare_k").input("5, 10").run()
    no_bug(again)
    assert not [b for b in again.button if b.label == "Evaluate both presets"]
    assert len(pair_table(again)) == len(table)
    assert len(store.runs(demo_store.dataset)) == 2
