"""Tables, schema versions and migrations.

The schema version lives in the database so that an old file is upgraded (after a backup copy) and a
file from a newer MMAE Studio is refused instead of being damaged. ``MIGRATIONS[i]`` takes a database
from version ``i`` to ``i + 1``; add new ones at the end, never edit old ones.

Latents are ``FLOAT[dim]`` arrays, and an ARRAY column has one fixed size, so each latent size gets its
own table ``latents_<dim>`` (created on first use, inside the transaction that first needs it). Its name
is built from a validated integer, never from user text.
"""
from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import duckdb

from mmae_core.errors import StoreError

from .common import ident, one, utcnow
from .db import Database

Migration = Callable[[duckdb.DuckDBPyConnection], None]

_V1 = [
    "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP NOT NULL)",
    "CREATE SEQUENCE dataset_ids START 1",
    "CREATE SEQUENCE model_ids START 1",
    "CREATE SEQUENCE run_ids START 1",
    "CREATE SEQUENCE proposal_set_ids START 1",
    "CREATE SEQUENCE tag_event_ids START 1",
    """CREATE TABLE datasets (
        id INTEGER PRIMARY KEY, name VARCHAR NOT NULL UNIQUE, modalities JSON NOT NULL,
        synthetic BOOLEAN NOT NULL, source VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL, attrs JSON NOT NULL)""",
    # meta = the split's metadata DataFrame as Parquet bytes (exact dtypes on load); NULL when there is none
    """CREATE TABLE splits (
        dataset_id INTEGER NOT NULL, split VARCHAR NOT NULL, position INTEGER NOT NULL,
        n_items INTEGER NOT NULL, labelled BOOLEAN NOT NULL, meta BLOB,
        PRIMARY KEY (dataset_id, split))""",
    """CREATE TABLE items (
        dataset_id INTEGER NOT NULL, split VARCHAR NOT NULL, row_idx INTEGER NOT NULL,
        item_id VARCHAR NOT NULL, label VARCHAR, meta JSON,
        PRIMARY KEY (dataset_id, item_id))""",
    # data = np.save bytes of a float32 block of rows [row_start, row_start + n_rows)
    """CREATE TABLE features (
        dataset_id INTEGER NOT NULL, split VARCHAR NOT NULL, modality VARCHAR NOT NULL, chunk INTEGER NOT NULL,
        row_start INTEGER NOT NULL, n_rows INTEGER NOT NULL, dim INTEGER NOT NULL, data BLOB NOT NULL,
        PRIMARY KEY (dataset_id, split, modality, chunk))""",
    """CREATE TABLE models (
        id INTEGER PRIMARY KEY, dataset_id INTEGER NOT NULL, name VARCHAR NOT NULL,
        latent_dim INTEGER NOT NULL CHECK (latent_dim > 0), config JSON NOT NULL, info JSON NOT NULL,
        checkpoint BLOB NOT NULL, created_at TIMESTAMP NOT NULL, UNIQUE (dataset_id, name))""",
    """CREATE TABLE runs (
        id INTEGER PRIMARY KEY, dataset_id INTEGER NOT NULL, model_id INTEGER, split VARCHAR NOT NULL,
        params JSON NOT NULL, created_at TIMESTAMP NOT NULL)""",
    """CREATE TABLE run_metrics (
        run_id INTEGER NOT NULL, row_idx INTEGER NOT NULL, method VARCHAR NOT NULL, k INTEGER,
        silhouette DOUBLE, ari DOUBLE, nmi DOUBLE, calinski_harabasz DOUBLE, davies_bouldin DOUBLE,
        extras JSON NOT NULL, PRIMARY KEY (run_id, row_idx))""",
    """CREATE TABLE proposal_sets (
        id INTEGER PRIMARY KEY, dataset_id INTEGER NOT NULL, model_id INTEGER NOT NULL,
        split VARCHAR NOT NULL, k INTEGER NOT NULL, created_at TIMESTAMP NOT NULL)""",
    """CREATE TABLE proposals (
        set_id INTEGER NOT NULL, cluster INTEGER NOT NULL, size INTEGER NOT NULL, name VARCHAR NOT NULL,
        purity DOUBLE, cohesion DOUBLE, majority_label VARCHAR, representatives JSON NOT NULL,
        status VARCHAR NOT NULL CHECK (status IN ('proposed', 'accepted', 'rejected')), tag VARCHAR,
        PRIMARY KEY (set_id, cluster))""",
    """CREATE TABLE assignments (
        set_id INTEGER NOT NULL, item_id VARCHAR NOT NULL, cluster INTEGER NOT NULL,
        PRIMARY KEY (set_id, item_id))""",
    """CREATE TABLE tags (
        dataset_id INTEGER NOT NULL, item_id VARCHAR NOT NULL, tag VARCHAR NOT NULL,
        source VARCHAR NOT NULL CHECK (source IN ('proposal', 'manual')),
        model_id INTEGER, set_id INTEGER, cluster INTEGER, curator VARCHAR NOT NULL, tagged_at TIMESTAMP NOT NULL,
        PRIMARY KEY (dataset_id, item_id))""",
    """CREATE TABLE tag_events (
        id INTEGER PRIMARY KEY, dataset_id INTEGER NOT NULL,
        action VARCHAR NOT NULL CHECK (action IN ('accept', 'reject', 'rename', 'merge', 'set_item', 'undo')),
        curator VARCHAR NOT NULL, event_at TIMESTAMP NOT NULL, payload JSON NOT NULL, before JSON NOT NULL,
        undone BOOLEAN NOT NULL DEFAULT false, undoes INTEGER)""",
    "CREATE SEQUENCE job_ids START 1",
    # background jobs (training, ...): visible to every session and tab; a 'running' job whose process is
    # gone is shown as interrupted
    """CREATE TABLE jobs (
        id INTEGER PRIMARY KEY, dataset VARCHAR NOT NULL, kind VARCHAR NOT NULL,
        status VARCHAR NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled', 'interrupted')),
        config JSON NOT NULL, progress JSON NOT NULL, message VARCHAR, model VARCHAR, pid INTEGER, host VARCHAR,
        created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL, finished_at TIMESTAMP)""",
    # 2-D maps computed once per model, split, latent kind and method; data = np.save bytes of (n, 2) float32
    # rows aligned with that model's latents of the split
    """CREATE TABLE projections (
        model_id INTEGER NOT NULL, split VARCHAR NOT NULL, kind VARCHAR NOT NULL, method VARCHAR NOT NULL,
        seed INTEGER NOT NULL, data BLOB NOT NULL, seconds DOUBLE, created_at TIMESTAMP NOT NULL,
        PRIMARY KEY (model_id, split, kind, method, seed))""",
]


def _v1(con: duckdb.DuckDBPyConnection) -> None:
    for stmt in _V1:
        con.execute(stmt)


MIGRATIONS: tuple[Migration, ...] = (_v1,)
SCHEMA_VERSION = len(MIGRATIONS)

MAX_LATENT_DIM = 65536


def latents_table(dim: int) -> str:
    dim = int(dim)
    if not 1 <= dim <= MAX_LATENT_DIM:
        raise StoreError(f"A latent size of {dim} is out of range; it must be between 1 and {MAX_LATENT_DIM}.")
    return f"latents_{dim}"


def ensure_latents_table(con: duckdb.DuckDBPyConnection, dim: int) -> str:
    name = latents_table(dim)
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {ident(name)} ("
        "model_id INTEGER NOT NULL, split VARCHAR NOT NULL, kind VARCHAR NOT NULL, "
        f"row_idx INTEGER NOT NULL, item_id VARCHAR NOT NULL, vec FLOAT[{int(dim)}] NOT NULL)"
    )
    return name


def table_names(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = 'main' "
        "ORDER BY table_name"
    ).fetchall()
    return [r[0] for r in rows]


def latent_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [t for t in table_names(con) if t.startswith("latents_") and t[len("latents_"):].isdigit()]


def _version(con: duckdb.DuckDBPyConnection) -> int | None:
    if "schema_version" not in table_names(con):
        return None
    row = one(con, "SELECT max(version) FROM schema_version")
    return int(row[0]) if row and row[0] is not None else 0


def _backup_path(path: Path, old: int) -> Path:
    candidate = path.with_name(f"{path.name}.bak-v{old}")
    n = 2
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.bak-v{old}-{n}")
        n += 1
    return candidate


def _checked_version(con: duckdb.DuckDBPyConnection, path: Path, target: int) -> int | None:
    """The file's schema version (None: an empty file); refuses a foreign or a newer database."""
    version = _version(con)
    if version is None and table_names(con):
        raise StoreError(
            f"{path} is a DuckDB database but not an MMAE Studio store; choose another store path."
        )
    if version is not None and version > target:
        raise StoreError(
            f"The store {path} has schema version {version} but this MMAE Studio knows only up to {target}; "
            "upgrade MMAE Studio to open it."
        )
    return version


def check_schema(db: Database, migrations: Sequence[Migration] = MIGRATIONS) -> int | None:
    """The schema version of a store opened read-only (nothing is created or migrated)."""
    with db.session() as con:
        return _checked_version(con, db.path, len(migrations))


def ensure_schema(db: Database, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Create, accept or upgrade the schema; returns the version now in the file."""
    target = len(migrations)
    with db.session() as con:
        version = _checked_version(con, db.path, target)
        if version == target:
            return version
        start = version or 0
        if version is not None:
            # Fold the WAL into the file, then copy it while we still hold the lock: a consistent backup.
            con.execute("CHECKPOINT")
            shutil.copy2(db.path, _backup_path(db.path, start))
        con.execute("BEGIN TRANSACTION")
        try:
            for v in range(start, target):
                migrations[v](con)
                con.execute("INSERT INTO schema_version VALUES (?, ?)", [v + 1, utcnow()])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return target


def schema_version(db: Database) -> int:
    return db.read(lambda con: _version(con) or 0)


def checksum(con: duckdb.DuckDBPyConnection) -> str:
    """A digest of every row of every table: equal before and after a rolled-back action. Latents
    written ahead of a model that never came (``models.pending_token``) are not part of what the store
    holds: no reader sees them and the next registration deletes them."""
    h = hashlib.sha256()
    latent = set(latent_tables(con))
    for name in table_names(con):
        pending = " WHERE _row.model_id >= 0" if name in latent else ""  # latents no model has claimed yet
        n, s = one(con, f"SELECT count(*), coalesce(sum(hash(_row)::HUGEINT), 0) FROM {ident(name)} AS _row{pending}")
        h.update(f"{name}:{n}:{s};".encode())
    return h.hexdigest()
