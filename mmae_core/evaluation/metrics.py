"""Clustering metrics: Silhouette, ARI, NMI, Calinski-Harabasz, Davies-Bouldin.

Silhouette is the expensive one (O(n^2)); the evaluation grid scores five k values on the same
representation, so it computes the pairwise distance matrix once and reuses it for every k
(``silhouette_from_distances``). The per-cluster sums of distances are then one matrix product with
the one-hot cluster matrix instead of a Python loop over rows, which is what makes the full grid
cheap. The formula is exactly scikit-learn's (singleton clusters score 0), checked against it in the
tests. ``silhouette_samples_chunked`` does the same from features, a block of rows at a time, for sets
too large to hold an n x n matrix (tag cohesion on a whole train split).
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from mmae_core.evaluation.baselines import blas_single_thread, parallel_map

NO_LABELS_NOTE = "no labels in this split, so ARI/NMI cannot be computed"

# Above this many items the grid scores Silhouette on a fixed-seed sample of this size: the n x n
# float32 matrix would pass 400 MB and the score changes in the third decimal at most.
SILHOUETTE_FULL_MAX = 10_000


def _onehot(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense cluster codes 0..c-1, the (n, c) one-hot matrix and the cluster sizes."""
    _, codes = np.unique(labels, return_inverse=True)
    codes = codes.ravel()
    c = int(codes.max()) + 1 if len(codes) else 0
    onehot = np.zeros((len(codes), c), dtype=np.float64)
    onehot[np.arange(len(codes)), codes] = 1.0
    sizes = onehot.sum(axis=0)
    return codes, onehot, sizes


def _silhouette_from_sums(sums: np.ndarray, codes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Per-item silhouette from each item's summed distance to every cluster (rows of ``sums``)."""
    rows = np.arange(len(codes))
    own_size = sizes[codes]
    a = sums[rows, codes] / np.maximum(own_size - 1.0, 1.0)
    mean_other = sums / sizes[None, :]
    mean_other[rows, codes] = np.inf
    b = mean_other.min(axis=1)
    denom = np.maximum(a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(denom > 0, (b - a) / denom, 0.0)
    s[own_size <= 1] = 0.0  # scikit-learn's convention for singleton clusters
    return s


def silhouette_from_distances(dist: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette from a precomputed (n, n) distance matrix; same value as scikit-learn's."""
    codes, onehot, sizes = _onehot(labels)
    if len(sizes) < 2 or len(sizes) > len(codes) - 1:
        return float("nan")
    sums = (dist @ onehot.astype(dist.dtype, copy=False)).astype(np.float64)
    return float(_silhouette_from_sums(sums, codes, sizes).mean())


def silhouette_samples_chunked(x: np.ndarray, labels: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Per-item silhouette from features without holding an n x n matrix (memory ~ chunk x n x 4 B)."""
    codes, onehot, sizes = _onehot(labels)
    n = len(codes)
    if len(sizes) < 2 or len(sizes) > n - 1:
        return np.zeros(n)
    xc, sq = _centred(x)
    oh = onehot.astype(np.float32)
    sums = np.empty((n, len(sizes)), dtype=np.float64)

    def block(se: tuple[int, int]) -> None:
        a, b = se
        d = _distance_block(xc, sq, a, b, np.empty((b - a, n), dtype=np.float32))
        d[np.arange(b - a), np.arange(a, b)] = 0.0
        sums[a:b] = d @ oh

    with blas_single_thread():
        parallel_map(block, [(a, min(a + chunk, n)) for a in range(0, n, chunk)])
    return _silhouette_from_sums(sums, codes, sizes)


def _centred(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 points minus their mean (distances are unchanged and the float32 cancellation error
    of |u|^2 + |v|^2 - 2 u.v shrinks with the norms) and their squared norms."""
    x = np.asarray(x, dtype=np.float64)
    xc = np.ascontiguousarray(x - x.mean(axis=0), dtype=np.float32)
    return xc, np.einsum("ij,ij->i", xc, xc)


def _distance_block(xc: np.ndarray, sq: np.ndarray, a: int, b: int, out: np.ndarray) -> np.ndarray:
    """Rows a..b of the distance matrix as |u|^2 + |v|^2 - 2 u.v, computed in place in ``out``."""
    np.matmul(xc[a:b], xc.T, out=out)
    out *= -2.0
    out += sq[a:b, None]
    out += sq[None, :]
    np.maximum(out, 0.0, out=out)
    np.sqrt(out, out=out)
    return out


def pairwise(x: np.ndarray) -> np.ndarray:
    """The (n, n) euclidean distance matrix in float32 with an exact zero diagonal, computed in row
    blocks on the worker threads (see ``_centred`` for the accuracy)."""
    xc, sq = _centred(x)
    n = xc.shape[0]
    out = np.empty((n, n), dtype=np.float32)
    step = 1024
    with blas_single_thread():
        parallel_map(lambda se: _distance_block(xc, sq, se[0], se[1], out[se[0]:se[1]]),
                     [(a, min(a + step, n)) for a in range(0, n, step)])
    np.fill_diagonal(out, 0.0)
    return out


def label_mask(labels: np.ndarray | None) -> np.ndarray | None:
    """Items that carry a usable label (None, NaN and empty strings are unlabelled); None if none do."""
    if labels is None:
        return None
    lab = np.asarray(labels, dtype=object)
    ok = np.array([v is not None and not (isinstance(v, float) and np.isnan(v)) and str(v) != "" for v in lab], dtype=bool)
    return ok if ok.any() else None


def encode_labels(labels: np.ndarray | None) -> np.ndarray | None:
    """Integer codes of the labels (-1 for an unlabelled item), or None when no item has a label.

    Encoding once lets the grid score 30 clusterings without re-sorting thousands of strings each time.
    """
    mask = label_mask(labels)
    if mask is None:
        return None
    codes = np.full(len(mask), -1, dtype=np.int64)
    codes[mask] = np.unique(np.asarray(labels, dtype=object)[mask].astype(str), return_inverse=True)[1].ravel()
    return codes


def external_scores_encoded(codes: np.ndarray | None, labels_pred: np.ndarray) -> tuple[float, float]:
    """ARI and NMI over the items whose code is not -1 (see ``encode_labels``)."""
    if codes is None:
        return float("nan"), float("nan")
    keep = codes >= 0
    t, p = codes[keep], np.asarray(labels_pred)[keep]
    return float(adjusted_rand_score(t, p)), float(normalized_mutual_info_score(t, p))


def external_scores(labels_true: np.ndarray, labels_pred: np.ndarray) -> tuple[float, float]:
    """ARI and NMI over the items that have a label (see ``label_mask``); NaN when none has."""
    return external_scores_encoded(encode_labels(labels_true), labels_pred)


def internal_scores(x: np.ndarray, labels_pred: np.ndarray) -> tuple[float, float]:
    """Calinski-Harabasz and Davies-Bouldin (label-free, O(n d), so always computed).

    Same formulas as scikit-learn's ``calinski_harabasz_score`` and ``davies_bouldin_score`` (checked
    in the tests), vectorised through the one-hot cluster matrix instead of a Python loop per
    cluster: the grid calls this 30 times and the loops cost more than the clustering metrics' maths.
    """
    codes, onehot, sizes = _onehot(labels_pred)
    n, k = len(codes), len(sizes)
    if k < 2 or k > n - 1:
        return float("nan"), float("nan")
    x = np.asarray(x, dtype=np.float64)
    centroids = (onehot.T @ x) / sizes[:, None]
    resid = x - centroids[codes]
    within_sq = np.einsum("ij,ij->i", resid, resid)
    mean = x.mean(axis=0)
    between = float((sizes * ((centroids - mean) ** 2).sum(axis=1)).sum())
    within = float(within_sq.sum())
    ch = 1.0 if within == 0.0 else between * (n - k) / (within * (k - 1.0))
    scatter = np.bincount(codes, weights=np.sqrt(within_sq), minlength=k) / sizes
    cd = np.sqrt(((centroids[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2))
    if np.allclose(scatter, 0) or np.allclose(cd, 0):
        return float(ch), 0.0
    cd[cd == 0] = np.inf  # as scikit-learn: the diagonal and coincident centroids do not count
    db = float(((scatter[:, None] + scatter[None, :]) / cd).max(axis=1).mean())
    return float(ch), db
