"""2-D maps of a representation for the Explore page: PCA, t-SNE, UMAP.

Every map is a pure function of (data, method, seed): the same call gives the same picture, which a
curator needs to find "that island" again after a rerun. That is why t-SNE runs its gradient with one
OpenMP thread (its Barnes-Hut step sums across threads in an arbitrary order, so a threaded run can
differ in the last bits and drift from there) and UMAP runs with ``random_state`` (single-threaded
by design). Rows with a NaN (an item missing the modality being mapped) are not embedded and come
back as NaN, so the output stays aligned with the input.

Large maps: t-SNE and UMAP are fitted on a fixed random sample of ``FIT_SAMPLE`` points (a UMAP of
20,000 points takes about a minute here, and both grow faster than linearly), and the other points
are placed on that map: by UMAP's own ``transform`` (the fitted graph, optimised for the new points
with the fitted ones held still), and for t-SNE, which has no transform, at the distance-weighted
mean of their 10 nearest sample points. The rest is placed in chunks of ``PLACE_CHUNK`` rows, so
memory stays bounded. ``fit_sample_size`` tells the page when this happened, so it can say so.

Before t-SNE and UMAP, data wider than 50 dimensions is reduced to its 50 leading principal
components: the usual practice, a large speed-up on 1,000-d features, and it changes neighbourhoods
very little. Tiny inputs (fewer than 5 points) fall back to PCA, where the neighbour-based methods are
undefined.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Literal

import numpy as np
from sklearn.decomposition import PCA
from threadpoolctl import threadpool_limits

from mmae_core.errors import ConfigError

Method = Literal["pca", "tsne", "umap"]
METHODS: tuple[str, ...] = ("pca", "tsne", "umap")
_PRE_PCA = 50
_SLOW_TSNE = 10_000
_SLOW_UMAP = 20_000
FIT_SAMPLE = 20_000  # t-SNE/UMAP are fitted on at most this many points; the others are placed on the map
PLACE_CHUNK = 50_000
_PLACE_NEIGHBOURS = 10


def fit_sample_size(method: str, points: int) -> int | None:
    """How many points a ``method`` map of ``points`` points is fitted on, when not all of them."""
    return FIT_SAMPLE if method in ("tsne", "umap") and points > FIT_SAMPLE else None


def _pca2(x: np.ndarray, seed: int) -> np.ndarray:
    m, d = x.shape
    out = np.zeros((m, 2), dtype=np.float64)
    if m < 2:
        return out
    k = min(2, m, d)
    out[:, :k] = PCA(n_components=k, svd_solver="full", random_state=seed).fit_transform(x)
    return out


def _reduce(x: np.ndarray, seed: int, fit_rows: np.ndarray | None = None) -> np.ndarray:
    if x.shape[1] <= _PRE_PCA or x.shape[0] <= _PRE_PCA:
        return x
    pca = PCA(n_components=_PRE_PCA, svd_solver="full", random_state=seed)
    if fit_rows is None:
        return pca.fit_transform(x)
    pca.fit(x[fit_rows])
    return np.concatenate([pca.transform(x[i:i + PLACE_CHUNK]) for i in range(0, len(x), PLACE_CHUNK)])


def _sampled(x: np.ndarray, method: str, seed: int, log: Callable[[str], None]) -> np.ndarray:
    """Fit ``method`` on a fixed sample of ``FIT_SAMPLE`` rows and place the others (module docstring)."""
    m = x.shape[0]
    fit = np.sort(np.random.default_rng(seed).choice(m, size=FIT_SAMPLE, replace=False))
    rest = np.setdiff1d(np.arange(m), fit)
    xr = _reduce(x, seed, fit)
    out = np.empty((m, 2), dtype=np.float64)
    log(f"fitting {method.upper() if method == 'umap' else 't-SNE'} on a sample of {FIT_SAMPLE:,} of {m:,} points")
    if method == "umap":
        reducer = _umap_reducer(FIT_SAMPLE, seed)
        with _quiet():
            out[fit] = reducer.fit_transform(xr[fit])
        place = reducer.transform
    else:
        from sklearn.neighbors import NearestNeighbors

        out[fit] = _tsne(xr[fit], seed, reduced=True)
        nn = NearestNeighbors(n_neighbors=_PLACE_NEIGHBOURS).fit(xr[fit])

        def place(chunk: np.ndarray) -> np.ndarray:
            dist, idx = nn.kneighbors(chunk)
            w = 1.0 / np.maximum(dist, 1e-9)
            return (out[fit][idx] * w[:, :, None]).sum(axis=1) / w.sum(axis=1, keepdims=True)

    for start in range(0, len(rest), PLACE_CHUNK):
        rows = rest[start:start + PLACE_CHUNK]
        with _quiet():
            out[rows] = place(xr[rows])
        log(f"placed {min(start + PLACE_CHUNK, len(rest)):,} of {len(rest):,} further points on the map")
    return out


def _tsne(x: np.ndarray, seed: int, reduced: bool = False) -> np.ndarray:
    from sklearn.manifold import TSNE

    m = x.shape[0]
    perplexity = float(min(30.0, max(2.0, (m - 1) / 3.0)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    with threadpool_limits(limits=1, user_api="openmp"):
        return tsne.fit_transform(x if reduced else _reduce(x, seed))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """umap's notes about n_jobs and small graphs are not the user's business."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _umap_reducer(m: int, seed: int):  # noqa: ANN202 - umap.UMAP, imported lazily
    import umap  # imported here: it compiles numba code on first use and is slow to import

    return umap.UMAP(n_components=2, n_neighbors=int(min(15, m - 1)), random_state=seed, n_jobs=1,
                     init="spectral" if m > 50 else "random")


def _umap(x: np.ndarray, seed: int) -> np.ndarray:
    reducer = _umap_reducer(x.shape[0], seed)
    with _quiet():
        return reducer.fit_transform(_reduce(x, seed))


def project_2d(
    x: np.ndarray, method: Method = "pca", seed: int = 42, on_progress: Callable[[str], None] | None = None
) -> np.ndarray:
    """(n, 2) float32 coordinates of the rows of ``x`` by ``method``; NaN rows stay NaN."""
    if method not in METHODS:
        raise ConfigError(f"unknown map '{method}'; choose one of {', '.join(METHODS)}.")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ConfigError(f"a map needs a 2-D array (items x features), got {x.ndim} dimensions.")
    log = on_progress or (lambda _s: None)
    out = np.full((x.shape[0], 2), np.nan, dtype=np.float32)
    ok = np.isfinite(x).all(axis=1)
    xs = x[ok]
    m = xs.shape[0]
    if m == 0:
        return out
    if method == "pca" or m < 5:
        y = _pca2(xs, seed)
    elif fit_sample_size(method, m):
        y = _sampled(xs, method, seed, log)
    elif method == "tsne":
        if m > _SLOW_TSNE:
            log(f"t-SNE of {m:,} points runs on one core and will take a few minutes; PCA is instant.")
        y = _tsne(xs, seed)
    else:
        if m > _SLOW_UMAP:
            log(f"UMAP of {m:,} points will take a minute or two.")
        y = _umap(xs, seed)
    out[ok] = np.asarray(y, dtype=np.float32)
    return out
