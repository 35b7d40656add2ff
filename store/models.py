"""The model registry: checkpoints with their config and training info, and their latents.

A model becomes visible together with all its latents in one transaction, so the store never has a
model whose latents are missing. Latents go in through Arrow fixed-size lists in one INSERT per block
of ``LATENT_ROWS`` (29k items x 4 kinds x 128 dims in well under two seconds) instead of row by row.
A latent array may be a file read in windows (``lazy.NpyWindows``): an archive's latents (1M items x
4 kinds x 128 dims = 2 GB) are encoded to disk first and never held whole in memory.

Each block is its own transaction, under a negative model id that no reader asks for (``pending_token``);
the transaction that inserts the model's row claims them (``add``). Why not one transaction: DuckDB
keeps an uncommitted insert in memory whatever its ``memory_limit`` (measured: 1M x 4 kinds x 128
latents held 2.4 GiB resident until COMMIT, 0.7 GiB committed block by block). Blocks whose writer died
are deleted by the next registration (``drop_pending``; ``Store.add_model`` says which are live).
"""
from __future__ import annotations

from collections.abc import Sequence

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from mmae_core.data.lazy import NpyWindows, row_windows
from mmae_core.errors import NotFoundError, StoreError

from . import schema
from .common import check_name, check_split, dataset_id, dumps, ident, loads, model_row, one, registered, utcnow
from .faults import pause_point

FUSED = "fused"
LATENT_ROWS = 100_000


def _dim_of(latents: dict[str, dict[str, np.ndarray]], name: str) -> int:
    if not latents or not any(latents.values()):
        raise StoreError(f"Model '{name}' comes without latents; encode at least one split before saving it.")
    for kinds in latents.values():
        for x in kinds.values():
            shape = tuple(getattr(x, "shape", np.shape(x)))
            if len(shape) != 2 or shape[1] < 1:
                raise StoreError(f"Model '{name}' has a latent array of shape {shape}; latents must be 2-D (items x latent).")
            return int(shape[1])
    raise AssertionError("unreachable")


def check(con: duckdb.DuckDBPyConnection, dataset: str, name: str, checkpoint: bytes,
          latents: dict[str, dict[str, np.ndarray]]) -> tuple[str, int]:
    """Refuse a model that cannot be registered, before anything is written; (name, latent size)."""
    name = check_name(name, "model name")
    ds_id = dataset_id(con, dataset)
    if one(con, "SELECT 1 FROM models WHERE dataset_id = ? AND name = ?", [ds_id, name]):
        raise StoreError(f"Dataset '{dataset}' already has a model named '{name}'; choose another model name.")
    if not isinstance(checkpoint, (bytes, bytearray, memoryview)):
        raise StoreError(f"The checkpoint of model '{name}' is not bytes; pass the serialized checkpoint file content.")
    dim = _dim_of(latents, name)
    modalities = set(loads(one(con, "SELECT modalities FROM datasets WHERE id = ?", [ds_id])[0]))
    for split, kinds in latents.items():
        n = check_split(con, ds_id, dataset, split)
        for kind, x in kinds.items():
            if kind != FUSED and kind not in modalities:
                raise StoreError(
                    f"Latents of kind '{kind}' do not match dataset '{dataset}'; use 'fused' or one of {', '.join(sorted(modalities))}."
                )
            shape = tuple(getattr(x, "shape", np.shape(x)))
            if len(shape) != 2 or shape != (n, dim):
                raise StoreError(
                    f"The {split}/{kind} latents of model '{name}' have shape {shape} but {split} has {n} items "
                    f"and the latent size is {dim}; pass one row per item of that split."
                )
    return name, dim


def pending_token(con: duckdb.DuckDBPyConnection, dim: int) -> int:
    """A model id for latents written ahead of their model: the negative of a fresh sequence value,
    so no reader (they all ask by a model's id) can see them until ``add`` claims them."""
    schema.ensure_latents_table(con, dim)
    return -int(one(con, "SELECT nextval('model_ids')")[0])


def blocks(latents: dict[str, dict[str, np.ndarray]]):
    """(split, kind, first row, float32 rows) in blocks of ``LATENT_ROWS``: one transaction each."""
    for split, kinds in latents.items():
        for kind, x in kinds.items():
            arr = x if isinstance(x, (np.ndarray, NpyWindows)) else np.asarray(x, dtype=np.float32)
            for s, w in row_windows(arr, LATENT_ROWS):
                yield split, kind, s, np.ascontiguousarray(w, dtype=np.float32)


def add_block(con: duckdb.DuckDBPyConnection, dataset: str, token: int, split: str, kind: str, start: int,
              w: np.ndarray) -> None:
    """One block of latents under the pending ``token``."""
    ds_id = dataset_id(con, dataset)
    dim = int(w.shape[1])
    ids = con.sql(
        "SELECT item_id FROM items WHERE dataset_id = $1 AND split = $2 AND row_idx >= $3 AND row_idx < $4 ORDER BY row_idx",
        params=[ds_id, split, start, start + len(w)],
    ).to_arrow_table().column("item_id")
    vec = pa.FixedSizeListArray.from_arrays(pa.array(w.reshape(-1), type=pa.float32()), dim)
    block = pa.table({"row_idx": pa.array(np.arange(start, start + len(w), dtype=np.int32)), "item_id": ids, "vec": vec})
    with registered(con, "_latents_in", block):
        con.execute(
            f"INSERT INTO {ident(schema.latents_table(dim))} SELECT ?, ?, ?, row_idx, item_id, vec FROM _latents_in",
            [token, split, kind],
        )
        pause_point("latents")  # crash tests: killed with some latents written, the model not registered


def drop_pending(con: duckdb.DuckDBPyConnection, keep: set[int]) -> None:
    """Delete latents written ahead of a model that never came (their writer died or failed), except
    those of the pending tokens in ``keep`` (writers still at work)."""
    for table in schema.latent_tables(con):
        con.execute(f"DELETE FROM {ident(table)} WHERE model_id < 0 AND NOT list_contains(?::BIGINT[], model_id)",
                    [sorted(keep)])


def add(con: duckdb.DuckDBPyConnection, dataset: str, name: str, checkpoint: bytes, config: dict, info: dict,
        latents: dict[str, dict[str, np.ndarray]], token: int) -> int:
    """The model's row, claiming the latents written under ``token`` (``add_block``): they become
    visible in this one transaction, with the model, or not at all."""
    name, dim = check(con, dataset, name, checkpoint, latents)
    ds_id = dataset_id(con, dataset)
    model_id = int(one(con, "SELECT nextval('model_ids')")[0])
    con.execute(
        "INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [model_id, ds_id, name, dim, dumps(config or {}), dumps(info or {}), bytes(checkpoint), utcnow()],
    )
    table = ident(schema.latents_table(dim))
    want = sum(len(x) for kinds in latents.values() for x in kinds.values())
    (got,) = one(con, f"SELECT count(*) FROM {table} WHERE model_id = ?", [token])
    if int(got) != want:
        raise StoreError(f"Some latents of model '{name}' were removed while it was being saved; train or load it again.")
    con.execute(f"UPDATE {table} SET model_id = ? WHERE model_id = ?", [model_id, token])
    return model_id


def listing(con: duckdb.DuckDBPyConnection, dataset: str | None) -> pd.DataFrame:
    where, params = ("WHERE m.dataset_id = ?", [dataset_id(con, dataset)]) if dataset is not None else ("", [])
    rows = con.execute(
        f"""SELECT m.id, d.name, m.name, m.latent_dim, m.created_at, octet_length(m.checkpoint), m.config, m.info
            FROM models m JOIN datasets d ON d.id = m.dataset_id {where} ORDER BY d.name, m.id""",
        params,
    ).fetchall()
    records = []
    for mid, ds, name, dim, created, size, config, info in rows:
        rec: dict = {"id": mid, "dataset": ds, "name": name, "latent_dim": dim, "created_at": created,
                     "checkpoint_bytes": size}
        for source in (loads(config, {}), loads(info, {})):
            for key, value in source.items():
                if key not in rec and (value is None or isinstance(value, (str, int, float, bool))):
                    rec[key] = value
        records.append(rec)
    base = ["id", "dataset", "name", "latent_dim", "created_at", "checkpoint_bytes"]
    return pd.DataFrame(records, columns=None if records else base)


def _field(con: duckdb.DuckDBPyConnection, dataset: str, model: str, column: str):
    ds_id = dataset_id(con, dataset)
    mid, _ = model_row(con, ds_id, dataset, model)
    return one(con, f"SELECT {ident(column)} FROM models WHERE id = ?", [mid])[0]


def checkpoint(con: duckdb.DuckDBPyConnection, dataset: str, model: str) -> bytes:
    return bytes(_field(con, dataset, model, "checkpoint"))


def info(con: duckdb.DuckDBPyConnection, dataset: str, model: str) -> dict:
    return loads(_field(con, dataset, model, "info"), {})


def config(con: duckdb.DuckDBPyConnection, dataset: str, model: str) -> dict:
    return loads(_field(con, dataset, model, "config"), {})


def latest(con: duckdb.DuckDBPyConnection, dataset: str) -> str | None:
    ds_id = dataset_id(con, dataset)
    row = one(con, "SELECT name FROM models WHERE dataset_id = ? ORDER BY created_at DESC, id DESC LIMIT 1", [ds_id])
    return None if row is None else row[0]


def latents(con: duckdb.DuckDBPyConnection, dataset: str, model: str, split: str, kind: str,
            ids: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``ids``: only those items (in split order; unknown ids are left out), e.g. one search query's
    latent without reading the million rows of an archive's split."""
    ds_id = dataset_id(con, dataset)
    mid, dim = model_row(con, ds_id, dataset, model)
    table = ident(schema.latents_table(dim))
    if schema.latents_table(dim) not in schema.table_names(con):
        raise NotFoundError(f"Model '{model}' has no latents stored; register it again with its latents.")
    only = "" if ids is None else " AND item_id IN (SELECT unnest($4::VARCHAR[]))"
    params = [mid, split, kind] + ([[str(i) for i in ids]] if ids is not None else [])
    (n,) = one(con, f"SELECT count(*) FROM {table} WHERE model_id = $1 AND split = $2 AND kind = $3{only}", params)
    if n == 0 and ids is not None:
        ok = one(con, f"SELECT 1 FROM {table} WHERE model_id = ? AND split = ? AND kind = ? LIMIT 1", [mid, split, kind])
        if ok is not None:
            return np.empty(0, dtype=object), np.empty((0, dim), dtype=np.float32)
    if n == 0:
        have = con.execute(
            f"SELECT DISTINCT split || '/' || kind FROM {table} WHERE model_id = ? ORDER BY 1", [mid]
        ).fetchall()
        raise NotFoundError(
            f"Model '{model}' has no {kind} latents for the {split} split (it has {', '.join(r[0] for r in have) or 'none'}); "
            "pick one of those or encode that split."
        )
    # Read batch by batch into one array, each row put at its place: an ORDER BY made DuckDB sort the
    # whole result first, and the whole Arrow result beside the array was 1.1 GB more at 1M x 128.
    out_ids = np.empty(n, dtype=object)
    x = np.empty((n, dim), dtype=np.float32)
    pos = np.empty(n, dtype=np.int64)
    at = 0
    reader = con.sql(f"SELECT row_idx, item_id, vec FROM {table} WHERE model_id = $1 AND split = $2 AND kind = $3{only}",
                     params=params).to_arrow_reader(LATENT_ROWS)
    for batch in reader:
        m = batch.num_rows
        rows = batch.column(0).to_numpy()
        where = rows if ids is None else slice(at, at + m)  # the whole split: row_idx is the place
        pos[at:at + m] = rows
        out_ids[where] = batch.column(1).to_pylist()
        x[where] = batch.column(2).flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
        at += m
    if ids is not None:  # a few items: in split order
        order = np.argsort(pos, kind="stable")
        out_ids, x = out_ids[order], x[order]
    return out_ids, x


def latent_kinds(con: duckdb.DuckDBPyConnection, dataset: str, model: str) -> pd.DataFrame:
    """Which split/kind latents a model has, with row counts (what the Explore page offers)."""
    ds_id = dataset_id(con, dataset)
    mid, dim = model_row(con, ds_id, dataset, model)
    table = ident(schema.latents_table(dim))
    rows = con.execute(
        f"SELECT split, kind, count(*) FROM {table} WHERE model_id = ? GROUP BY split, kind ORDER BY split, kind", [mid]
    ).fetchall()
    return pd.DataFrame(rows, columns=["split", "kind", "items"])
