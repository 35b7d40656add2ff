"""Where training and encoding get their rows: one seeded batch source over memory or disk.

A split's features can live in memory (a ``FeatureSet`` built by a loader or the demo) or on disk
(one ``.npy`` file per modality, as an archive too large for memory is kept). Training and encoding
read both through the same two calls, so the rest of the code never knows which it has:

* ``RowSource.take(m, idx)``: the raw float32 rows ``idx`` of modality ``m``;
* ``RowSource.chunks(rows)``: the split in order, ``rows`` items at a time.

``BatchSource`` turns a row source into what a training step eats: per epoch a seeded permutation,
batches of standardized tensors, and which modalities each item has (and keeps, under modality
dropout). The permutation, the dropout draws and the standardization depend only on the seed, the
row count and the statistics, never on the backing, so the same seed gives the same batches, bit for
bit, from memory and from disk.

Disk rows are read through ``data.lazy.NpyWindows``, which maps a file for one read only, so resident
memory stays at about one batch (its docstring says why a map held over an epoch would not).
"""
from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np
import torch
from torch import Tensor

from mmae_core.data.lazy import NpyAppender, NpyWindows
from mmae_core.errors import DataError
from mmae_core.model.distributed import share
from mmae_core.model.mmae import Rows
from mmae_core.model.standardize import CHUNK_ROWS, Standardizer


class RowSource(Protocol):
    """Raw float32 rows of one split, per modality; NaN rows mark a missing modality."""

    n: int
    dims: dict[str, int]

    def take(self, m: str, idx: np.ndarray) -> np.ndarray: ...

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[tuple[int, dict[str, np.ndarray]]]: ...


class ArrayRows:
    """Rows held in memory: a split's ``features`` dict."""

    def __init__(self, features: dict[str, np.ndarray]):
        ns = {m: x.shape[0] for m, x in features.items()}
        if len(set(ns.values())) > 1:
            raise DataError("the feature arrays have different row counts (" + ", ".join(f"{m}: {k}" for m, k in ns.items()) + "); align them by item.")
        self.features = features
        self.n = next(iter(ns.values())) if ns else 0
        self.dims = {m: int(x.shape[1]) for m, x in features.items()}

    def take(self, m: str, idx: np.ndarray) -> np.ndarray:
        return self.features[m][idx]

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        for s in range(0, self.n, rows):
            yield s, {m: x[s : s + rows] for m, x in self.features.items()}


@dataclass(frozen=True)
class _FileStamp:
    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> "_FileStamp":
        st = os.stat(path)
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)


class NpyRows:
    """Rows on disk: one 2-D float32 ``.npy`` file per modality, all with the same row count, each
    read through ``data.lazy.NpyWindows`` (a memory map held for one read only).

    Each file's size, modification time and inode are noted when the source is opened and checked
    before every read: features that change under a running training would make it train on a mix
    of two data sets, so the read is refused instead.
    """

    def __init__(self, paths: dict[str, Path | str]):
        self.paths = {m: Path(p) for m, p in paths.items()}
        self.files = {m: NpyWindows(p, p.name) for m, p in self.paths.items()}
        for f in self.files.values():
            if f.file_dtype != np.float32:
                raise DataError(f"{f.path.name} must hold a 2-D float32 array (it holds 2-D {f.file_dtype}); write the features as float32 rows.")
        self.dims = {m: f.shape[1] for m, f in self.files.items()}
        ns = {m: f.shape[0] for m, f in self.files.items()}
        if len(set(ns.values())) > 1:
            raise DataError("the feature files have different row counts (" + ", ".join(f"{m}: {k}" for m, k in ns.items()) + "); align them by item.")
        self.n = next(iter(ns.values())) if ns else 0
        self._stamps = {m: _FileStamp.of(p) for m, p in self.paths.items()}

    @classmethod
    def folder(cls, folder: Path | str, names: list[str]) -> "NpyRows":
        """``<folder>/<modality>.npy`` for each name."""
        return cls({m: Path(folder) / f"{m}.npy" for m in names})

    def _checked(self, m: str) -> NpyWindows:
        p = self.paths[m]
        try:
            same = _FileStamp.of(p) == self._stamps[m]
        except FileNotFoundError:
            same = False
        if not same:
            raise DataError(f"the {m} features in {p} changed on disk after training started; nothing was trained on them, import the dataset again and retrain.")
        return self.files[m]

    def take(self, m: str, idx: np.ndarray) -> np.ndarray:
        f = self._checked(m)
        order = np.argsort(idx, kind="stable")
        out = np.empty((len(idx), f.shape[1]), dtype=np.float32)
        out[order] = f[idx[order]]  # sorted reads walk the file forward
        return out

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        for s in range(0, self.n, rows):
            yield s, {m: self._checked(m)[s : s + rows] for m in self.paths}


def write_npy_rows(source: RowSource, folder: Path | str, rows: int = CHUNK_ROWS) -> NpyRows:
    """Copy a row source into ``<folder>/<modality>.npy`` chunk by chunk, through plain appends
    (``data.lazy.NpyAppender``), so neither side is ever whole in memory."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:  # each file is closed (and checked complete) on the way out
        outs = {m: stack.enter_context(NpyAppender(folder / f"{m}.npy", source.n, d)) for m, d in source.dims.items()}
        for _, chunk in source.chunks(rows):
            for m, x in chunk.items():
                outs[m].append(x)
    return NpyRows.folder(folder, list(source.dims))


# ------------------------------------------------------------------------------ presence and statistics


def check_finite(m: str, x: np.ndarray, rows: np.ndarray, offset: int = 0) -> None:
    """Refuse a NaN or Inf outside a whole-NaN (missing) row, naming the row."""
    bad = ~np.isfinite(x).all(axis=1) & rows
    if bad.any():
        r = offset + int(np.argmax(bad))
        raise DataError(f"{m} has a NaN, Inf or out-of-range value in row {r}; fix that row (a whole row of NaN marks a missing modality).")


def presence(chunk: dict[str, np.ndarray], names: list[str], offset: int = 0) -> np.ndarray:
    """The (n, M) mask of rows that are not all NaN; refuses any other NaN or Inf, naming the row."""
    present = np.stack([~np.isnan(chunk[m]).all(axis=1) for m in names], axis=1)
    for j, m in enumerate(names):
        check_finite(m, chunk[m], present[:, j], offset)
    return present


def scan(source: RowSource, names: list[str]) -> tuple[np.ndarray, Standardizer]:
    """One streaming pass: the presence mask of every row and the standardizer fitted on them."""
    masks, fit = [], Standardizer.fitter(source.dims)
    for s, chunk in source.chunks():
        p = presence(chunk, names, s)
        masks.append(p)
        fit.add({m: chunk[m] for m in names}, p)
    present = np.concatenate(masks) if masks else np.zeros((0, len(names)), dtype=bool)
    return present, fit.result()


def standardized(chunk: dict[str, np.ndarray], std: Standardizer, names: list[str], present: np.ndarray) -> dict[str, Tensor]:
    """Standardized float32 tensors with missing rows set to 0 (their value is never read)."""
    xs = std.transform({m: chunk[m] for m in names})
    out = {}
    for j, m in enumerate(names):
        x = xs[m]
        x[~present[:, j]] = 0.0
        check_finite(m, x, present[:, j])  # a value whose standardization overflows float32
        out[m] = torch.from_numpy(x)
    return out


# ----------------------------------------------------------------------------------------- batches


def rows_of(mask: np.ndarray, names: list[str], device: torch.device) -> Rows:
    """Row indices per modality for a batch's presence mask; None where every row has it."""
    return {
        m: None if mask[:, j].all() else torch.from_numpy(np.flatnonzero(mask[:, j])).to(device)
        for j, m in enumerate(names)
    }


def inv_count(mask: np.ndarray, device: torch.device) -> Tensor | None:
    """1 / (modalities per row) as (B, 1), or None when every row has all of them (the cheap path)."""
    cnt = mask.sum(axis=1)
    if (cnt == mask.shape[1]).all():
        return None
    with np.errstate(divide="ignore"):
        inv = (1.0 / cnt).astype(np.float32)  # inf for a row with nothing: its latent becomes NaN
    return torch.from_numpy(inv[:, None]).to(device)


def dropout_mask(present: np.ndarray, p: float, gen: torch.Generator) -> np.ndarray:
    """Encoder-side presence under modality dropout.

    With probability p, an item that has at least two modalities keeps a uniformly drawn non-empty
    *proper* subset of them (rejection sampling over random bit masks), so it always keeps one and
    always loses one; items with a single modality are never touched.
    """
    keep = present.copy()
    if p <= 0:
        return keep
    hit = (torch.rand(len(present), generator=gen).numpy() < p) & (present.sum(axis=1) >= 2)
    idx = np.flatnonzero(hit)
    while idx.size:
        draw = (torch.rand(idx.size, present.shape[1], generator=gen).numpy() < 0.5) & present[idx]
        k = draw.sum(axis=1)
        ok = (k >= 1) & (k < present[idx].sum(axis=1))
        keep[idx[ok]] = draw[ok]
        idx = idx[~ok]
    return keep


@dataclass
class Batch:
    """What one training step eats: standardized rows, and which rows each encoder/decoder sees."""

    x: dict[str, Tensor]
    present: np.ndarray  # (B, M): the item has the modality (decoders score these rows)
    kept: np.ndarray  # (B, M): the encoders see these rows (a subset under modality dropout)
    enc_rows: Rows
    dec_rows: Rows
    inv_count: Tensor | None

    @property
    def size(self) -> int:
        return int(self.present.shape[0])


class BatchSource:
    """Seeded, standardized training batches of the rows ``index`` of a row source.

    ``present`` is the presence mask of all rows of the source (from ``scan``); ``index`` selects the
    rows trained on (the train part after a validation hold-out). Each ``epoch(gen)`` draws one
    permutation and the modality-dropout masks from ``gen``, in that order, before the first batch.
    """

    def __init__(
        self,
        source: RowSource,
        names: list[str],
        std: Standardizer,
        present: np.ndarray,
        batch_size: int,
        modality_dropout: float = 0.0,
        index: np.ndarray | None = None,
        device: torch.device | str = "cpu",
        shard: tuple[int, int] = (0, 1),
    ):
        self.source, self.names, self.std = source, list(names), std
        self.index = np.arange(source.n) if index is None else np.asarray(index)
        self.present = present[self.index]
        self.batch_size, self.p_drop = int(batch_size), float(modality_dropout)
        self.device = torch.device(device)
        self.rank, self.world = int(shard[0]), int(shard[1])
        if self.world > 1:
            if self.batch_size < self.world:
                raise DataError(f"the batch size {self.batch_size} is smaller than the {self.world} training processes; "
                                f"choose a batch size of at least {self.world} or start fewer processes.")
            if self.n < self.world:
                raise DataError(f"the train split has {self.n} items, fewer than the {self.world} training processes; start fewer processes.")

    @property
    def n(self) -> int:
        return int(len(self.index))

    def _starts(self) -> list[int]:
        """Where each batch of an epoch starts. Under data parallelism (``shard``) a last batch with
        fewer rows than processes joins the one before it, so no process ever gets an empty share
        (its loss would be NaN); one process always has plain ``batch_size`` steps."""
        starts = list(range(0, self.n, self.batch_size))
        if self.world > 1 and len(starts) > 1 and self.n - starts[-1] < self.world:
            starts.pop()
        return starts

    def steps_per_epoch(self) -> int:
        return len(self._starts())

    def epoch(self, gen: torch.Generator) -> Iterator[Batch]:
        """One epoch's batches. Every process draws the same permutation and dropout masks from its
        equally seeded ``gen``; with ``shard=(rank, world)`` it yields its own contiguous share of each
        batch (``distributed.share``), so the processes together see one process's batches."""
        perm = torch.randperm(self.n, generator=gen).numpy()
        present = self.present[perm]
        kept = dropout_mask(present, self.p_drop, gen)
        starts = self._starts()
        for s, e in zip(starts, [*starts[1:], self.n]):
            if self.world > 1:
                lo, hi = share(e - s, self.rank, self.world)
                s, e = s + lo, s + hi
            yield self.batch(self.index[perm[s:e]], present[s:e], kept[s:e])

    def batch(self, rows: np.ndarray, present: np.ndarray, kept: np.ndarray | None = None) -> Batch:
        """The batch of source rows ``rows`` (in that order) with their presence (and kept) masks."""
        kept = present if kept is None else kept
        chunk = {m: self.source.take(m, rows) for m in self.names}
        x = {m: t.to(self.device) for m, t in standardized(chunk, self.std, self.names, present).items()}
        dec = rows_of(present, self.names, self.device)
        enc = dec if kept is present else rows_of(kept, self.names, self.device)
        return Batch(x, present, kept, enc, dec, inv_count(kept, self.device))

    def in_order(self, rows: int) -> Iterator[Batch]:
        """Every row once, in index order, ``rows`` at a time (validation, encoding)."""
        for s in range(0, self.n, rows):
            sel = self.index[s : s + rows]
            yield self.batch(sel, self.present[s : s + rows])
