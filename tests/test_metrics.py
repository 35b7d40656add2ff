"""Metrics against scikit-learn, the evaluation grid's contract, and the paper's reference rows."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import silhouette_samples, silhouette_score
from sklearn.metrics.pairwise import euclidean_distances

from mmae_core.config import EvalConfig
from mmae_core.errors import ConfigError
from mmae_core.evaluation.evaluate import COLUMNS, evaluate_grid, kmeans_labels
from mmae_core.evaluation.metrics import (
    NO_LABELS_NOTE,
    external_scores,
    pairwise,
    silhouette_from_distances,
    silhouette_samples_chunked,
)
from mmae_core.evaluation.reference import paper_reference


def blobs(n_per: int, k: int, d: int, sep: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)) * sep
    y = np.repeat(np.arange(k), n_per)
    return (centers[y] + rng.standard_normal((len(y), d))).astype(np.float32), y


def three_views(n_per: int = 30, k: int = 6, seed: int = 0) -> dict[str, object]:
    """Standardized train/eval views with a shared class signal (image strong, audio/text weak)."""
    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((k, 8))
    maps = {"image": (rng.standard_normal((8, 12)), 1.0), "audio": (rng.standard_normal((8, 40)), 3.0), "text": (rng.standard_normal((8, 30)), 2.0)}

    def split(n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        y = np.repeat(np.arange(k), n)
        c = protos[y] + 0.3 * rng.standard_normal((len(y), 8))
        return {m: (c @ a + s * rng.standard_normal((len(y), a.shape[1]))).astype(np.float32) for m, (a, s) in maps.items()}, y

    tr, ytr = split(n_per * 3)
    ev, yev = split(n_per)
    mu = {m: tr[m].mean(0) for m in tr}
    sd = {m: tr[m].std(0) for m in tr}
    std = lambda f: {m: ((f[m] - mu[m]) / sd[m]).astype(np.float32) for m in f}  # noqa: E731
    labels = np.array([f"class{c}" for c in yev], dtype=object)
    return {"train": std(tr), "eval": std(ev), "labels": labels, "ytrain": ytr}


# --- metrics -------------------------------------------------------------------------------------

def test_silhouette_from_distances_equals_sklearn_including_a_singleton() -> None:
    x, _ = blobs(40, 4, 5, 3.0, seed=1)
    pred = kmeans_labels(x, 4, 2, 0)
    pred = pred.copy()
    pred[0] = 9  # a singleton cluster scores 0 in scikit-learn's convention
    d = euclidean_distances(x)
    ours = silhouette_from_distances(d.astype(np.float32), pred)
    assert ours == pytest.approx(silhouette_score(d, pred, metric="precomputed"), abs=1e-6)
    assert ours == pytest.approx(silhouette_score(x, pred), abs=1e-5)


def test_silhouette_samples_chunked_equals_sklearn_over_several_chunks() -> None:
    x, y = blobs(25, 5, 4, 2.0, seed=2)
    ours = silhouette_samples_chunked(x, y, chunk=17)
    assert np.allclose(ours, silhouette_samples(x, y), atol=1e-5)


def test_pairwise_matches_sklearn_and_has_zero_diagonal() -> None:
    x, _ = blobs(30, 3, 6, 5.0, seed=3)
    x = x + 100.0  # far from the origin: the centring must keep the float32 error small
    d = pairwise(x)
    assert d.dtype == np.float32 and np.all(np.diag(d) == 0)
    assert np.allclose(d, euclidean_distances(x.astype(np.float64)), atol=1e-3)


def test_internal_scores_equal_sklearn() -> None:
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score

    from mmae_core.evaluation.metrics import internal_scores

    x, _ = blobs(30, 5, 7, 2.0, seed=4)
    pred = kmeans_labels(x, 6, 1, 0)
    ch, db = internal_scores(x, pred)
    assert ch == pytest.approx(calinski_harabasz_score(x, pred), rel=1e-6)
    assert db == pytest.approx(davies_bouldin_score(x, pred), rel=1e-6)
    assert np.isnan(internal_scores(x, np.zeros(len(x), int))[0])


def test_external_scores_skip_unlabelled_items_and_are_nan_without_labels() -> None:
    t = np.array(["a", "a", "b", "b", None, ""], dtype=object)
    p = np.array([0, 0, 1, 1, 1, 0])
    assert external_scores(t, p) == (1.0, 1.0)
    ari, nmi = external_scores(np.array([None, ""], dtype=object), np.array([0, 1]))
    assert np.isnan(ari) and np.isnan(nmi)


# --- the grid ------------------------------------------------------------------------------------

def test_grid_table_has_every_method_and_k_and_is_identical_run_to_run() -> None:
    data = three_views()
    lat = np.random.default_rng(5).standard_normal((len(data["labels"]), 16)).astype(np.float32)
    cfg = EvalConfig(k_grid=(4, 6, 8), n_init=2, unimodal_dims={"audio": 10}, default_unimodal_dim=8, fused_dim=6, mcca_dim=6)
    seen: list[str] = []
    a = evaluate_grid(data["train"], data["eval"], data["labels"], lat, cfg, on_progress=seen.append)
    b = evaluate_grid(data["train"], data["eval"], data["labels"], lat, cfg)
    assert list(a.columns) == list(COLUMNS)
    assert a["method"].unique().tolist() == ["image", "audio", "text", "fused_pca", "mcca", "spectral_pca", "mmae"]
    assert sorted(set(a["k"])) == [4, 6, 8] and len(a) == 21
    assert (a.loc[a["method"] == "spectral_pca", "cluster"] == "spectral").all()
    assert (a.loc[a["method"] != "spectral_pca", "cluster"] == "kmeans").all() and (a["k_found_by"] == "given").all()
    assert (a["split"] == "test").all() and (a["n_items"] == len(data["labels"])).all()
    pd.testing.assert_frame_equal(a, b)
    for col in ("silhouette", "ari", "nmi", "calinski_harabasz", "davies_bouldin"):
        assert a[col].notna().all(), col
    assert a["silhouette"].between(-1, 1).all() and a["ari"].between(-1, 1).all()
    assert seen, "progress messages were expected"
    assert set(a.attrs["timings"]) == set(a["method"])
    # the image view carries the class; random latents do not
    best = a.groupby("method")["ari"].max()
    assert best["image"] > best["mmae"] + 0.3


def test_grid_silhouette_is_scored_on_the_clustered_representation() -> None:
    data = three_views(n_per=20)
    cfg = EvalConfig(k_grid=(6,), n_init=2)
    table = evaluate_grid({"image": data["train"]["image"]}, {"image": data["eval"]["image"]}, data["labels"], None, cfg)
    assert table["method"].tolist() == ["image"]  # one modality: no fusion, no MCCA, no MMAE
    from mmae_core.evaluation.baselines import UnimodalPCA

    z = UnimodalPCA("image", 50).fit({"image": data["train"]["image"]}).transform({"image": data["eval"]["image"]})
    pred = kmeans_labels(z, 6, 2, cfg.seed)
    assert table["silhouette"].iloc[0] == pytest.approx(silhouette_score(z, pred), abs=1e-5)


def test_grid_samples_silhouette_with_the_seed_above_the_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    import mmae_core.evaluation.evaluate as ev
    from mmae_core.evaluation.baselines import UnimodalPCA

    monkeypatch.setattr(ev, "SILHOUETTE_FULL_MAX", 50)  # a small threshold instead of 10,000 real items
    data = three_views(n_per=20)
    one = {"image": data["train"]["image"]}, {"image": data["eval"]["image"]}
    cfg = EvalConfig(k_grid=(6,), n_init=2)
    table = ev.evaluate_grid(one[0], one[1], data["labels"], None, cfg)
    assert table.attrs["silhouette"] == "sample of 50"
    z = UnimodalPCA("image", 50).fit(one[0]).transform(one[1])
    pred = kmeans_labels(z, 6, 2, cfg.seed)
    expected = silhouette_score(z, pred, sample_size=50, random_state=cfg.seed)  # scikit-learn's sampling
    assert table["silhouette"].iloc[0] == pytest.approx(expected, abs=1e-5)


def test_grid_without_labels_has_nan_ari_nmi_and_says_why() -> None:
    data = three_views(n_per=15)
    cfg = EvalConfig(k_grid=(3, 5), n_init=1)
    t = evaluate_grid(data["train"], data["eval"], None, None, cfg)
    assert t["ari"].isna().all() and t["nmi"].isna().all()
    assert (t["note"] == NO_LABELS_NOTE).all() and t.attrs["note"] == NO_LABELS_NOTE
    assert t["calinski_harabasz"].notna().all() and t["davies_bouldin"].notna().all() and t["silhouette"].notna().all()


def test_grid_refuses_k_larger_than_the_split() -> None:
    data = three_views(n_per=5)  # 30 items
    with pytest.raises(ConfigError, match="larger than the 30 items"):
        evaluate_grid(data["train"], data["eval"], data["labels"], None, EvalConfig(k_grid=(10, 31)))


def test_grid_leaves_items_lacking_a_modality_out_of_its_unimodal_rows_only() -> None:
    data = three_views(n_per=20)
    ev = {m: x.copy() for m, x in data["eval"].items()}
    ev["audio"][:7] = np.nan
    tr = {m: x.copy() for m, x in data["train"].items()}
    tr["audio"][:11] = np.nan
    t = evaluate_grid(tr, ev, data["labels"], None, EvalConfig(k_grid=(6,), n_init=1))
    audio = t[t["method"] == "audio"].iloc[0]
    assert audio["n_items"] == 113 and "7 items lack audio" in audio["note"]
    for m in ("image", "fused_pca", "mcca"):
        assert t[t["method"] == m]["n_items"].iloc[0] == 120
    assert t[["silhouette", "ari", "nmi"]].notna().all().all()


def test_grid_rejects_latents_of_another_length() -> None:
    data = three_views(n_per=5)
    with pytest.raises(ConfigError, match="latents"):
        evaluate_grid(data["train"], data["eval"], None, np.zeros((3, 4), np.float32), EvalConfig(k_grid=(3,)))


# --- the paper's rows ----------------------------------------------------------------------------

def test_paper_reference_rows() -> None:
    ref = paper_reference()
    assert len(ref) == 10 and (ref["source"] == "paper").all()
    assert {"method", "k", "silhouette", "ari", "nmi", "table"} <= set(ref.columns)
    assert ref.groupby("table").size().to_dict() == {"II": 3, "III": 3, "IV": 4}
    assert ref[ref["table"] == "II"]["k"].isna().all()
    img = ref[(ref["table"] == "II") & (ref["method"] == "image")].iloc[0]
    assert (img["silhouette"], img["ari"], img["nmi"]) == (0.418, 0.545, 0.724)
    mmae42 = ref[(ref["method"] == "mmae") & (ref["k"] == 42)].iloc[0]
    assert (mmae42["silhouette"], mmae42["ari"], mmae42["nmi"]) == (0.630, 0.914, 0.962)
    fused30 = ref[(ref["method"] == "fused_pca") & (ref["k"] == 30)].iloc[0]
    assert (fused30["silhouette"], fused30["ari"], fused30["nmi"]) == (0.392, 0.456, 0.695)
    audio = ref[ref["method"] == "audio"].iloc[0]
    assert (audio["ari"], audio["nmi"]) == (0.053, 0.227)


def test_benchmark_script_smoke_run() -> None:
    """The evaluation benchmark runs end to end on a small random set and finds identical runs."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "eval_grid.py"), "--random", "--scale", "0.05", "--runs", "2"],
        capture_output=True, text=True, timeout=300, cwd=root,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "identical tables across runs: True" in out.stdout
    assert "evaluate_grid median" in out.stdout and "mcca" in out.stdout
