"""The nearest-neighbour index behind cross-modal search (a query on 1M latents in < 100 ms).

Why faiss, and why two kinds of index (measured by ``benchmarks/retrieval.py`` on this project's
2-core machine, see docs/results.md's "Cross-modal search"):

* An exact scan (faiss ``IndexFlat``) is what ``retrieval.nearest`` computes and is fast enough up to
  a few hundred thousand latents, but at 1M it took 120-300 ms per query under load; numpy's
  ``x @ q`` plus ``argpartition`` was slower still, and DuckDB's ``array_cosine_similarity`` over a
  ``FLOAT[n]`` table about 0.9 s. So collections up to ``EXACT_MAX`` rows are searched exactly, and
  larger ones with an inverted-file index (``IndexIVFFlat``: sqrt(n) k-means cells, ``nprobe`` = 32
  of them scanned per query: 1-3 ms at 1M, recall@10 against the exact answer 0.98-1.0; 4,000
  cells with 16 probes was faster to query but found only 0.79 of the true top 10).
* faiss runs on one OpenMP thread: on a shared 2-core machine a second thread made single queries
  several times slower (it waits for a core at every barrier).

Cosine is an inner product of unit rows; Euclidean uses the L2 index and reports the distance (not
its square), so scores match ``retrieval.nearest``. Rows of NaN (items lacking the modality) are
left out of the index and never returned.

``IndexCache`` keeps built indexes per (store file, dataset, model, split, kind, metric) and checks a
fingerprint of the stored latents (model id and row count) on every use, so an index is built once
per model and modality and rebuilt when those latents change (a model re-created under the same
name, latents added to a split).

``IndexFiles`` keeps the large (IVF) ones on disk too, in a folder beside the store, because a
process that lives for one query (each CLI call) would otherwise rebuild a 1M-latent index every
time (19-44 s here). Loading one is a memory map of the file (milliseconds). The files are a cache:
named by a hash of the key and of the fingerprint, written under a temporary name and renamed, and
a file that does not load is rebuilt, never an error.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path

import numpy as np

from mmae_core.errors import DataError

EXACT_MAX = 200_000  # above this many rows: IVF (approximate) instead of an exact scan
IVF_TRAIN_MAX = 64 * 1024  # k-means of the cells on at most this many rows (seeded sample)
IVF_NPROBE = 32
METRICS: tuple[str, ...] = ("cosine", "euclidean")

_faiss_ready = False
log = logging.getLogger("mmae_studio")


def _faiss() -> object:
    """faiss, pinned to one OpenMP thread (see the module docstring)."""
    global _faiss_ready
    import faiss

    if not _faiss_ready:
        faiss.omp_set_num_threads(1)
        _faiss_ready = True
    return faiss


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


class LatentIndex:
    """Nearest rows of one latent matrix by cosine similarity or Euclidean distance.

    ``exact``: None picks by size (``EXACT_MAX``); True/False forces it (tests, benchmarks).
    """

    def __init__(self, x: np.ndarray, metric: str = "cosine", exact: bool | None = None, seed: int = 42,
                 nprobe: int = IVF_NPROBE) -> None:
        if metric not in METRICS:
            raise DataError(f"'{metric}' is not a search metric; choose cosine or euclidean.")
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise DataError(f"an index needs a 2-D latent matrix, got shape {x.shape}.")
        faiss = _faiss()
        self.metric = metric
        self.n_total, self.dim = x.shape
        self.rows = np.flatnonzero(np.isfinite(x).all(axis=1))  # index position -> row of x
        data = np.ascontiguousarray(x[self.rows])
        if metric == "cosine":
            data = np.ascontiguousarray(_unit(data), dtype=np.float32)
        n = data.shape[0]
        self.exact = bool(n <= EXACT_MAX) if exact is None else bool(exact)
        ip = metric == "cosine"
        if self.exact or n < 2:
            self.exact = True
            self.index = faiss.IndexFlatIP(self.dim) if ip else faiss.IndexFlatL2(self.dim)
        else:
            nlist = int(max(1, min(np.sqrt(n), IVF_TRAIN_MAX // 39)))  # faiss wants >= 39 training rows per cell
            quant = faiss.IndexFlatIP(self.dim) if ip else faiss.IndexFlatL2(self.dim)
            kind = faiss.METRIC_INNER_PRODUCT if ip else faiss.METRIC_L2
            self.index = faiss.IndexIVFFlat(quant, self.dim, nlist, kind)
            self.index.cp.seed = seed
            rng = np.random.default_rng(seed)
            sample = data if n <= IVF_TRAIN_MAX else data[np.sort(rng.choice(n, IVF_TRAIN_MAX, replace=False))]
            self.index.train(sample)
            self.index.nprobe = int(min(nprobe, nlist))
            self._quant = quant  # the IVF index does not own its quantizer: keep it alive
        if n:
            self.index.add(data)

    @classmethod
    def _restore(cls, index: object, rows: np.ndarray, metric: str, n_total: int, exact: bool) -> "LatentIndex":
        """An index read back from ``IndexFiles`` (no data needed: the file holds the vectors)."""
        self = cls.__new__(cls)
        self.metric, self.n_total, self.rows, self.exact, self.index = metric, int(n_total), rows, bool(exact), index
        self.dim = int(index.d)
        if not self.exact:
            index.nprobe = int(min(IVF_NPROBE, index.nlist))
        return self

    @property
    def size(self) -> int:
        """Rows in the index (the rows of the matrix that have the modality)."""
        return int(self.index.ntotal)

    def search(self, query: np.ndarray, top: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(rows of the original matrix, scores), nearest first; cosine similarity or Euclidean distance."""
        q = np.asarray(query, dtype=np.float32).reshape(1, -1)
        if q.shape[1] != self.dim:
            raise DataError(f"the query has {q.shape[1]} dimensions but the targets have {self.dim}; use latents of the same model.")
        if not np.isfinite(q).all():
            raise DataError("the query vector has missing (NaN) or infinite values; pick an item that has this modality.")
        top = int(max(0, min(int(top), self.size)))
        if top == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        if self.metric == "cosine":
            q = np.ascontiguousarray(_unit(q), dtype=np.float32)
        scores, pos = self.index.search(q, top)
        keep = pos[0] >= 0  # IVF may find fewer than ``top`` in the cells it scanned
        pos, scores = pos[0][keep], scores[0][keep].astype(np.float64)
        if self.metric == "euclidean":
            scores = np.sqrt(np.maximum(scores, 0.0))
        return self.rows[pos], scores


class IndexCache:
    """Built indexes, least recently used dropped first, each checked against a fingerprint of its data.

    ``get(key, fingerprint, build)`` returns the cached value when the fingerprint is unchanged, else
    calls ``build()`` and keeps its result. Thread-safe (the dashboard serves sessions on threads).
    """

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[Hashable, tuple[Hashable, object]] = OrderedDict()
        self._lock = threading.Lock()
        self.builds = 0  # how many times something was built (tests check that a cache hit builds nothing)

    def get(self, key: Hashable, fingerprint: Hashable, build: Callable[[], object]) -> object:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit[0] == fingerprint:
                self._items.move_to_end(key)
                return hit[1]
        value = build()
        with self._lock:
            self.builds += 1
            self._items[key] = (fingerprint, value)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def _save_parts(path: str, ids: np.ndarray, index: LatentIndex) -> None:
    with open(path, "wb") as fh:  # a file object: given a name, np.savez would append ".npz"
        np.savez(fh, ids=np.asarray(ids, dtype=str), rows=index.rows, metric=np.array(index.metric),
                 n_total=np.array(index.n_total), exact=np.array(index.exact))


_WARNED: set[str] = set()


def _warn(what: str) -> None:
    """One line naming the failure being handled: the cache is only a speed-up, so a user gets no
    traceback to read (``MMAE_DEBUG=1`` adds it, as for the CLI's errors). Said once per process: a
    search saves several files (two spaces and an index), and one unwritable folder is one fact."""
    if what in _WARNED:
        return
    _WARNED.add(what)
    exc = sys.exc_info()[1]
    log.warning("%s (%s: %s)", what, type(exc).__name__, exc, exc_info=bool(os.environ.get("MMAE_DEBUG")))


class IndexFiles:
    """Indexes of at least ``min_rows`` rows saved in ``folder`` (see the module docstring).

    ``load``/``save`` take the same key and fingerprint as ``IndexCache``; ``loads`` and ``saves``
    count what happened (the tests and ``benchmarks/search_cli.py`` read them).
    """

    def __init__(self, folder: str | Path, min_rows: int = EXACT_MAX + 1) -> None:
        self.folder = Path(folder)
        self.min_rows = int(min_rows)
        self.loads = 0
        self.saves = 0

    @staticmethod
    def _hash(value: Hashable) -> str:
        return hashlib.sha256(repr(value).encode()).hexdigest()[:16]

    def _paths(self, key: Hashable, fingerprint: Hashable) -> tuple[Path, Path]:
        stem = f"{self._hash(key)}-{self._hash(fingerprint)}"
        return self.folder / f"{stem}.faiss", self.folder / f"{stem}.npz"

    def load(self, key: Hashable, fingerprint: Hashable) -> tuple[np.ndarray, LatentIndex] | None:
        index_path, parts_path = self._paths(key, fingerprint)
        if not (index_path.exists() and parts_path.exists()):
            return None
        try:
            faiss = _faiss()
            with np.load(parts_path, allow_pickle=False) as parts:
                ids, rows = parts["ids"].astype(object), parts["rows"]
                metric, n_total, exact = str(parts["metric"]), int(parts["n_total"]), bool(parts["exact"])
            index = faiss.read_index(str(index_path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
            if int(index.ntotal) != len(rows) or metric not in METRICS:
                raise ValueError("the index and its row map do not match")
        except Exception:  # noqa: BLE001 - a cache file that does not load is rebuilt
            _warn(f"search index file {index_path} could not be read; rebuilding it")
            return None
        self.loads += 1
        return ids, LatentIndex._restore(index, rows, metric, n_total, exact)

    def _write_atomic(self, final: Path, write: Callable[[str], None]) -> None:
        """``write(tmp)`` to a temporary name in the folder, then rename: a reader never sees half a file."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=self.folder)
        os.close(fd)
        try:
            write(tmp)
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _drop_others(self, key: Hashable, keep: tuple[Path, ...]) -> None:
        """Delete the files of ``key`` written for an older fingerprint."""
        for old in self.folder.glob(f"{self._hash(key)}-*"):
            if old not in keep:
                old.unlink(missing_ok=True)

    def load_arrays(self, key: Hashable, fingerprint: Hashable) -> dict[str, np.ndarray] | None:
        """Named arrays saved with ``save_arrays`` under this key and fingerprint, or None."""
        path = self._paths(key, fingerprint)[1].with_suffix(".arrays.npz")
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except Exception:  # noqa: BLE001 - a cache file that does not load is rebuilt
            _warn(f"search cache file {path} could not be read; rebuilding it")
            return None
        self.loads += 1
        return arrays

    def save_arrays(self, key: Hashable, fingerprint: Hashable, arrays: dict[str, np.ndarray]) -> bool:
        """Keep small named arrays on disk beside the indexes (written atomically; older ones of the key dropped)."""
        path = self._paths(key, fingerprint)[1].with_suffix(".arrays.npz")

        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:  # a file object: given a name, np.savez would append ".npz"
                np.savez(fh, **arrays)

        try:
            self._write_atomic(path, write)
            self._drop_others(key, (path,))
        except Exception:  # noqa: BLE001 - only a speed-up
            _warn(f"the search cache could not be saved in {self.folder}; search works, but the next call fits it again")
            return False
        self.saves += 1
        return True

    def keeps(self, rows: int) -> bool:
        """Whether an index of ``rows`` rows is large enough to be saved (``save`` skips smaller ones)."""
        return rows >= self.min_rows

    def save(self, key: Hashable, fingerprint: Hashable, ids: np.ndarray, index: LatentIndex) -> bool:
        """Keep ``index`` on disk (if it is large enough) and drop older files of the same key."""
        if not self.keeps(index.size):
            return False
        index_path, parts_path = self._paths(key, fingerprint)
        try:
            faiss = _faiss()
            self._write_atomic(parts_path, lambda f: _save_parts(f, ids, index))
            self._write_atomic(index_path, lambda f: faiss.write_index(index.index, f))
            self._drop_others(key, (index_path, parts_path))
        except Exception:  # noqa: BLE001 - only a speed-up: a full disk or a read-only folder costs a rebuild next time
            _warn(f"the search index could not be saved in {self.folder}; search works, but the next call builds it again")
            return False
        self.saves += 1
        return True
