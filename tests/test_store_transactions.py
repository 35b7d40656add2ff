"""Every action is one transaction: a failure in the middle, or a crash, leaves every table unchanged."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from store import Store, StoreError

from testkit.data import make_featureset, make_latents, proposal_table, store_with_proposals, table_rows

ROOT = Path(__file__).resolve().parents[1]


def test_model_whose_second_split_is_wrong_leaves_no_model(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    fs = make_featureset()
    store.add_dataset(fs)
    before = store.checksum()
    latents = make_latents(fs)
    latents["test"]["fused"] = latents["test"]["fused"][:-1]  # one row short, found after train was written
    with pytest.raises(StoreError) as err:
        store.add_model("toy", "m1", b"w", {}, {}, latents)
    assert "test/fused" in str(err.value)
    assert store.checksum() == before
    assert store.list_models().empty


def test_proposals_with_a_foreign_item_are_not_saved(tmp_path):
    store, fs = store_with_proposals(tmp_path / "s.duckdb")
    before = store.checksum()
    ids = fs.splits["train"].item_ids.copy()
    ids[-1] = "te000"  # an item of the test split
    with pytest.raises(StoreError) as err:
        store.save_proposals("toy", "m1", "train", 3, proposal_table(3), ids, np.arange(len(ids)) % 3)
    assert "te000" in str(err.value)
    assert store.checksum() == before


def test_duplicate_assignment_is_refused_as_a_sentence(tmp_path):
    store, fs = store_with_proposals(tmp_path / "s.duckdb")
    before = store.checksum()
    ids = fs.splits["train"].item_ids.copy()
    ids[1] = ids[0]
    with pytest.raises(StoreError) as err:
        store.save_proposals("toy", "m1", "train", 3, proposal_table(3), ids, np.arange(len(ids)) % 3)
    assert "nothing was saved" in str(err.value)
    assert store.checksum() == before


def test_replace_that_fails_midway_keeps_the_old_dataset(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    store.add_dataset(make_featureset(seed=1))
    before = store.checksum()
    fs = make_featureset(seed=2)
    n = fs.splits["test"].n
    fs.splits["test"].meta = pd.DataFrame(np.zeros((n, 2)), columns=["a", "a"])  # found after train is written
    with pytest.raises(StoreError) as err:
        store.add_dataset(fs, replace=True)
    assert "'a' twice" in str(err.value)
    assert store.checksum() == before
    assert store.dataset_names(backups=True) == ["toy"]


def test_store_calls_inside_one_transaction_commit_or_roll_back_together(tmp_path):
    store, _ = store_with_proposals(tmp_path / "s.duckdb")
    before = store.checksum()
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.accept("toy", "m1", 0, "ann")
            store.set_item("toy", "te001", "odd one", "ann")
            assert len(store.history("toy")) == 2  # visible inside the transaction
            raise RuntimeError("the curator's browser went away")
    assert store.checksum() == before

    with store.transaction():
        store.accept("toy", "m1", 0, "ann")
        store.set_item("toy", "te001", "odd one", "ann")
    assert len(store.history("toy")) == 2


def test_constraint_violation_inside_a_transaction_rolls_back(tmp_path):
    store, _ = store_with_proposals(tmp_path / "s.duckdb")
    store.set_item("toy", "tr000", "first", "ann")
    before = store.checksum()
    with pytest.raises(StoreError) as err:
        with store.transaction() as con:
            store.set_item("toy", "tr001", "second", "ann")
            con.execute("INSERT INTO tags SELECT * FROM tags")  # duplicate primary keys
    assert "nothing was saved" in str(err.value)
    assert store.checksum() == before


def _run(code: str, path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), str(path)], env=env, capture_output=True,
                          text=True, timeout=120)


def test_a_crash_mid_transaction_loses_only_the_unfinished_action(tmp_path):
    path = tmp_path / "s.duckdb"
    store, _ = store_with_proposals(path)
    before = store.checksum()
    result = _run(
        """
        import os, sys
        from store import Store
        s = Store(sys.argv[1])
        s.set_item("toy", "tr005", "committed", "ann")
        with s.transaction():
            s.accept("toy", "m1", 1, "bob")
            s.set_item("toy", "tr006", "never committed", "bob")
            os._exit(3)  # the process dies without COMMIT or ROLLBACK
        """,
        path,
    )
    assert result.returncode == 3, result.stderr
    reopened = Store(path)
    tags = table_rows(reopened, "tags")
    assert [(r[1], r[2]) for r in tags] == [("tr005", "committed")]
    assert len(reopened.history("toy")) == 1
    # undoing the committed decision brings tags back to the state before the crashed process ran
    reopened.undo("toy", "ann")
    assert table_rows(reopened, "tags") == []
    assert reopened.checksum() != before  # the audit trail keeps both events


def test_a_crash_during_a_large_write_leaves_nothing_half_written(tmp_path):
    path = tmp_path / "s.duckdb"
    store = Store(path)
    store.add_dataset(make_featureset(name="kept"))
    before = store.checksum()
    result = _run(
        """
        import os, sys, threading
        import numpy as np
        from mmae_core.data.dataset import FeatureSet, Split
        from store import Store
        n = 20000
        x = np.random.default_rng(0).normal(size=(n, 512)).astype(np.float32)
        fs = FeatureSet("big", {"a": 512, "b": 512}, {"train": Split(
            np.asarray([f"i{i}" for i in range(n)], dtype=object), {"a": x, "b": x})})
        s = Store(sys.argv[1])
        threading.Timer(0.3, lambda: os._exit(4)).start()  # die somewhere inside the write
        s.add_dataset(fs)
        os._exit(5)
        """,
        path,
    )
    assert result.returncode in (4, 5), result.stderr
    reopened = Store(path)
    # all or nothing: the store as before, or the whole dataset (a fast machine commits before the
    # timer, which may still fire in the moment between COMMIT and the exit that follows it)
    if result.returncode == 5 or reopened.dataset_names() != ["kept"]:
        assert reopened.dataset_names() == ["big", "kept"]
        assert reopened.load_dataset("big").splits["train"].n == 20000
    else:
        assert reopened.checksum() == before
