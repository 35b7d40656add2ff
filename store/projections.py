"""Stored 2-D maps of a model's latents: computed once per (model, split, kind, method, seed), reused.

A t-SNE of 21,000 points takes minutes and a UMAP of them a minute; the Explore page must show such a
map at once on every later visit, in every session, so the coordinates live in the ``projections``
table (``data`` = ``np.save`` bytes of an (n, 2) float32 array, no pickling). Maps are deterministic
for their key, so when two sessions compute the same map at once the first one saved wins and the
second is dropped without an error.

Keys the Explore page uses besides a real split and latent kind:

* split ``all``: every split's latents one after the other, in the dataset's split order;
* kind ``overlay``: the per-modality latents of the split stacked in the model's modality order (the
  paper's overlay figure: z_image, z_audio, z_text embedded together, so they share coordinates).

Rows follow the latents exactly, so row ``i`` of a map is row ``i`` of those latents.
"""
from __future__ import annotations

import io

import duckdb
import numpy as np
import pandas as pd

from mmae_core.errors import NotFoundError, StoreError

from .common import dataset_id, model_row, one, split_sizes, utcnow

ALL_SPLITS = "all"
OVERLAY = "overlay"
_MAX_KEY = 64


def _key_text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_KEY:
        raise StoreError(f"The map's {what} '{value}' is not valid; pick one of the choices the page offers.")
    return value


def _model_id(con: duckdb.DuckDBPyConnection, dataset: str, model: str, split: str) -> int:
    ds_id = dataset_id(con, dataset)
    mid, _ = model_row(con, ds_id, dataset, model)
    split = _key_text(split, "split")
    if split != ALL_SPLITS:
        sizes = split_sizes(con, ds_id)
        if split not in sizes:
            raise NotFoundError(f"Dataset '{dataset}' has no '{split}' split (it has {', '.join(sizes)}); pick one of those.")
    return mid


def _to_blob(xy: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(xy, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise StoreError(f"A 2-D map must have shape (items, 2), not {arr.shape}; pass the output of project_2d.")
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _from_blob(blob: bytes) -> np.ndarray:
    return np.load(io.BytesIO(bytes(blob)), allow_pickle=False)


def get(con: duckdb.DuckDBPyConnection, dataset: str, model: str, split: str, kind: str, method: str,
        seed: int) -> np.ndarray | None:
    """The stored (n, 2) map, or None when it has not been computed yet."""
    mid = _model_id(con, dataset, model, split)
    row = one(
        con,
        "SELECT data FROM projections WHERE model_id = ? AND split = ? AND kind = ? AND method = ? AND seed = ?",
        [mid, split, _key_text(kind, "latent kind"), _key_text(method, "method"), int(seed)],
    )
    return None if row is None else _from_blob(row[0])


def put(con: duckdb.DuckDBPyConnection, dataset: str, model: str, split: str, kind: str, method: str, seed: int,
        xy: np.ndarray, seconds: float | None = None) -> bool:
    """Save a map; False (and nothing written) when the same key was saved meanwhile."""
    mid = _model_id(con, dataset, model, split)
    blob = _to_blob(xy)
    row = one(
        con,
        "INSERT INTO projections VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING model_id",
        [mid, split, _key_text(kind, "latent kind"), _key_text(method, "method"), int(seed), blob,
         None if seconds is None else float(seconds), utcnow()],
    )
    return row is not None


def listing(con: duckdb.DuckDBPyConnection, dataset: str, model: str) -> pd.DataFrame:
    """The maps stored for a model: split, kind, method, seed, points, seconds, created_at."""
    ds_id = dataset_id(con, dataset)
    mid, _ = model_row(con, ds_id, dataset, model)
    df = con.execute(
        "SELECT split, kind, method, seed, data, seconds, created_at FROM projections WHERE model_id = ? "
        "ORDER BY created_at, split, kind, method, seed",
        [mid],
    ).df()
    df["points"] = [int(_from_blob(b).shape[0]) for b in df["data"]]
    return df.drop(columns=["data"])[["split", "kind", "method", "seed", "points", "seconds", "created_at"]]


def delete(con: duckdb.DuckDBPyConnection, dataset: str, model: str) -> int:
    """Drop every stored map of a model (e.g. before it is deleted); returns how many were dropped."""
    ds_id = dataset_id(con, dataset)
    mid, _ = model_row(con, ds_id, dataset, model)
    n = int(one(con, "SELECT count(*) FROM projections WHERE model_id = ?", [mid])[0])
    con.execute("DELETE FROM projections WHERE model_id = ?", [mid])
    return n
