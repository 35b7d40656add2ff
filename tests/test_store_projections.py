"""Stored 2-D maps (``store/projections.py``): saved once per key, read back exactly, the first save
wins when two sessions race, and bad keys are refused in one sentence with the store unchanged."""
from __future__ import annotations

import numpy as np
import pytest

from store import NotFoundError, Store, StoreError

from testkit.data import make_featureset, make_latents, one_sentence


@pytest.fixture
def store(tmp_path) -> Store:
    s = Store(tmp_path / "s.duckdb", linger=1.0)
    fs = make_featureset()
    s.add_dataset(fs)
    s.add_model("toy", "m1", b"weights", {"latent": 8}, {}, make_latents(fs))
    s.add_model("toy", "m2", b"weights", {"latent": 8}, {}, make_latents(fs, seed=1))
    return s


def xy(n: int, seed: int = 0) -> np.ndarray:
    out = np.random.default_rng(seed).normal(size=(n, 2)).astype(np.float32)
    out[1] = np.nan  # an item without this latent
    return out


def test_a_map_is_stored_once_and_read_back_exactly(store):
    assert store.projection("toy", "m1", "train", "fused", "pca", 42) is None
    a = xy(30)
    assert store.save_projection("toy", "m1", "train", "fused", "pca", 42, a, seconds=0.25) is True
    got = store.projection("toy", "m1", "train", "fused", "pca", 42)
    assert got.dtype == np.float32 and got.shape == (30, 2)
    np.testing.assert_array_equal(got, a)
    listing = store.projections("toy", "m1")
    assert listing[["split", "kind", "method", "seed", "points", "seconds"]].values.tolist() == [
        ["train", "fused", "pca", 42, 30, 0.25]]


def test_every_key_part_tells_maps_apart(store):
    base = ("toy", "m1", "train", "fused", "pca", 42)
    store.save_projection(*base, xy(30, 0))
    variants = [("toy", "m2", "train", "fused", "pca", 42), ("toy", "m1", "test", "fused", "pca", 42),
                ("toy", "m1", "train", "image", "pca", 42), ("toy", "m1", "train", "fused", "tsne", 42),
                ("toy", "m1", "train", "fused", "pca", 7)]
    for v in variants:
        assert store.projection(*v) is None
    for i, v in enumerate(variants, start=1):
        n = 12 if v[2] == "test" else 30
        assert store.save_projection(*v, xy(n, i))
    np.testing.assert_array_equal(store.projection(*base), xy(30, 0))
    assert len(store.projections("toy", "m1")) == 5 and len(store.projections("toy", "m2")) == 1


def test_the_first_save_wins_a_race_and_the_second_changes_nothing(store):
    key = ("toy", "m1", "train", "fused", "umap", 42)
    assert store.save_projection(*key, xy(30, 1))
    before = store.checksum()
    assert store.save_projection(*key, xy(30, 2)) is False
    assert store.checksum() == before
    np.testing.assert_array_equal(store.projection(*key), xy(30, 1))


def test_all_splits_and_overlay_keys_are_accepted(store):
    assert store.save_projection("toy", "m1", "all", "overlay", "pca", 42, xy(3 * 42))
    assert store.projection("toy", "m1", "all", "overlay", "pca", 42).shape == (126, 2)


@pytest.mark.parametrize("args, error, words", [
    (("nope", "m1", "train", "fused", "pca", 42), NotFoundError, "no dataset named 'nope'"),
    (("toy", "m9", "train", "fused", "pca", 42), NotFoundError, "no model named 'm9'"),
    (("toy", "m1", "ood", "fused", "pca", 42), NotFoundError, "no 'ood' split"),
    (("toy", "m1", "train", "", "pca", 42), StoreError, "latent kind"),
])
def test_bad_keys_are_one_sentence_and_change_nothing(store, args, error, words):
    before = store.checksum()
    with pytest.raises(error) as err:
        store.save_projection(*args, xy(30))
    assert words in str(err.value) and one_sentence(str(err.value))
    assert store.checksum() == before


def test_a_map_must_have_two_columns(store):
    before = store.checksum()
    with pytest.raises(StoreError, match=r"shape \(items, 2\)"):
        store.save_projection("toy", "m1", "train", "fused", "pca", 42, np.zeros((30, 3)))
    assert store.checksum() == before


def test_delete_drops_a_models_maps_only(store):
    from store import projections

    store.save_projection("toy", "m1", "train", "fused", "pca", 42, xy(30))
    store.save_projection("toy", "m2", "train", "fused", "pca", 42, xy(30))
    with store.transaction() as con:
        assert projections.delete(con, "toy", "m1") == 1
    assert store.projections("toy", "m1").empty and len(store.projections("toy", "m2")) == 1
