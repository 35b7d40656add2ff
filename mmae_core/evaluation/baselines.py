"""Linear baselines the MMAE is compared with: unimodal PCA and fused PCA.

Inputs are feature dicts already standardized with the train split's statistics (``Standardizer``),
so every feature has mean 0 and variance 1 on train. The estimators follow scikit-learn's contract
(``fit`` returns ``self``, ``transform`` returns an array, parameters live in ``__init__``) except
that ``X`` is a dict ``modality -> (n, d)`` array rather than one matrix.

Why the estimators share ``TrainMoments``: all linear baselines only need the train means and the
Gram matrices of the centred train views. Unimodal PCA needs the diagonal blocks, fused PCA all
blocks, MCCA the diagonal blocks plus the cross blocks. Computing them once (the dominant cost on
LUMA-sized data: 21,000 x 1,842) and solving small eigenproblems from them lets the evaluation grid
fit every representation in about the time of one Gram matrix, where calling ``sklearn.PCA`` three
times and once more on the concatenation would redo the same products.

Missing modalities (an all-NaN row): the moments are computed with a missing row set to the train
mean of its view (0 after centring), i.e. mean imputation, and unimodal PCA rescales its covariance
to the items that have the view, so its components are exactly those of the present rows.
``UnimodalPCA.transform`` keeps a missing row NaN (the item has no coordinates in that view; the
evaluation clusters only items that have the view), ``FusedPCA.transform`` imputes the mean.
"""
from __future__ import annotations

import functools
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
import scipy.linalg as sla
from sklearn.base import BaseEstimator, TransformerMixin
from threadpoolctl import OpenBLASController, ThreadpoolController

from mmae_core.errors import ConfigError

# Below this many multiply-adds a Gram block is computed in float64 (exact enough for any reg);
# above it, float32 GEMM: twice as fast and, summing ~1e4 standardized products, accurate to ~1e-5.
_FLOAT64_BELOW = 2e8
# Above this size a top-k eigenproblem is solved in float32 (its input Gram is float32 anyway).
_FLOAT32_EIGH_ABOVE = 512

# --- Threading -----------------------------------------------------------------------------------
# Measured on the 2-core target while other processes were busy (load ~5): multithreaded OpenBLAS
# ran a 1024 x 1024 eigh 5-10x *slower* than one thread and a 21,000 x 1,024 Gram 2x slower, because
# its threads spin-wait on each other when the OS deschedules one. So linear algebra here runs with
# BLAS pinned to one thread and gets its parallelism from Python threads over independent pieces
# (row blocks of a product, separate fits, separate KMeans runs): as fast as BLAS threads on an idle
# machine, and never slower than one core on a busy one. Row blocks are fixed by the data size, not
# by the core count, so results are identical on any machine.
N_WORKERS = max(1, min(4, os.cpu_count() or 1))
_N_ROW_BLOCKS = 4

T = TypeVar("T")
R = TypeVar("R")


class _BlasSingleThread:
    """Pins BLAS to one thread while any caller is inside; reentrant and safe across threads.

    threadpoolctl's limit is process-wide state, so nested or concurrent ``with`` blocks restoring
    it independently could leave BLAS pinned (or unpinned) by accident; a shared depth count makes
    the first entry pin it and the last exit restore it. threadpoolctl (3.8) also lets only one
    "controlling" thread change a pthreads OpenBLAS and silently ignores the others, so the first
    entry and the last exit (possibly different threads) each take control explicitly and give it
    back.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._limiter: object | None = None

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                OpenBLASController.clear_controlling_thread(force=True)
                self._limiter = threadpool_controller().limit(limits=1, user_api="blas")
                OpenBLASController.clear_controlling_thread(force=True)
            self._depth += 1
        own = _pin_openmp_blas_here()
        try:
            yield
        finally:
            for lib, n in own:
                lib.set_num_threads(n)
            with self._lock:
                self._depth -= 1
                if self._depth == 0 and self._limiter is not None:
                    OpenBLASController.clear_controlling_thread(force=True)
                    self._limiter.restore_original_limits()  # type: ignore[attr-defined]
                    OpenBLASController.clear_controlling_thread(force=True)
                    self._limiter = None


blas_single_thread = _BlasSingleThread()
_controller: ThreadpoolController | None = None
_controller_modules = -1


def threadpool_controller() -> ThreadpoolController:
    """One shared controller: building one scans every loaded library (milliseconds), and the grid
    limits threads around each of its ~100 KMeans runs. It is rebuilt when modules were imported
    since the scan, because an import can load another BLAS (faiss brings its own OpenBLAS), which a
    stale controller would leave multi-threaded."""
    global _controller, _controller_modules
    if _controller is None or len(sys.modules) != _controller_modules:
        _controller = ThreadpoolController()
        _controller_modules = len(sys.modules)
    return _controller


def _pin_openmp_blas_here() -> list[tuple[object, int]]:
    """Pin every OpenMP-threaded BLAS to one thread *for the calling thread*; returns what to restore.

    An OpenBLAS built on OpenMP (faiss ships one) keeps its thread count in OpenMP's per-thread state,
    so the process-wide pin above, set from whichever thread entered first, does not reach the other
    worker threads; each thread sets its own.
    """
    saved = []
    for lib in threadpool_controller().lib_controllers:
        if lib.user_api == "blas" and getattr(lib, "threading_layer", None) == "openmp":
            saved.append((lib, lib.get_num_threads()))
            lib.set_num_threads(1)
    return saved


def single_blas(fn: Callable[..., R]) -> Callable[..., R]:
    """Decorator: run ``fn`` with BLAS pinned to one thread (see the threading note above)."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> R:
        with blas_single_thread():
            return fn(*args, **kwargs)

    return wrapper


def parallel_map(fn: Callable[[T], R], items: Iterable[T], workers: int = N_WORKERS,
                 on_done: Callable[[int, int], None] | None = None) -> list[R]:
    """``[fn(x) for x in items]`` on a thread pool (numpy, LAPACK and sklearn's loops release the GIL).

    ``on_done(done, total)`` is called after each item, always in the calling thread: a progress
    callback may be a Streamlit call, which does nothing from a worker thread."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        out = []
        for i, x in enumerate(items, 1):
            out.append(fn(x))
            if on_done is not None:
                on_done(i, len(items))
        return out
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as ex:
        futures = [ex.submit(fn, x) for x in items]
        if on_done is not None:
            for i, _ in enumerate(as_completed(futures), 1):
                on_done(i, len(items))
        return [f.result() for f in futures]


def _row_blocks(n: int) -> list[tuple[int, int]]:
    if n < 4096:
        return [(0, n)]
    edges = np.linspace(0, n, _N_ROW_BLOCKS + 1).astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def par_gram(xa: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """``xa.T @ xb`` summed over fixed row blocks in parallel threads; float64 result."""
    with blas_single_thread():
        parts = parallel_map(lambda se: xa[se[0]:se[1]].T @ xb[se[0]:se[1]], _row_blocks(xa.shape[0]))
    out = parts[0].astype(np.float64)
    for p in parts[1:]:
        out += p
    return out


def par_matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x @ w`` over fixed row blocks in parallel threads."""
    with blas_single_thread():
        parts = parallel_map(lambda se: x[se[0]:se[1]] @ w, _row_blocks(x.shape[0]))
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)


def present_mask(x: np.ndarray) -> np.ndarray:
    """Rows that are not all NaN (the item has this modality)."""
    return ~np.isnan(x).all(axis=1)


def top_eigh(c: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest eigenpairs of a symmetric matrix, descending, with a fixed sign convention.

    The sign of each eigenvector is chosen so its largest-magnitude entry is positive: LAPACK's sign
    is arbitrary, and a fixed one keeps the representations (and any stored projection) identical
    from run to run and across machines as far as floating point allows.
    """
    d = c.shape[0]
    k = int(min(k, d))
    c = np.asarray(c, dtype=np.float32 if d > _FLOAT32_EIGH_ABOVE else np.float64)
    with blas_single_thread():
        if k < d and d > 256:
            # Only the top k: MRRR on the tridiagonal form skips the unneeded eigenvectors.
            w, v = sla.eigh(c, subset_by_index=[d - k, d - 1], driver="evr", check_finite=False)
        else:
            w, v = np.linalg.eigh(c)
    order = np.argsort(w)[::-1][:k]
    w, v = w[order].astype(np.float64), v[:, order].astype(np.float64)
    idx = np.argmax(np.abs(v), axis=0)
    signs = np.sign(v[idx, np.arange(v.shape[1])])
    signs[signs == 0] = 1.0
    return w, v * signs


@dataclass
class TrainMoments:
    """Train means and (lazily computed, cached) Gram blocks of the centred, mean-imputed views."""

    names: tuple[str, ...]
    n: int
    means: dict[str, np.ndarray]  # mean over the items that have the view (float64)
    counts: dict[str, int]  # items that have the view
    centered: dict[str, np.ndarray]  # (n, d): x - mean on present rows, 0 on missing rows
    _gram: dict[tuple[str, str], np.ndarray] = field(default_factory=dict, repr=False)
    _eig: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _key_locks: dict[tuple[str, int], threading.Lock] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, features: dict[str, np.ndarray]) -> "TrainMoments":
        names = tuple(features)
        if not names:
            raise ConfigError("no modality was given to fit a baseline on; supply at least one feature array.")
        n = int(next(iter(features.values())).shape[0])
        means: dict[str, np.ndarray] = {}
        counts: dict[str, int] = {}
        centered: dict[str, np.ndarray] = {}
        for m in names:
            x = np.asarray(features[m])
            if x.shape[0] != n:
                raise ConfigError(f"{m} has {x.shape[0]} rows but the other modalities have {n}; align the arrays.")
            ok = present_mask(x)
            cnt = int(ok.sum())
            if cnt == 0:
                raise ConfigError(f"no train item has {m}, so no baseline can be fitted on it; drop that modality.")
            dtype = np.float64 if n * x.shape[1] * x.shape[1] < _FLOAT64_BELOW else np.float32
            if cnt == n:
                mu = x.mean(axis=0, dtype=np.float64)
                xc = np.asarray(x, dtype=dtype) - mu.astype(dtype)
            else:
                mu = x[ok].mean(axis=0, dtype=np.float64)
                xc = np.zeros(x.shape, dtype=dtype)
                xc[ok] = x[ok] - mu
            means[m], counts[m], centered[m] = mu, cnt, xc
        return cls(names, n, means, counts, centered)

    def has(self, a: str, b: str) -> bool:
        return (a, b) in self._gram or (b, a) in self._gram

    def gram(self, a: str, b: str) -> np.ndarray:
        """sum_i xc_a[i] xc_b[i]^T in float64 (cached; the (b, a) block is its transpose)."""
        if (a, b) in self._gram:
            return self._gram[(a, b)]
        if (b, a) in self._gram:
            return self._gram[(b, a)].T
        xa, xb = self.centered[a], self.centered[b]
        if xa.dtype != xb.dtype:
            xa, xb = xa.astype(np.float32), xb.astype(np.float32)
        g = par_gram(xa, xb)
        if a == b:
            g = (g + g.T) / 2.0  # exact symmetry for eigh
        self._gram[(a, b)] = g
        return g

    def view_eigh(self, m: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` eigenpairs of view ``m``'s Gram block (cached: unimodal PCA and MCCA both need
        them, and the covariances they use are this block divided by a count)."""
        with self._lock:  # one lock per block: one computation even when two fits ask at once
            key_lock = self._key_locks.setdefault((m, k), threading.Lock())
        with key_lock:
            if (m, k) not in self._eig:
                self._eig[(m, k)] = top_eigh(self.gram(m, m), k)
            return self._eig[(m, k)]

    def compute_all(self) -> "TrainMoments":
        """Every block (upper triangle only: the rest are transposes)."""
        for i, a in enumerate(self.names):
            for b in self.names[i:]:
                self.gram(a, b)
        return self

    def cov(self, a: str, b: str) -> np.ndarray:
        """Covariance over all n items with missing rows mean-imputed."""
        return self.gram(a, b) / self.n

    def present_cov(self, m: str) -> np.ndarray:
        """Covariance of view ``m`` over the items that have it (missing rows contribute 0 to the Gram)."""
        return self.gram(m, m) / self.counts[m]


def center(x: np.ndarray, mean: np.ndarray, impute: bool) -> np.ndarray:
    """(x - train mean) as float32; a missing row becomes 0 (the mean) if ``impute``, else stays NaN."""
    xc = (np.asarray(x) - mean).astype(np.float32)
    if impute:
        xc[~present_mask(np.asarray(x))] = 0.0
    return xc


def _check_names(features: dict[str, np.ndarray], names: tuple[str, ...], what: str) -> None:
    missing = [m for m in names if m not in features]
    if missing:
        raise ConfigError(f"{what} was fitted on {', '.join(names)} but the data lack {', '.join(missing)}; give the same modalities.")


def _moments_for(features: dict[str, np.ndarray], names: tuple[str, ...], moments: TrainMoments | None) -> TrainMoments:
    if moments is not None and all(m in moments.names for m in names):
        return moments
    return TrainMoments.of({m: features[m] for m in names})


class UnimodalPCA(BaseEstimator, TransformerMixin):
    """PCA of one modality, fitted on the train items that have it (the paper's unimodal baseline).

    ``n_components`` is capped by the data: at most the number of present train items and the
    modality's dimension (the paper's image features are 50-d, so "PCA to 50" is a rotation there).
    """

    def __init__(self, modality: str, n_components: int = 256) -> None:
        self.modality = modality
        self.n_components = n_components

    @single_blas
    def fit(self, features_train: dict[str, np.ndarray], y: object = None, moments: TrainMoments | None = None) -> "UnimodalPCA":
        if self.modality not in features_train:
            raise ConfigError(f"there is no modality named {self.modality}; choose one of {', '.join(features_train)}.")
        mom = _moments_for(features_train, (self.modality,), moments)
        m = self.modality
        d = mom.centered[m].shape[1]
        k = int(max(1, min(self.n_components, mom.counts[m], d)))
        cov = mom.present_cov(m)
        w, v = mom.view_eigh(m, k)
        w = w / mom.counts[m]
        total = float(np.trace(cov))
        self.mean_ = mom.means[m]
        self.components_ = v.T  # (k, d), as in sklearn.decomposition.PCA
        # Ratio from the /n covariance; the variances themselves with sklearn's n - 1 denominator.
        self.explained_variance_ratio_ = np.maximum(w, 0.0) / total if total > 0 else np.zeros_like(w)
        self.explained_variance_ = np.maximum(w, 0.0) * mom.counts[m] / max(mom.counts[m] - 1, 1)
        self.n_components_ = k
        return self

    def transform(self, features: dict[str, np.ndarray]) -> np.ndarray:
        _check_names(features, (self.modality,), "this PCA")
        x = np.asarray(features[self.modality])
        ok = present_mask(x)
        out = np.full((x.shape[0], self.n_components_), np.nan, dtype=np.float32)
        xc = (x[ok] - self.mean_).astype(np.float32)
        out[ok] = xc @ self.components_.T.astype(np.float32)
        return out


class FusedPCA(BaseEstimator, TransformerMixin):
    """The paper's linear fusion: weighted standardized blocks, concatenated, PCA to ``n_components``.

    ``weights`` maps modality -> (alpha, beta, gamma...); a modality not named gets 1.0. Weighting
    a block by w multiplies its share of the variance by w^2, which is how the weights steer which
    modality the leading components follow. Missing rows are mean-imputed (0 after centring) both
    when fitting and transforming, so every item gets coordinates.
    """

    def __init__(self, weights: dict[str, float] | None = None, n_components: int = 50, modalities: tuple[str, ...] | None = None) -> None:
        self.weights = weights
        self.n_components = n_components
        self.modalities = modalities

    @single_blas
    def fit(self, features_train: dict[str, np.ndarray], y: object = None, moments: TrainMoments | None = None) -> "FusedPCA":
        names = tuple(self.modalities) if self.modalities else tuple(features_train)
        _check_names(features_train, names, "fused PCA")
        weights = dict(self.weights or {})
        unknown = sorted(set(weights) - set(names))
        if unknown:
            raise ConfigError(f"a fusion weight names {', '.join(unknown)}, which is not a modality; use {', '.join(names)}.")
        for m, wt in weights.items():
            if not np.isfinite(wt) or wt < 0:
                raise ConfigError(f"the fusion weight of {m} must be a non-negative number (got {wt}).")
        wvec = [float(weights.get(m, 1.0)) for m in names]
        if not any(wt > 0 for wt in wvec):
            raise ConfigError("all fusion weights are 0; give at least one modality a positive weight.")
        mom = _moments_for(features_train, names, moments)
        dims = [mom.centered[m].shape[1] for m in names]
        total_d = int(sum(dims))
        cov = np.empty((total_d, total_d))
        offs = np.concatenate([[0], np.cumsum(dims)])
        for i, a in enumerate(names):
            for j, b in enumerate(names[i:], start=i):
                blk = mom.cov(a, b) * (wvec[i] * wvec[j])
                cov[offs[i]:offs[i + 1], offs[j]:offs[j + 1]] = blk
                cov[offs[j]:offs[j + 1], offs[i]:offs[i + 1]] = blk.T
        k = int(max(1, min(self.n_components, mom.n, total_d)))
        w, v = top_eigh(cov, k)
        total = float(np.trace(cov))
        self.names_ = names
        self.weights_ = dict(zip(names, wvec))
        self.offsets_ = offs
        self.components_ = v.T  # (k, sum d) in the weighted, concatenated space
        self.explained_variance_ratio_ = np.maximum(w, 0.0) / total if total > 0 else np.zeros_like(w)
        self.explained_variance_ = np.maximum(w, 0.0) * mom.n / max(mom.n - 1, 1)
        self.n_components_ = k
        self.means_ = {m: mom.means[m] for m in names}
        return self

    def transform(self, features: dict[str, np.ndarray]) -> np.ndarray:
        _check_names(features, self.names_, "fused PCA")
        n = np.asarray(features[self.names_[0]]).shape[0]
        out = np.zeros((n, self.n_components_), dtype=np.float32)
        for i, m in enumerate(self.names_):
            xc = center(features[m], self.means_[m], impute=True)
            comp = self.components_[:, self.offsets_[i]:self.offsets_[i + 1]].T.astype(np.float32)
            out += xc @ (comp * np.float32(self.weights_[m]))
        return out


def unimodal_dim(modality: str, unimodal_dims: dict[str, int], default: int) -> int:
    """The PCA target of a modality from ``EvalConfig`` (image 50, audio 256, text 256, else default)."""
    return int(unimodal_dims.get(modality, default))
