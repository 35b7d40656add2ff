"""Evaluation runs with their metric tables, and proposal sets as the Tags page reads them."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from store import NotFoundError, Store, StoreError

from testkit.data import make_featureset, make_latents, proposal_table, store_with_proposals


def test_runs_keep_metrics_nulls_and_extra_columns(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    fs = make_featureset()
    store.add_dataset(fs)
    store.add_model("toy", "m1", b"w", {}, {}, make_latents(fs))
    table = pd.DataFrame({
        "method": ["mmae", "pca:image", "fused-pca"],
        "k": [3, 3, 4],
        "silhouette": [0.21, 0.1, np.nan],
        "ari": [0.5, np.nan, 0.3],
        "nmi": [0.6, 0.2, 0.4],
        "representation": ["latent", "pca-50", "pca-50"],
        "seconds": [1.5, 0.25, 0.5],
    })
    run = store.add_run("toy", "m1", "test", {"k_grid": [3, 4], "seed": 42}, table)
    baseline = store.add_run("toy", None, "test", {"seed": 1}, table.iloc[:1].assign(method="pca:text"))
    runs = store.runs("toy")
    assert runs["id"].tolist() == [run, baseline]
    assert runs["model"].tolist()[0] == "m1" and pd.isna(runs["model"].tolist()[1])
    assert json.loads(runs["params"].iloc[0]) == {"k_grid": [3, 4], "seed": 42}
    assert store.run_params(run) == {"k_grid": [3, 4], "seed": 42}
    back = store.run_metrics(run)
    assert back["method"].tolist() == table["method"].tolist()
    assert back["k"].tolist() == [3, 3, 4]
    np.testing.assert_allclose(back["silhouette"].to_numpy(dtype=float), table["silhouette"].to_numpy(), equal_nan=True)
    np.testing.assert_allclose(back["ari"].to_numpy(dtype=float), table["ari"].to_numpy(), equal_nan=True)
    assert back["calinski_harabasz"].isna().all() and back["davies_bouldin"].isna().all()
    assert back["representation"].tolist() == ["latent", "pca-50", "pca-50"]
    assert back["seconds"].tolist() == [1.5, 0.25, 0.5]
    assert len(store.runs()) == 2
    with pytest.raises(NotFoundError):
        store.run_metrics(999)
    with pytest.raises(StoreError):
        store.add_run("toy", None, "test", {}, pd.DataFrame({"k": [3]}))
    with pytest.raises(NotFoundError):
        store.add_run("toy", None, "ood", {}, table)


def test_proposals_round_trip(tmp_path):
    store, fs = store_with_proposals(tmp_path / "s.duckdb", k=3)
    table, assign = store.proposals("toy", "m1")
    expected = proposal_table(3)
    assert table["cluster"].tolist() == [0, 1, 2] and table["name"].tolist() == expected["name"].tolist()
    assert table["representatives"].tolist() == [["tr000"], ["tr001"], ["tr002"]]
    np.testing.assert_allclose(table["purity"].to_numpy(dtype=float), expected["purity"].to_numpy())
    assert table["status"].tolist() == ["proposed"] * 3 and table["tag"].isna().all()
    assert table.attrs["model"] == "m1" and table.attrs["split"] == "train" and table.attrs["k"] == 3
    assert len(assign) == 30 and set(assign["cluster"]) == {0, 1, 2}
    assert assign.set_index("item_id").loc["tr004", "cluster"] == 1
    assert store.proposals("toy")[0]["name"].tolist() == table["name"].tolist()  # latest of any model


def test_no_proposals_yet_gives_empty_frames(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    store.add_dataset(make_featureset())
    table, assign = store.proposals("toy")
    assert table.empty and assign.empty and "status" in table.columns
