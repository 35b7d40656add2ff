"""2-D maps of a representation for the Explore page (PRODUCT.md §8.4): PCA, t-SNE, UMAP.

Every map is a pure function of (data, method, seed): the same call gives the same picture, which a
curator needs to find "that island" again after a rerun. That is why t-SNE runs its gradient with one
OpenMP thread (its Barnes-Hut step sums across threads in an arbitrary order, so a threaded run can
differ in the last bits and drift from there) and UMAP runs with ``random_state`` (single-threaded
by design). Rows with a NaN (an item missing the modality being mapped) are not embedded and come
back as NaN, so the output stays aligned with the input.

Before t-SNE and UMAP, data wider than 50 dimensions is reduced to its 50 leading principal
components: the usual practice, a large speed-up on 1,000-d features, and it changes neighbourhoods
very little. Tiny inputs (fewer than 5 points) fall back to PCA, where the neighbour-based methods are
undefined.
"""
from __future__ import annotations

from typing import Callable, Literal

import numpy as np
from sklearn.decomposition import PCA
from threadpoolctl import threadpool_limits

from mmae_core.errors import ConfigError

Method = Literal["pca", "tsne", "umap"]
METHODS: tuple[str, ...] = ("pca", "tsne", "umap")
_PRE_PCA = 50
_SLOW_TSNE = 10_000
_SLOW_UMAP = 20_000


def _pca2(x: np.ndarray, seed: int) -> np.ndarray:
    m, d = x.shape
    out = np.zeros((m, 2), dtype=np.float64)
    if m < 2:
        return out
    k = min(2, m, d)
    out[:, :k] = PCA(n_components=k, svd_solver="full", random_state=seed).fit_transform(x)
    return out


def _reduce(x: np.ndarray, seed: int) -> np.ndarray:
    if x.shape[1] <= _PRE_PCA or x.shape[0] <= _PRE_PCA:
        return x
    return PCA(n_components=_PRE_PCA, svd_solver="full", random_state=seed).fit_transform(x)


def _tsne(x: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    m = x.shape[0]
    perplexity = float(min(30.0, max(2.0, (m - 1) / 3.0)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    with threadpool_limits(limits=1, user_api="openmp"):
        return tsne.fit_transform(_reduce(x, seed))


def _umap(x: np.ndarray, seed: int) -> np.ndarray:
    import warnings

    import umap  # imported here: it compiles numba code on first use and is slow to import

    m = x.shape[0]
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=int(min(15, m - 1)),
        random_state=seed,
        n_jobs=1,
        init="spectral" if m > 50 else "random",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # umap's notes about n_jobs and small graphs are not the user's business
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
