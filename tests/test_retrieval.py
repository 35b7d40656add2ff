"""Cross-modal search and its metrics: exact on constructed cases, near chance on noise, missing rows
skipped, and query vectors from files checked without unpickling."""
from __future__ import annotations

import io

import numpy as np
import pytest

from mmae_core.errors import DataError
from mmae_core.search.retrieval import load_query_vector, nearest, retrieval_metrics


def classes(n_classes: int = 5, per: int = 20, d: int = 12, noise: float = 0.05, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, d)) * 5
    y = np.repeat(np.arange(n_classes), per)
    labels = np.array([f"c{i}" for i in y], dtype=object)
    base = centres[y] + rng.normal(size=(len(y), d))  # the item itself, shared by its modalities
    mods = {m: (base + noise * rng.normal(size=base.shape)).astype(np.float32) for m in ("image", "audio", "text")}
    return mods, labels, base.astype(np.float32)


def test_nearest_matches_brute_force_for_both_metrics():
    rng = np.random.default_rng(1)
    t = rng.normal(size=(50, 8))
    q = rng.normal(size=8)
    idx, sim = nearest(q, t, top=5)
    cos = (t @ q) / np.linalg.norm(t, axis=1) / np.linalg.norm(q)
    assert idx.tolist() == np.argsort(-cos)[:5].tolist()
    np.testing.assert_allclose(sim, np.sort(cos)[::-1][:5])
    idx, dist = nearest(q, t, top=5, metric="euclidean")
    d = np.linalg.norm(t - q, axis=1)
    assert idx.tolist() == np.argsort(d)[:5].tolist()
    np.testing.assert_allclose(dist, np.sort(d)[:5], rtol=1e-6)


def test_nearest_skips_missing_rows_excludes_on_request_and_batches():
    t = np.eye(4, dtype=np.float32)
    t[1] = np.nan
    idx, _ = nearest(np.array([0.0, 1.0, 0.1, 0.0]), t, top=10)
    assert 1 not in idx.tolist() and len(idx) == 3 and idx[0] == 2
    idx, _ = nearest(np.array([1.0, 0, 0, 0]), t, top=2, exclude=0)
    assert 0 not in idx.tolist()
    many, _ = nearest(np.eye(4)[[0, 3]], t, top=1)
    assert many.shape == (2, 1) and many[:, 0].tolist() == [0, 3]


def test_nearest_refuses_bad_queries_in_a_sentence():
    t = np.zeros((3, 4))
    with pytest.raises(DataError, match="3 dimensions but the targets have 4"):
        nearest(np.zeros(3), t)
    with pytest.raises(DataError, match="missing"):
        nearest(np.array([np.nan, 0, 0, 0]), t)
    with pytest.raises(DataError, match="not a search metric"):
        nearest(np.zeros(4), t, metric="manhattan")


def test_perfect_alignment_gives_perfect_class_and_instance_scores():
    mods, labels, fused = classes()
    table = retrieval_metrics(mods, labels, fused=fused, k=10)
    assert len(table) == 3 * 2 + 3
    assert set(zip(table["query"], table["target"])) >= {("image", "text"), ("text", "image"), ("fused", "audio")}
    assert (table["p_at_10"] == 1.0).all() and (table["map"] == 1.0).all()
    assert (table["r_at_1"] == 1.0).all() and (table["median_rank"] == 1.0).all()
    assert (table["queries"] == 100).all()


def test_random_latents_score_near_chance():
    rng = np.random.default_rng(7)
    n, n_classes = 400, 10
    labels = np.array([f"c{i % n_classes}" for i in range(n)], dtype=object)
    mods = {m: rng.normal(size=(n, 16)).astype(np.float32) for m in ("a", "b")}
    table = retrieval_metrics(mods, labels).set_index(["query", "target"])
    for pair in [("a", "b"), ("b", "a")]:
        row = table.loc[pair]
        assert abs(row["p_at_10"] - 1 / n_classes) < 0.04
        assert abs(row["map"] - 1 / n_classes) < 0.04
        assert row["r_at_10"] < 0.08 and row["r_at_1"] < 0.02
        assert abs(row["median_rank"] - n / 2) < n * 0.15


def test_the_query_item_is_left_out_of_class_metrics():
    # two items per class: with the query's own latent counted, P@1 would be 1 even for a bad neighbour
    a = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    labels = np.array(["x", "y", "x", "y"], dtype=object)  # the nearest *other* item has the other label
    table = retrieval_metrics({"a": a, "b": a.copy()}, labels, k=1)
    assert (table["p_at_1"] == 0.0).all() and (table["r_at_1"] == 1.0).all()


def test_missing_modality_rows_are_neither_queries_nor_results():
    mods, labels, _ = classes(per=12)
    mods["text"][::12] = np.nan  # one item of each class lacks text; 11 per class are left
    table = retrieval_metrics(mods, labels).set_index(["query", "target"])
    assert table.loc[("text", "image"), "queries"] == 55 and table.loc[("image", "text"), "queries"] == 60
    assert table.loc[("image", "text"), "p_at_10"] == 1.0
    # items without a text latent cannot be found by their own text latent: R@10 counts only those that can
    assert table.loc[("image", "text"), "r_at_1"] == 1.0


def test_without_labels_only_instance_metrics_are_given():
    mods, _, _ = classes(per=4)
    table = retrieval_metrics(mods, None)
    assert table["p_at_10"].isna().all() and table["map"].isna().all() and (table["r_at_1"] == 1.0).all()


def test_misaligned_inputs_are_refused():
    mods, labels, _ = classes(per=4)
    with pytest.raises(DataError, match="different row counts"):
        retrieval_metrics(mods, labels[:-1])


# -- query vectors from files ---------------------------------------------------------------------
def npy(arr, pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=pickle)
    return buf.getvalue()


def test_load_query_vector_accepts_one_vector_in_either_shape():
    v = np.arange(5, dtype=np.float64)
    np.testing.assert_array_equal(load_query_vector(npy(v), 5, "audio"), v.astype(np.float32))
    assert load_query_vector(npy(v[None, :]), 5, "audio").shape == (5,)


@pytest.mark.parametrize("data, words", [
    (npy(np.zeros((2, 5))), "shape (2, 5)"),
    (npy(np.zeros(4)), "one vector of 5 values"),
    (npy(np.array(["a"] * 5)), "not numbers"),
    (npy(np.array([1.0, np.nan, 0, 0, 0])), "NaN"),
    (npy(np.array([{"x": 1}], dtype=object), pickle=True), "Python objects"),
    (b"PK\x03\x04rest", ".npz archive"),
    (b"plain text", "not a readable .npy"),
    (b"\x93NUMPY\x01\x00broken", "not a readable .npy"),
])
def test_load_query_vector_refuses_bad_files_in_one_sentence(data, words):
    with pytest.raises(DataError) as err:
        load_query_vector(data, 5, "audio", name="q.npy")
    text = str(err.value)
    assert words in text and text.startswith("q.npy") and text.endswith(".") and "\n" not in text


# -- the search index (mmae_core.search.index) ------------------------------------------------------
from mmae_core.search.index import IndexCache, LatentIndex  # noqa: E402


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_exact_index_ranks_as_nearest_and_skips_missing_rows(metric):
    rng = np.random.default_rng(3)
    t = rng.normal(size=(300, 16)).astype(np.float32)
    t[[5, 77]] = np.nan
    index = LatentIndex(t, metric)
    assert index.exact and index.size == 298
    for q in rng.normal(size=(5, 16)):
        rows, scores = index.search(q, top=12)
        idx, ref = nearest(q, t, top=12, metric=metric)
        assert rows.tolist() == idx.tolist()
        np.testing.assert_allclose(scores, ref, rtol=1e-4, atol=1e-5)
        assert 5 not in rows and 77 not in rows
    rows, _ = index.search(rng.normal(size=16), top=1000)
    assert len(rows) == 298  # never more than the items that have the modality


def test_index_refuses_bad_queries_in_a_sentence():
    index = LatentIndex(np.eye(4, dtype=np.float32))
    with pytest.raises(DataError, match="3 dimensions but the targets have 4"):
        index.search(np.zeros(3))
    with pytest.raises(DataError, match="NaN"):
        index.search(np.array([np.nan, 0, 0, 0]))
    with pytest.raises(DataError, match="not a search metric"):
        LatentIndex(np.eye(4), "manhattan")


def test_approximate_index_finds_nearly_all_true_neighbours_of_clustered_latents():
    # latents of a trained model are clustered; an IVF index over them must keep recall@10 high
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, 32)) * 3
    x = (centres[rng.integers(0, 50, 20_000)] + rng.normal(size=(20_000, 32))).astype(np.float32)
    ivf = LatentIndex(x, "cosine", exact=False)
    assert not ivf.exact
    hits = []
    for q in x[rng.choice(len(x), 50, replace=False)] + 0.1 * rng.normal(size=(50, 32)):
        rows, _ = ivf.search(q, 10)
        truth, _ = nearest(q, x, top=10)
        hits.append(len(set(rows.tolist()) & set(truth.tolist())) / 10)
    assert np.mean(hits) >= 0.9


def test_index_cache_builds_once_per_fingerprint():
    cache = IndexCache(max_entries=2)
    made = []

    def build(v):
        return lambda: made.append(v) or v

    assert cache.get("a", 1, build("a1")) == "a1"
    assert cache.get("a", 1, build("never")) == "a1" and made == ["a1"]
    assert cache.get("a", 2, build("a2")) == "a2"  # the data changed: rebuilt
    cache.get("b", 1, build("b1"))
    cache.get("c", 1, build("c1"))  # "a" is the least recently used and drops out
    assert cache.get("a", 2, build("a2 again")) == "a2 again" and cache.builds == 5


from mmae_core.search.index import IndexFiles  # noqa: E402


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_index_files_give_back_the_same_answers_and_follow_the_fingerprint(tmp_path, metric):
    """A large index is saved beside the store so the next process (a CLI call) loads it instead of
    rebuilding; a new fingerprint replaces the old files, a damaged file is rebuilt, not an error."""
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(20, 16)) * 3
    x = (centres[rng.integers(0, 20, 5_000)] + rng.normal(size=(5_000, 16))).astype(np.float32)
    x[[3, 4000]] = np.nan
    ids = np.array([f"item-{i}" for i in range(len(x))], dtype=object)
    ivf = LatentIndex(x, metric, exact=False)
    files = IndexFiles(tmp_path / "s.duckdb.indexes", min_rows=1_000)
    key = ("s.duckdb", "demo", "m", "test", "image", metric)
    assert files.load(key, (1, "t", 5_000)) is None
    assert files.save(key, (1, "t", 5_000), ids, ivf) and files.saves == 1
    got_ids, back = files.load(key, (1, "t", 5_000))
    assert not back.exact and back.size == ivf.size == 4_998 and back.dim == 16 and back.metric == metric
    assert got_ids.tolist() == ids.tolist()
    for q in x[rng.choice(len(x), 20)] + 0.05:
        if np.isfinite(q).all():
            (r1, s1), (r2, s2) = ivf.search(q, 10), back.search(q, 10)
            assert r1.tolist() == r2.tolist()
            np.testing.assert_allclose(s1, s2, rtol=1e-5)
    assert files.load(key, (2, "t", 5_000)) is None  # other latents: not this file
    files.save(key, (2, "t", 5_000), ids, ivf)
    assert len(list(files.folder.glob("*"))) == 2  # the old fingerprint's files are gone
    for f in files.folder.glob("*.faiss"):
        f.write_bytes(b"not an index")
    assert files.load(key, (2, "t", 5_000)) is None  # damaged: rebuilt by the caller
    small = IndexFiles(tmp_path / "other", min_rows=10_000)
    assert not small.save(key, (1, "t", 5_000), ids, ivf) and not small.folder.exists()
