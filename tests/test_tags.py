"""Proposed tags: sizes, purity, cohesion, names (labels, TF-IDF, fallback, unique), representatives."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import silhouette_samples

from mmae_core.errors import ConfigError
from mmae_core.clustering.proposals import TABLE_COLUMNS, distinctive_words, propose

ANIMALS = ["dog", "violin", "airplane", "cactus"]
SCENES = ["park", "studio", "street", "beach", "kitchen"]


def blobs(n_per: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((len(ANIMALS), 6)) * 10
    y = np.repeat(np.arange(len(ANIMALS)), n_per)
    x = (centers[y] + rng.standard_normal((len(y), 6))).astype(np.float32)
    ids = np.array([f"item-{i:04d}" for i in range(len(y))], dtype=object)
    return x, y, ids


def captions(y: np.ndarray, seed: int = 0) -> list[str]:
    """Each caption names its class and a scene shared by every class (the distractor)."""
    rng = np.random.default_rng(seed)
    return [f"A {ANIMALS[c]} in the {SCENES[rng.integers(len(SCENES))]}, a fine {ANIMALS[c]} shot 2024" for c in y]


def test_table_shape_sizes_purity_and_cohesion() -> None:
    x, y, ids = blobs()
    labels = np.array([ANIMALS[c] for c in y], dtype=object)
    p = propose(x, ids, 4, labels=labels, seed=1)
    t = p.table
    assert list(t.columns) == list(TABLE_COLUMNS)
    assert t["size"].sum() == len(x) and t["cluster"].tolist() == [0, 1, 2, 3]
    assert t["size"].is_monotonic_decreasing
    assert t["purity"].between(0, 1).all() and (t["purity"] == 1.0).all()
    assert p.assignments.shape == (len(x),) and set(p.assignments) == {0, 1, 2, 3}
    assert np.array_equal(np.bincount(p.assignments), t["size"].to_numpy())
    sil = silhouette_samples(x, p.assignments)
    for c in range(4):
        assert t.loc[c, "cohesion"] == pytest.approx(sil[p.assignments == c].mean(), abs=1e-5)


def test_names_come_from_the_majority_label_with_its_purity() -> None:
    x, y, ids = blobs()
    labels = np.array([ANIMALS[c] for c in y], dtype=object)
    labels[0] = "violin"  # one wrong label in the dog cluster
    labels[1] = None  # and one unlabelled item
    p = propose(x, ids, 4, labels=labels)
    t = p.table
    assert sorted(t["name"]) == sorted(ANIMALS) and (t["name_source"] == "label").all()
    assert (t["name"] == t["majority_label"]).all()
    dog = t[t["name"] == "dog"].iloc[0]
    assert dog["purity"] == pytest.approx(28 / 29)  # 28 dogs of the 29 labelled members


def test_names_come_from_distinctive_caption_words_without_labels() -> None:
    x, y, ids = blobs()
    p = propose(x, ids, 4, texts=captions(y))
    t = p.table
    assert (t["name_source"] == "text").all()
    for c in range(4):
        members = y[p.assignments == c]
        animal = ANIMALS[np.bincount(members).argmax()]
        assert t.loc[c, "name"] == animal  # the shared scene and filler words do not make the cut


def test_distinctive_words_prefer_concentrated_words_over_shared_ones() -> None:
    texts = ["red apple park", "red apple park", "blue sea park", "blue sea park", "blue sea", "sea park"]
    words = distinctive_words(texts, np.array([0, 0, 1, 1, 1, 1]), 2)
    assert words == [["apple", "red"], ["sea", "blue"]]  # "park" is as common in both: never chosen
    assert distinctive_words(["", " "], np.array([0, 1]), 2) == [[], []]


def test_fallback_names_when_there_is_neither_label_nor_text() -> None:
    x, y, ids = blobs()
    t = propose(x, ids, 4).table
    assert t["name"].tolist() == ["cluster-00", "cluster-01", "cluster-02", "cluster-03"]
    assert (t["name_source"] == "fallback").all() and t["purity"].isna().all() and t["majority_label"].isna().all()
    empty = propose(x, ids, 4, texts=["" for _ in ids]).table
    assert empty["name"].tolist() == ["cluster-00", "cluster-01", "cluster-02", "cluster-03"]


def test_names_are_unique_within_a_set() -> None:
    x, y, ids = blobs()
    labels = np.array(["dog" if c < 2 else ANIMALS[c] for c in y], dtype=object)
    t = propose(x, ids, 4, labels=labels).table
    assert t["name"].is_unique
    assert sorted(t["name"]) == sorted(["dog", "dog-2", "airplane", "cactus"])


def test_representatives_are_the_items_nearest_the_centroid() -> None:
    x, y, ids = blobs()
    p = propose(x, ids, 4, n_repr=3)
    for c in range(4):
        members = np.flatnonzero(p.assignments == c)
        centroid = x[members].mean(0)
        d = np.linalg.norm(x[members] - centroid, axis=1)
        expected = [ids[i] for i in members[np.argsort(d, kind="stable")[:3]]]
        assert p.table.loc[c, "representatives"] == expected


def test_items_without_latents_are_not_assigned() -> None:
    x, y, ids = blobs()
    x[[5, 50]] = np.nan
    p = propose(x, ids, 4)
    assert p.assignments[5] == -1 and p.assignments[50] == -1
    assert p.table["size"].sum() == len(x) - 2


def test_same_seed_same_proposals() -> None:
    x, y, ids = blobs()
    a, b = propose(x, ids, 5, seed=3), propose(x, ids, 5, seed=3)
    assert np.array_equal(a.assignments, b.assignments) and a.table.equals(b.table)


@pytest.mark.parametrize("k", [0, 1, 121, 500])
def test_k_out_of_range_is_a_config_error_sentence(k: int) -> None:
    x, y, ids = blobs()
    with pytest.raises(ConfigError, match=r"choose k between 2 and 120\.$"):
        propose(x, ids, k)
