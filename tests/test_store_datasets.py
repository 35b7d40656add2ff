"""Datasets in the store: exact round trip, replace with backup, listing, deletion, large blocks."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from mmae_core.data.dataset import FeatureSet, Split
from mmae_core.errors import DataError
from store import NotFoundError, Store, StoreError
from store import datasets as store_datasets

from testkit.data import make_featureset, make_latents, one_sentence, table_rows


def assert_same_featureset(a: FeatureSet, b: FeatureSet) -> None:
    assert a.name == b.name
    assert list(a.modalities.items()) == list(b.modalities.items())
    assert a.synthetic == b.synthetic and a.source == b.source and a.attrs == b.attrs
    assert list(a.splits) == list(b.splits)
    for s in a.splits:
        x, y = a.splits[s], b.splits[s]
        assert y.item_ids.dtype == object and x.item_ids.tolist() == y.item_ids.tolist()
        if x.labels is None:
            assert y.labels is None
        else:
            assert y.labels is not None and y.labels.dtype == object and x.labels.tolist() == y.labels.tolist()
        for m in a.modalities:
            assert y.features[m].dtype == np.float32
            np.testing.assert_array_equal(x.features[m], y.features[m])  # NaN rows compare equal here
        if x.meta is None:
            assert y.meta is None
        else:
            pd.testing.assert_frame_equal(x.meta.reset_index(drop=True), y.meta)


def test_round_trip_keeps_missing_rows_labels_and_metadata(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    fs = make_featureset()
    summary = store.add_dataset(fs)
    assert summary["items"] == 42 and summary["splits"] == {"train": 30, "test": 12} and summary["replaced"] is None
    back = store.load_dataset("toy")
    assert_same_featureset(fs, back)
    assert np.isnan(back.splits["train"].features["audio"][7]).all()
    assert back.splits["train"].missing_counts() == {"image": 0, "audio": 2, "text": 1}
    assert back.splits["test"].labels is None
    back.validate()


def test_split_without_metadata_and_odd_split_order(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    fs = make_featureset()
    fs.splits = {"test": fs.splits["test"], "train": fs.splits["train"]}
    fs.splits["test"].meta = None
    store.add_dataset(fs)
    back = store.load_dataset("toy")
    assert list(back.splits) == ["test", "train"]
    assert back.splits["test"].meta is None


def test_existing_name_needs_replace_and_replace_keeps_a_backup(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    first = make_featureset(seed=1)
    store.add_dataset(first)
    store.add_model("toy", "m1", b"w", {}, {}, make_latents(first))
    before = store.checksum()
    with pytest.raises(StoreError) as err:
        store.add_dataset(make_featureset(seed=2))
    assert "--replace" in str(err.value) and one_sentence(str(err.value))
    assert store.checksum() == before

    second = make_featureset(seed=2)
    summary = store.add_dataset(second, replace=True)
    backup = summary["replaced"]
    assert backup.startswith("toy@replaced-")
    assert store.dataset_names() == ["toy"]
    assert store.dataset_names(backups=True) == sorted(["toy", backup])
    assert_same_featureset(second, store.load_dataset("toy"))
    old = store.load_dataset(backup)
    np.testing.assert_array_equal(old.splits["train"].features["image"], first.splits["train"].features["image"])
    # the old dataset's model moved with it; the new dataset starts without models
    assert store.latest_model(backup) == "m1" and store.latest_model("toy") is None


def test_invalid_featureset_writes_nothing(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    store.add_dataset(make_featureset(name="other"))
    before = store.checksum()
    fs = make_featureset()
    fs.splits["test"].item_ids[0] = fs.splits["train"].item_ids[0]  # id in two splits
    with pytest.raises(DataError):
        store.add_dataset(fs)
    assert store.checksum() == before


def test_list_and_delete(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    store.add_dataset(make_featureset(name="a"))
    empty = store.checksum()
    fs = make_featureset(name="b")
    store.add_dataset(fs)
    store.add_model("b", "m", b"w", {}, {}, make_latents(fs))
    store.set_item("b", "tr000", "x", "ann")
    listing = store.list_datasets()
    assert listing["name"].tolist() == ["a", "b"]
    row = listing.set_index("name").loc["b"]
    assert row["splits"] == "train, test" and row["items"] == 42 and bool(row["synthetic"])
    assert row["modalities"] == "image:6, audio:4, text:5"
    store.delete_dataset("b")
    assert store.dataset_names() == ["a"]
    assert table_rows(store, "tags") == [] and table_rows(store, "tag_events") == []
    assert store.checksum() == empty  # every table, latents included, is back to its old rows
    with pytest.raises(NotFoundError) as err:
        store.delete_dataset("b")
    assert "'b'" in str(err.value) and one_sentence(str(err.value))


def test_unknown_dataset_is_a_sentence_naming_the_choices(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    with pytest.raises(NotFoundError) as err:
        store.load_dataset("nope")
    assert "no datasets yet" in str(err.value) and one_sentence(str(err.value))
    store.add_dataset(make_featureset(name="real"))
    with pytest.raises(NotFoundError) as err:
        store.load_dataset("nope")
    assert "real" in str(err.value) and one_sentence(str(err.value))


def test_large_block_is_chunked_and_exact(tmp_path):
    rng = np.random.default_rng(3)
    n, d = 21000, 1024
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[5] = np.nan
    small = rng.normal(size=(n, 2)).astype(np.float32)
    fs = FeatureSet(
        name="big", modalities={"audio": d, "image": 2},
        splits={"train": Split(np.asarray([f"i{i}" for i in range(n)], dtype=object), {"audio": x, "image": small})},
    )
    store = Store(tmp_path / "s.duckdb")
    with store.transaction() as con:  # the block form that stores made before the features folder
        store_datasets.add(con, fs, replace=False)
        chunks = con.execute(
            "SELECT count(*), sum(n_rows), max(octet_length(data)) FROM features WHERE modality = 'audio'"
        ).fetchall()[0]
    assert chunks[0] > 1 and chunks[1] == n and chunks[2] <= 33 * 1024 * 1024
    back = store.load_dataset("big")
    np.testing.assert_array_equal(back.splits["train"].features["audio"], x)
    assert back.splits["train"].labels is None and back.splits["train"].meta is None
    rows = store.feature_rows("big", "train")  # old stores still train: from memory
    np.testing.assert_array_equal(rows.take("audio", np.array([7, 5, 3])), x[[7, 5, 3]])


def test_features_go_to_the_folder_beside_the_store_exactly(tmp_path):
    rng = np.random.default_rng(4)
    n = 5000
    x = rng.normal(size=(n, 300)).astype(np.float32)
    x[9] = np.nan
    fs = FeatureSet(
        name="f", modalities={"audio": 300, "image": 2},
        splits={"train": Split(np.asarray([f"i{i}" for i in range(n)], dtype=object),
                               {"audio": x, "image": rng.normal(size=(n, 2)).astype(np.float32)})},
    )
    store = Store(tmp_path / "s.duckdb")
    store.add_dataset(fs)
    with store.reader() as con:
        assert con.execute("SELECT count(*) FROM features").fetchone()[0] == 0
    files = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "s.duckdb.features").rglob("*.npy"))
    assert len(files) == 2 and files[0].endswith("/train/audio.npy")
    np.testing.assert_array_equal(np.load(tmp_path / files[0]), x)
    back = store.load_dataset("f")
    np.testing.assert_array_equal(back.splits["train"].features["audio"], x)
    assert "features_folder" not in back.attrs
    lazy = store.load_dataset("f", lazy=True).splits["train"].features["audio"]
    np.testing.assert_array_equal(lazy[100:300], x[100:300])
    rows = store.feature_rows("f", "train")
    np.testing.assert_array_equal(rows.take("audio", np.array([42, 9, 1])), x[[42, 9, 1]])
    store.delete_dataset("f")
    assert not any((tmp_path / "s.duckdb.features").iterdir())


def test_orphan_folders_are_collected_but_live_temp_folders_kept(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    store.add_dataset(make_featureset(name="a"))
    base = tmp_path / "s.duckdb.features"
    (base / "deadbeef").mkdir()  # published, never committed (killed between rename and COMMIT)
    (base / ".tmp-999999999-abc").mkdir()  # a temp folder of a process that is gone
    live = base / f".tmp-{os.getpid()}-live"
    live.mkdir()  # another import still writing
    store.add_dataset(make_featureset(name="b"))
    left = {p.name for p in base.iterdir()}
    assert "deadbeef" not in left and ".tmp-999999999-abc" not in left and live.name in left
    assert len(left) == 3
    assert store.load_dataset("a").splits["train"].n > 0


def test_catalog_metadata_is_never_stale_across_replace_and_store_files(tmp_path):
    """The catalog keeps decoded metadata per process (store/catalog.py); a replaced dataset of the
    same name, or another store file with the same dataset id, must still show its own metadata."""
    def with_titles(word: str, seed: int = 0) -> FeatureSet:
        fs = make_featureset(seed=seed)
        for sp in fs.splits.values():
            sp.meta = pd.DataFrame({"title": [f"{word} {i}" for i in sp.item_ids]})
        return fs

    a, b = Store(tmp_path / "a.duckdb"), Store(tmp_path / "b.duckdb")
    a.add_dataset(with_titles("first"))
    b.add_dataset(with_titles("other"))  # same dataset id (1) in another file
    assert a.catalog("toy", ["tr001"])["title"].tolist() == ["first tr001"]
    assert b.catalog("toy", ["tr001"])["title"].tolist() == ["other tr001"]
    a.add_dataset(with_titles("second"), replace=True)
    assert a.catalog("toy", ["tr001", "te002"])["title"].tolist() == ["second tr001", "second te002"]
    full = a.catalog("toy")
    assert len(full) == 42 and full["title"].str.startswith("second ").all()
