"""Clusters from a k-nearest-neighbour graph of the latents: Leiden (finds k) and spectral (at a given k).

Why a graph: the MMAE keeps the class information (5-NN accuracy on par with fused PCA) but KMeans
cuts its space badly; on ``mfeat`` the same PCA-50 vectors reach ARI .84 with spectral clustering on
a 10-NN graph against .78 with KMeans. Leiden on the same graph also answers the question curators
cannot: how many clusters there are (benchmarks/auto_k.py measures how close it comes to the class
count on every shipped set; the default resolution is the one that came closest there).

Choices:

* The graph: each item's ``n_neighbors`` nearest items by euclidean distance, found with faiss; an
  exact flat index up to ``EXACT_MAX`` items, an inverted-file index above (``knn`` says why), so a
  1M-item graph is built in bounded time and memory. The directed kNN relation is symmetrised as
  ``(A + A.T) / 2`` (scikit-learn's ``SpectralClustering(affinity='nearest_neighbors')``): a mutual
  edge weighs 1, a one-way edge 0.5. One graph serves both methods.
* Leiden (``leidenalg``, RB-configuration modularity, one ``resolution``, seeded, two passes as
  leidenalg's default) returns communities; those smaller than ``min_size`` (isolated items among
  them) are ``UNASSIGNED`` (-1): a tag of one or two stray items is not worth a curator's look, and
  those items are kept, in an "unassigned" proposal, never dropped.
* Spectral: scikit-learn's algorithm on the precomputed sparse affinity (``spectral_embedding``
  says why the eigenvectors are found our way), seeded.
* A setting that gives one cluster, or more clusters than items, is refused with one sentence.
* Above ``GRAPH_SAMPLE_MAX`` items the graph methods cluster a seeded sample of that size and every
  other item takes the majority label of its ``N_NEIGHBORS`` nearest sample items (``extend``), as
  single-cell tools place new cells onto a reference: Leiden on the whole 1M-item graph took 44
  minutes and 3.8 GB here (benchmarks/kmeans_scale.py), the sample and the vote take minutes.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from mmae_core.errors import ConfigError

AUTO = "auto"
METHODS: tuple[str, ...] = ("kmeans", "leiden", "spectral")
UNASSIGNED = -1
UNASSIGNED_NAME = "unassigned"
N_NEIGHBORS = 15
# benchmarks/auto_k.py, 3 seeds, fused PCA and paper-preset latents: on the four real sets (10
# classes) 1.0 and 2.0 tie within the intervals (k 10 +- 1 at both, ARI within .03); on the demo
# (50 classes) 1.0 finds 12-25 clusters and 2.0 finds 28-40, with ARI .20/.54 against .38/.78.
# Archives hold many more than 10 tags, so 2.0.
DEFAULT_RESOLUTION = 2.0
MIN_SIZE = 3
# Regulariser of the spectral embedding, as a share of the mean degree (``spectral_embedding``):
# 0.1 kept scikit-learn's ARI on mfeat (.864) and beat it on the demo (.31 vs .26 at k = 50);
# a full mean degree cost the demo .11 ARI.
TAU = 0.1
# Up to this many items the kNN search is exact (faiss flat index, n^2 d work: 50k x 128 takes
# ~10 s on 2 cores); above, an IVF index whose cost grows as n^1.5 (benchmarks/kmeans_scale.py).
EXACT_MAX = 50_000
# The most items a graph method clusters directly; above, a sample of this size is clustered and the
# rest placed by their nearest sample items (``graph_labels``). 100,000 keeps the kNN graph at about
# 1.5 million edges and Leiden at seconds; a tag of 0.1% of an archive still has ~100 sample items.
GRAPH_SAMPLE_MAX = 100_000


@dataclass(frozen=True)
class GraphClusters:
    """Labels 0..k-1 per item (``UNASSIGNED`` for items in no community of ``min_size``) and how k came."""

    labels: np.ndarray
    k: int
    k_found_by: str  # "leiden", or "given" when k was set by the caller
    resolution: float | None
    n_unassigned: int


def parse_k_value(k: object) -> int | str:
    """``"auto"`` (any case) or a whole number: the one place a k setting is read."""
    if isinstance(k, str):
        if k.strip().lower() == AUTO:
            return AUTO
        try:
            return int(k.strip())
        except ValueError:
            raise ConfigError(f"k must be a whole number or 'auto' (got '{k}').") from None
    if isinstance(k, (bool, np.bool_)) or int(k) != k:  # type: ignore[call-overload]
        raise ConfigError(f"k must be a whole number or 'auto' (got {k!r}).")
    return int(k)  # type: ignore[call-overload]



def parse_k_grid(text: str) -> tuple[int | str, ...]:
    """A k grid such as ``30,40,50``, typed on the CLI or a page; ``auto`` (alone or among numbers)
    means k found by the method."""
    try:
        ks = tuple(parse_k_value(p) for p in str(text).split(",") if p.strip())
    except ConfigError:
        raise ConfigError(f"k must be whole numbers separated by commas, e.g. 30,40,50, or auto (got '{text}').") from None
    if not ks:
        raise ConfigError("the k grid is empty; give at least one k, e.g. 30,40,50, or auto.")
    return ks

def check_method(method: str) -> str:
    if method not in METHODS:
        raise ConfigError(f"unknown clustering '{method}'; choose one of {', '.join(METHODS)}.")
    return method


def default_method(k: object) -> str:
    """The clustering used when none is named: Leiden when k is auto, KMeans (the paper's) for a given k."""
    return "leiden" if parse_k_value(k) == AUTO else "kmeans"


LEIDEN_NEEDS_AUTO = ("Leiden finds the number of clusters itself; give k 'auto' with it, "
                     "or choose kmeans or spectral for a fixed k.")


def check_setting(method: str, k: object) -> tuple[str, int | str]:
    """A clustering and a k read and checked together (Leiden takes no fixed k)."""
    method, k = check_method(method), parse_k_value(k)
    if method == "leiden" and k != AUTO:
        raise ConfigError(LEIDEN_NEEDS_AUTO)
    return method, k


def check_resolution(resolution: float) -> float:
    if not np.isfinite(resolution) or resolution <= 0:
        raise ConfigError(f"the Leiden resolution must be a positive number (got {resolution}); the default is {DEFAULT_RESOLUTION}.")
    return float(resolution)


def _index(x: np.ndarray, seed: int) -> "object":
    """A faiss index holding ``x``: exact up to ``EXACT_MAX`` rows, else IVF (see ``knn``)."""
    import faiss

    n, d = x.shape
    if n <= EXACT_MAX:
        index = faiss.IndexFlatL2(d)
    else:
        nlist = int(np.sqrt(n))
        quant = faiss.IndexFlatL2(d)
        index = faiss.IndexIVFFlat(quant, d, nlist)
        index.cp.seed = seed
        sample = np.random.RandomState(seed).choice(n, size=min(n, 64 * nlist), replace=False)
        index.train(x[np.sort(sample)])
        index.nprobe = 8  # (faiss's wrapper keeps the quantizer alive with the index)
    index.add(x)
    return index


SEARCH_ROWS = 65_536  # queries per faiss search call (bounds the distance buffers)


def _search(index: "object", q: np.ndarray, kk: int) -> np.ndarray:
    out = np.empty((q.shape[0], kk), dtype=np.int64)
    for a in range(0, q.shape[0], SEARCH_ROWS):
        _, out[a:a + SEARCH_ROWS] = index.search(np.ascontiguousarray(q[a:a + SEARCH_ROWS], dtype=np.float32), kk)
    return out


def extend(x: np.ndarray, sample: np.ndarray, sample_labels: np.ndarray, n_neighbors: int = N_NEIGHBORS,
           seed: int = 0) -> np.ndarray:
    """Labels for every row of ``x``: the sample rows keep ``sample_labels``, every other row takes
    the most common label among its ``n_neighbors`` nearest sample rows (ties: the nearer label;
    ``UNASSIGNED`` neighbours do not vote, and a row with only such neighbours stays unassigned)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.full(x.shape[0], UNASSIGNED, dtype=np.int64)
    out[sample] = sample_labels
    rest = np.setdiff1d(np.arange(x.shape[0]), sample)
    if len(rest) == 0:
        return out
    index = _index(x[sample], seed)
    kk = min(n_neighbors, len(sample))
    k = int(sample_labels.max()) + 1 if (sample_labels >= 0).any() else 0
    for a in range(0, len(rest), SEARCH_ROWS):  # the votes of one search call's rows at a time
        rows = rest[a:a + SEARCH_ROWS]
        nb = _search(index, x[rows], kk)
        lab = np.where(nb >= 0, sample_labels[np.clip(nb, 0, None)], UNASSIGNED)
        votes = np.zeros((len(rows), k + 1), dtype=np.float32)  # last column: no vote
        weight = 1.0 + 1e-3 * (kk - np.arange(kk, dtype=np.float32))  # a tie goes to the nearer neighbour
        np.add.at(votes, (np.repeat(np.arange(len(rows)), kk), np.where(lab >= 0, lab, k).ravel()),
                  np.tile(weight, len(rows)))
        votes[:, k] = 0
        best = votes.argmax(axis=1)
        out[rows] = np.where(votes.max(axis=1) > 0, best, UNASSIGNED)
    return out


def knn(x: np.ndarray, n_neighbors: int, seed: int = 0) -> np.ndarray:
    """Indices (n, n_neighbors) of each item's nearest other items (euclidean), with faiss.

    Exact (``IndexFlatL2``) up to ``EXACT_MAX`` items. Above, ``IndexIVFFlat`` with about sqrt(n)
    lists trained on a seeded sample of 64 points per list, probing 8 lists per query: each query
    scans ~8 sqrt(n) items instead of n, which at 1M x 128 is minutes instead of hours on 2 cores,
    and a neighbour graph for clustering tolerates the few missed neighbours an IVF search has.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[0]
    kk = min(n_neighbors + 1, n)
    out = _search(_index(x, seed), x, kk)
    rows = np.arange(n)[:, None]
    # drop the item itself (first hit, unless a duplicate came first); else drop the farthest hit
    is_self = out == rows
    keep = ~is_self
    keep[~is_self.any(axis=1), -1] = False
    nb = out[keep].reshape(n, kk - 1)
    return nb


def knn_graph(x: np.ndarray, n_neighbors: int = N_NEIGHBORS, seed: int = 0) -> sp.csr_matrix:
    """The symmetric affinity ``(A + A.T) / 2`` of the kNN relation A (float32 CSR, zero diagonal)."""
    n = x.shape[0]
    if n < 3:
        raise ConfigError(f"a neighbour graph needs at least 3 items with latents (got {n}).")
    nb = knn(x, min(n_neighbors, n - 1), seed)
    valid = nb >= 0  # an IVF search can return fewer than k hits (-1)
    rows = np.repeat(np.arange(n), nb.shape[1])[valid.ravel()]
    a = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, nb.ravel()[valid.ravel()])), shape=(n, n))
    a.data[:] = 1.0  # a repeated hit counts once
    g = ((a + a.T) * 0.5).tocsr()
    g.setdiag(0)
    g.eliminate_zeros()
    return g


def _small_to_unassigned(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Communities below ``min_size`` become ``UNASSIGNED``; the rest renumbered 0.. by first item."""
    sizes = np.bincount(labels)
    big = sizes >= min_size
    _, first = np.unique(labels, return_index=True)
    order = [c for c in np.argsort(first, kind="stable") if big[c]]
    remap = np.full(len(sizes), UNASSIGNED, dtype=np.int64)
    remap[np.asarray(order, dtype=np.int64)] = np.arange(len(order))
    return remap[labels]


def leiden(graph: sp.spmatrix, resolution: float = DEFAULT_RESOLUTION, seed: int = 0,
           min_size: int = MIN_SIZE) -> GraphClusters:
    """Leiden communities of a symmetric weighted graph (see the module docstring)."""
    import igraph as ig
    import leidenalg

    resolution = check_resolution(resolution)
    n = graph.shape[0]
    upper = sp.triu(graph, k=1).tocoo()
    g = ig.Graph(n=n, edges=np.column_stack([upper.row, upper.col]).astype(np.int64), directed=False)
    part = leidenalg.find_partition(g, leidenalg.RBConfigurationVertexPartition, weights=upper.data.astype(np.float64),
                                    resolution_parameter=resolution, seed=int(seed) % (2**31 - 1))
    labels = _small_to_unassigned(np.asarray(part.membership, dtype=np.int64), min_size)
    k = int(labels.max()) + 1 if (labels >= 0).any() else 0
    n_un = int((labels == UNASSIGNED).sum())
    if k < 2:
        what = "one cluster" if k == 1 else f"communities of fewer than {min_size} items only"
        hint = (f"raise the resolution (for example to {2 * resolution:g})" if k == 1
                else f"lower the resolution (for example to {resolution / 2:g})")
        raise ConfigError(f"Leiden at resolution {resolution:g} finds {what} among {n} items; {hint} or give a fixed k.")
    return GraphClusters(labels, k, "leiden", resolution, n_un)


def check_k(k: int, n: int) -> int:
    if not 2 <= k <= n:
        raise ConfigError(f"k={k} is out of range for {n} items with latents; choose k between 2 and {n}.")
    return k


def spectral_embedding(graph: sp.spmatrix, n_components: int, seed: int = 0) -> np.ndarray:
    """The first ``n_components`` eigenvectors of the normalised graph Laplacian, scaled by D^-1/2.

    The same embedding as scikit-learn's ``spectral_embedding`` (normalised Laplacian, no first
    vector dropped, deterministic sign), but found as the largest eigenvalues of D^-1/2 W D^-1/2 by
    plain Lanczos from a seeded start, on the graph regularised as Qin & Rohe (2013) do (tau, ``TAU`` times the
    mean degree, spread evenly over all pairs, applied without forming the dense matrix). Why:
    scikit-learn's shift-invert ARPACK factorises the Laplacian, which took 20 s per k on the demo's
    4,200-item test split; unregularised Lanczos finds one vector per repeated eigenvalue, and a graph
    of c separate parts has its top eigenvalue c times, so it merged separate clusters (LOBPCG, a
    block method, found them but took a minute). Computed once for the largest k of a grid; a smaller
    k uses its leading columns, as a fresh embedding would.
    """
    from scipy.sparse.linalg import LinearOperator, eigsh

    n = graph.shape[0]
    w = graph.astype(np.float64).tocsr()
    deg = np.asarray(w.sum(axis=1)).ravel()
    tau = TAU * float(deg.mean())
    inv = 1.0 / np.sqrt(deg + tau)

    def matvec(v: np.ndarray) -> np.ndarray:
        u = inv * v.ravel()
        return inv * (w @ u + tau / n * u.sum())

    op = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    m = min(n_components, n - 1)
    v0 = np.random.RandomState(seed).uniform(-1, 1, n)
    vals, vecs = eigsh(op, k=m, which="LA", v0=v0, tol=1e-6, maxiter=max(1000, 20 * n))
    vecs = vecs[:, np.argsort(-vals)] * inv[:, None]
    signs = np.sign(vecs[np.abs(vecs).argmax(axis=0), np.arange(m)])
    return np.ascontiguousarray(vecs * signs[None, :], dtype=np.float64)


def spectral_from_embedding(emb: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Labels from the leading k columns of a spectral embedding: the grid's KMeans with 10 seeded
    starts (as scikit-learn's ``SpectralClustering(assign_labels='kmeans')``, same ARI on ``mfeat``)."""
    from mmae_core.evaluation.evaluate import kmeans_labels

    check_k(k, emb.shape[0])
    return kmeans_labels(np.ascontiguousarray(emb[:, :k], dtype=np.float32), k, 10, seed).astype(np.int64)


def spectral(graph: sp.spmatrix, k: int, seed: int = 0) -> np.ndarray:
    """Spectral clustering of a precomputed sparse affinity into ``k`` clusters (labels 0..k-1)."""
    check_k(k, graph.shape[0])
    return spectral_from_embedding(spectral_embedding(graph, k, seed), k, seed)


def graph_labels(x: np.ndarray, method: str, k: int | str, resolution: float = DEFAULT_RESOLUTION, seed: int = 0,
                 n_neighbors: int = N_NEIGHBORS, kmeans: "object | None" = None,
                 graph: sp.spmatrix | None = None) -> GraphClusters:
    """Cluster the rows of ``x`` by ``method`` at ``k`` (a number, or ``"auto"``: found by Leiden).

    ``kmeans(x, k, seed) -> labels`` is the caller's KMeans (the evaluation grid's, or the scalable
    one on a large archive); ``graph`` a kNN graph already built for ``x``. Above
    ``GRAPH_SAMPLE_MAX`` rows a graph method clusters a seeded sample and ``extend``s its labels.
    """
    method, k = check_setting(method, k)
    n = x.shape[0]
    if k != AUTO:
        check_k(int(k), n)
    if graph is None and n > GRAPH_SAMPLE_MAX and (method != "kmeans" or k == AUTO):
        sample = np.sort(np.random.RandomState(seed).permutation(n)[:GRAPH_SAMPLE_MAX])
        if method == "kmeans":  # k found on the sample; every item is then cut by the caller's KMeans
            found = graph_labels(x[sample], "leiden", AUTO, resolution, seed, n_neighbors)
            if kmeans is None:
                raise ConfigError("no KMeans given for the kmeans clustering.")
            return GraphClusters(np.asarray(kmeans(x, found.k, seed), dtype=np.int64), found.k, found.k_found_by,
                                 found.resolution, 0)
        found = graph_labels(x[sample], method, k, resolution, seed, n_neighbors, kmeans)
        labels = extend(x, sample, found.labels, n_neighbors, seed)
        return GraphClusters(labels, found.k, found.k_found_by, found.resolution, int((labels == UNASSIGNED).sum()))
    need_graph = method != "kmeans" or k == AUTO
    if need_graph and graph is None:
        graph = knn_graph(x, n_neighbors, seed)
    found: GraphClusters | None = None
    if k == AUTO:
        found = leiden(graph, resolution, seed)  # type: ignore[arg-type]
        if method == "leiden":
            return found
        k = found.k
    if method == "spectral":
        labels = spectral(graph, int(k), seed)  # type: ignore[arg-type]
    else:
        if kmeans is None:
            raise ConfigError("no KMeans given for the kmeans clustering.")  # a caller's bug, stated plainly
        labels = np.asarray(kmeans(x, int(k), seed), dtype=np.int64)
    by = "given" if found is None else found.k_found_by
    return GraphClusters(labels, int(k), by, None if found is None else found.resolution, 0)
