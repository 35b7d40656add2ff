"""Schema versions: a new store, reopening, migration with a backup, refusal of newer or foreign files."""
from __future__ import annotations

import duckdb
import pytest

from store import SCHEMA_VERSION, Store, StoreError
from store.schema import MIGRATIONS

from testkit.data import make_featureset, one_sentence, table_rows


def test_new_store_has_the_current_version_and_reopens(tmp_path):
    path = tmp_path / "sub" / "s.duckdb"  # a missing folder is created
    store = Store(path)
    assert store.version == SCHEMA_VERSION == len(MIGRATIONS) == 1
    store.add_dataset(make_featureset())
    again = Store(path)
    assert again.schema_version() == 1 and again.dataset_names() == ["toy"]
    assert len(table_rows(again, "schema_version")) == 1
    assert not list(tmp_path.glob("sub/*.bak-*"))  # nothing to migrate, nothing backed up


def _add_note_column(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("ALTER TABLE datasets ADD COLUMN note VARCHAR DEFAULT 'migrated'")


def test_older_store_is_backed_up_then_migrated(tmp_path):
    path = tmp_path / "s.duckdb"
    Store(path).add_dataset(make_featureset())
    newer = Store(path, migrations=[*MIGRATIONS, _add_note_column])
    assert newer.version == 2 and newer.schema_version() == 2
    with newer.reader() as con:
        assert con.execute("SELECT name, note FROM datasets").fetchall() == [("toy", "migrated")]
    backup = tmp_path / "s.duckdb.bak-v1"
    assert backup.exists()
    con = duckdb.connect(str(backup), read_only=True)
    try:
        assert con.execute("SELECT max(version) FROM schema_version").fetchall() == [(1,)]
        assert con.execute("SELECT name FROM datasets").fetchall() == [("toy",)]
        cols = [r[0] for r in con.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = 'datasets'").fetchall()]
        assert "note" not in cols
    finally:
        con.close()
    assert newer.load_dataset("toy").splits["train"].n == 30


def test_failed_migration_leaves_the_old_version(tmp_path):
    path = tmp_path / "s.duckdb"
    Store(path).add_dataset(make_featureset())

    def broken(con: duckdb.DuckDBPyConnection) -> None:
        con.execute("ALTER TABLE datasets ADD COLUMN note VARCHAR")
        con.execute("SELECT * FROM no_such_table")

    with pytest.raises(duckdb.Error):
        Store(path, migrations=[*MIGRATIONS, broken])
    store = Store(path)
    assert store.schema_version() == 1
    with store.reader() as con:
        cols = [r[0] for r in con.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = 'datasets'").fetchall()]
    assert "note" not in cols


def test_newer_version_is_refused(tmp_path):
    path = tmp_path / "s.duckdb"
    Store(path)
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_version VALUES (7, now()::TIMESTAMP)")
    con.close()
    with pytest.raises(StoreError) as err:
        Store(path)
    msg = str(err.value)
    assert "version 7" in msg and "upgrade MMAE Studio" in msg and one_sentence(msg)


@pytest.mark.parametrize("content", [b"", b"hello, I am a CSV file\n1,2,3\n" * 50])
def test_a_file_that_is_not_a_database_is_refused(tmp_path, content):
    path = tmp_path / "notes.duckdb"
    path.write_bytes(content)
    with pytest.raises(StoreError) as err:
        Store(path)
    msg = str(err.value)
    assert "not a DuckDB database" in msg and one_sentence(msg)
    assert path.read_bytes() == content  # left alone


def test_a_foreign_duckdb_database_is_refused(tmp_path):
    path = tmp_path / "other.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE sales (id INTEGER)")
    con.close()
    with pytest.raises(StoreError) as err:
        Store(path)
    assert "not an MMAE Studio store" in str(err.value) and one_sentence(str(err.value))


def test_a_folder_is_not_a_store_path(tmp_path):
    with pytest.raises(StoreError) as err:
        Store(tmp_path)
    assert "is a folder" in str(err.value) and one_sentence(str(err.value))
