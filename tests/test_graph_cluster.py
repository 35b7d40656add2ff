"""Clusters from a neighbour graph: Leiden finds k, spectral at k, unassigned items kept, refusals,
the scalable KMeans, and the evaluation grid's auto k, spectral_pca baseline and stratified sample."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.cluster import SpectralClustering
from sklearn.metrics import adjusted_rand_score

from mmae_core.clustering import graph as gc
from mmae_core.clustering import kmeans as kmeans_large
from mmae_core.config import EvalConfig
from mmae_core.errors import ConfigError
from mmae_core.evaluation.evaluate import evaluate_grid, stratified_sample
from mmae_core.clustering.proposals import propose
from tests.test_metrics import three_views


def blobs(k: int = 4, n_per: int = 30, d: int = 6, sep: float = 10.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)) * sep
    y = np.repeat(np.arange(k), n_per)
    return (centers[y] + rng.standard_normal((len(y), d))).astype(np.float32), y


def test_leiden_finds_the_class_count_and_says_so() -> None:
    x, y = blobs()
    res = gc.graph_labels(x, "leiden", "auto", seed=1)
    assert (res.k, res.k_found_by, res.resolution, res.n_unassigned) == (4, "leiden", gc.DEFAULT_RESOLUTION, 0)
    assert adjusted_rand_score(y, res.labels) == 1.0
    again = gc.graph_labels(x, "leiden", "AUTO", seed=1)
    assert np.array_equal(res.labels, again.labels)


def test_auto_k_with_kmeans_and_spectral_cut_at_the_k_leiden_found() -> None:
    x, y = blobs(k=5)
    from mmae_core.clustering.kmeans import kmeans_any

    for method in ("kmeans", "spectral"):
        res = gc.graph_labels(x, method, "auto", seed=0, kmeans=kmeans_any)
        assert res.k == 5 and res.k_found_by == "leiden" and len(set(res.labels)) == 5
        assert adjusted_rand_score(y, res.labels) == 1.0


def test_isolated_items_are_unassigned_never_dropped() -> None:
    x, _ = blobs(k=3, n_per=20)
    g = gc.knn_graph(x, 10).tolil()
    n = g.shape[0]
    big = sp.lil_matrix((n + 2, n + 2), dtype=np.float32)  # two items with no edge at all
    big[:n, :n] = g
    res = gc.leiden(big.tocsr(), 1.0, seed=0)
    assert res.k == 3 and res.n_unassigned == 2
    assert (res.labels[n:] == gc.UNASSIGNED).all() and (res.labels[:n] >= 0).all() and len(res.labels) == n + 2


def test_propose_puts_tiny_communities_in_one_unassigned_proposal() -> None:
    x, _ = blobs()
    ids = np.array([f"i{i}" for i in range(len(x))], dtype=object)
    p = propose(x, ids, "auto", seed=1, resolution=5.0)  # fine enough that Leiden leaves crumbs
    t = p.table
    assert p.n_unassigned > 0 and p.k_found_by == "leiden" and p.method == "leiden"
    last = t.iloc[-1]
    assert last["name"] == "unassigned" and last["cluster"] == p.k and last["size"] == p.n_unassigned
    assert len(t) == p.k + 1 and t["size"].sum() == len(x) and (p.assignments >= 0).all()
    assert t["size"].iloc[:-1].is_monotonic_decreasing


def test_one_cluster_or_more_clusters_than_items_is_refused_in_one_sentence() -> None:
    one_blob = np.random.default_rng(0).standard_normal((100, 5)).astype(np.float32)
    with pytest.raises(ConfigError, match=r"finds one cluster among 100 items; raise the resolution.*\.$"):
        gc.graph_labels(one_blob, "leiden", "auto", resolution=0.001)
    x, _ = blobs()
    with pytest.raises(ConfigError, match=r"fewer than 3 items only.*lower the resolution"):
        gc.graph_labels(x, "leiden", "auto", resolution=1e4)
    with pytest.raises(ConfigError, match=r"k=121 is out of range for 120 items"):
        gc.graph_labels(x, "spectral", 121)
    with pytest.raises(ConfigError, match=r"Leiden finds the number of clusters itself"):
        gc.graph_labels(x, "leiden", 4)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="resolution must be a positive number"):
            gc.graph_labels(x, "leiden", "auto", resolution=bad)
    with pytest.raises(ConfigError, match="k must be a whole number or 'auto'"):
        gc.parse_k_value("many")
    with pytest.raises(ConfigError, match="unknown clustering 'dbscan'"):
        gc.graph_labels(x, "dbscan", 4)


def test_spectral_equals_scikit_learns_spectral_clustering() -> None:
    x, y = blobs(k=5, sep=4.0, seed=3)
    g = gc.knn_graph(x, 10, seed=0)
    ours = gc.spectral(g, 5, seed=0)
    theirs = SpectralClustering(5, affinity="precomputed", random_state=0).fit_predict(g)
    assert adjusted_rand_score(theirs, ours) > 0.95
    assert adjusted_rand_score(y, ours) > 0.9


def test_knn_graph_is_symmetric_without_self_loops_and_ivf_finds_most_neighbours(monkeypatch: pytest.MonkeyPatch) -> None:
    x, _ = blobs(k=20, n_per=150, d=16, sep=3.0)
    g = gc.knn_graph(x, 10)
    assert (g != g.T).nnz == 0 and g.diagonal().sum() == 0
    assert set(np.unique(g.data)) <= {0.5, 1.0}
    exact = gc.knn(x, 10)
    monkeypatch.setattr(gc, "EXACT_MAX", 1000)  # the index used above EXACT_MAX (1M items in production)
    approx = gc.knn(x, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, approx)])
    assert recall > 0.9


def test_faiss_kmeans_is_seeded_and_used_above_the_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = blobs(k=8, n_per=200, d=12, sep=5.0)
    a, ia = kmeans_large.faiss_kmeans(x, 8, seed=3)
    b, ib = kmeans_large.faiss_kmeans(x, 8, seed=3)
    assert np.array_equal(a, b) and ia == ib
    assert adjusted_rand_score(y, a) > 0.95
    monkeypatch.setattr(kmeans_large, "LARGE_MIN", 1000)
    assert np.array_equal(kmeans_large.kmeans_any(x, 8, seed=3), a)


def test_stratified_sample_keeps_every_class_share() -> None:
    codes = np.repeat([0, 1, 2, -1], [600, 300, 90, 10])
    pick = stratified_sample(codes, len(codes), 100, seed=0)
    assert len(pick) == 100 and len(set(pick)) == 100 and np.all(np.diff(pick) > 0)
    assert np.bincount(codes[pick] + 1).tolist() == [1, 60, 30, 9]
    assert np.array_equal(pick, stratified_sample(codes, len(codes), 100, seed=0))


def test_grid_auto_k_rows_say_the_k_found_and_by_what() -> None:
    data = three_views(n_per=30, k=6)
    cfg = EvalConfig(k_grid=("auto", 6), n_init=2, unimodal_dims={"audio": 10}, default_unimodal_dim=8, fused_dim=6, mcca_dim=6)
    t = evaluate_grid(data["train"], data["eval"], data["labels"], None, cfg)
    auto = t[t["k_found_by"] == "leiden"]
    given = t[t["k_found_by"] == "given"]
    assert len(auto) == len(given) == 6 and (given["k"] == 6).all()
    assert (auto["resolution"] == gc.DEFAULT_RESOLUTION).all() and (auto["k"] >= 2).all()
    img = auto[auto["method"] == "image"].iloc[0]
    assert img["k"] == 6 and img["ari"] > 0.6  # the strong view: Leiden finds the six classes
    assert (t.loc[t["method"] == "spectral_pca", "cluster"] == "spectral").all()
    lt = evaluate_grid(data["train"], data["eval"], data["labels"], None, EvalConfig(k_grid=("auto",), n_init=2, fused_dim=6,
                       mcca_dim=6, unimodal_dims={"audio": 10}, default_unimodal_dim=8), cluster="leiden")
    assert (lt.loc[lt["method"] != "spectral_pca", "cluster"] == "leiden").all()
    with pytest.raises(ConfigError, match="Leiden finds the number of clusters itself"):
        evaluate_grid(data["train"], data["eval"], data["labels"], None, cfg, cluster="leiden")


def test_grid_on_a_large_split_scores_a_stated_stratified_sample() -> None:
    data = three_views(n_per=30, k=6)
    cfg = EvalConfig(k_grid=(6,), n_init=1, unimodal_dims={"audio": 10}, default_unimodal_dim=8, fused_dim=6, mcca_dim=6)
    t = evaluate_grid(data["train"], data["eval"], data["labels"], None, cfg, sample_size=60)
    assert (t["n_items"] == 60).all() and (t["sample_size"] == 60).all() and t.attrs["sample_size"] == 60
    full = evaluate_grid(data["train"], data["eval"], data["labels"], None, cfg)
    assert (full["n_items"] == 180).all() and full["sample_size"].isna().all()


def test_a_large_set_is_clustered_on_a_sample_and_every_item_placed_by_its_sample_neighbours(monkeypatch) -> None:
    from mmae_core.clustering.kmeans import kmeans_any

    x, y = blobs(k=6, n_per=200, d=8)
    monkeypatch.setattr(gc, "GRAPH_SAMPLE_MAX", 300)  # 1,200 items: a sample of a quarter
    for method in ("leiden", "spectral", "kmeans"):
        res = gc.graph_labels(x, method, "auto", seed=3, kmeans=kmeans_any)
        assert res.k == 6 and res.k_found_by == "leiden" and len(res.labels) == len(x)
        assert res.n_unassigned == int((res.labels == gc.UNASSIGNED).sum()) == 0
        assert adjusted_rand_score(y, res.labels) == 1.0
    again = gc.graph_labels(x, "leiden", "auto", seed=3)
    assert np.array_equal(again.labels, gc.graph_labels(x, "leiden", "auto", seed=3).labels)  # seeded


def test_extend_keeps_the_sample_labels_votes_by_neighbours_and_leaves_unvoted_items_unassigned() -> None:
    x = np.array([[0.0], [0.1], [10.0], [10.1], [0.05], [10.02], [50.0]], dtype=np.float32)
    sample = np.array([0, 1, 2, 3])
    out = gc.extend(x, sample, np.array([0, 0, 1, gc.UNASSIGNED]), n_neighbors=1)
    assert out[:4].tolist() == [0, 0, 1, gc.UNASSIGNED]
    assert out[4] == 0 and out[5] == 1
    assert out[6] == gc.UNASSIGNED  # its one nearest sample item (10.1) has no tag to give
