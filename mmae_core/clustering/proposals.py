"""Proposed tags: clusters of the latents, each with a size, a cohesion, a name and examples.

A curator walks through these on the Tags page. Choices made for them:

* Clustering (``method``): ``kmeans`` is the evaluation grid's KMeans (same seeding, same ``n_init``),
  so the proposal set at k is exactly the clustering whose metrics the Compare page shows for the
  MMAE at that k; from ``clustering.kmeans.LARGE_MIN`` items on it is faiss's k-means (an archive's
  train split). ``leiden`` and ``spectral`` cluster a kNN graph of the latents (``clustering.graph``);
  with ``k="auto"`` (the default) Leiden finds k. Items Leiden leaves in no community of
  ``clustering.graph.MIN_SIZE`` items form one last proposal named "unassigned" (never dropped).
* Clusters are numbered by size, largest first (ties: the one whose first item comes first), so the
  numbering does not depend on KMeans' arbitrary label order and the biggest tags come first.
* ``cohesion`` is the mean Silhouette of the cluster's items (how well they sit in their cluster
  rather than the next one; above ``metrics.SILHOUETTE_FULL_MAX`` items, of its items in a fixed
  seeded sample of that size, as the grid scores Silhouette, since the exact score is O(n^2)); ``purity`` the share of its labelled items carrying the majority label.
* ``representatives`` are the ``n_repr`` items nearest the centroid (ties by position): the items a
  curator should look at to judge the tag.
* Name: the majority existing label where the cluster has labelled items; else the (up to two) most
  distinctive words of its items' titles/captions by TF-IDF contrasting the cluster with the rest
  (``distinctive_words``), e.g. ``dog-puppy``; else ``cluster-NN``. Names are unique within a set: a repeat gets ``-2``, ``-3``... in cluster order.
* Items without a latent (a NaN row) are not clustered; their assignment is -1.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mmae_core.errors import ConfigError
from mmae_core.clustering.graph import AUTO, UNASSIGNED, UNASSIGNED_NAME, DEFAULT_RESOLUTION, default_method, graph_labels
from mmae_core.clustering.kmeans import kmeans_any
from mmae_core.evaluation.metrics import SILHOUETTE_FULL_MAX, label_mask, silhouette_samples_chunked

TABLE_COLUMNS: tuple[str, ...] = (
    "cluster", "size", "name", "name_source", "purity", "cohesion", "majority_label", "representatives",
)
_N_NAME_WORDS = 2
_TOKEN = r"(?u)\b[^\W\d_]{2,}\b"


@dataclass
class Proposals:
    """A proposal set: one row per cluster in ``table`` and the cluster of every item (-1: none)."""

    table: pd.DataFrame
    assignments: np.ndarray
    k: int  # clusters proposed, the "unassigned" proposal not counted
    seed: int
    k_found_by: str = "given"  # "leiden" when k was found by the method
    method: str = "kmeans"
    resolution: float | None = None
    n_unassigned: int = 0


def fallback_name(cluster: int) -> str:
    return f"cluster-{cluster:02d}"


def _renumber_by_size(raw: np.ndarray, k: int) -> np.ndarray:
    sizes = np.bincount(raw, minlength=k)
    first = np.full(k, len(raw))
    np.minimum.at(first, raw, np.arange(len(raw)))
    order = sorted(range(k), key=lambda c: (-sizes[c], first[c]))
    remap = np.empty(k, dtype=np.int64)
    remap[order] = np.arange(k)
    return remap[raw]


def distinctive_words(texts: list[str], assign: np.ndarray, k: int, n_words: int = _N_NAME_WORDS) -> list[list[str]]:
    """Per cluster, its most distinctive words: TF-IDF with the cluster contrasted against the rest.

    For a word w and cluster c, tf = p_c, the share of the cluster's items whose text contains w,
    and the inverse-frequency weight is log(p_c / p_rest), p_rest being the same share among all
    other items (both with add-one-half smoothing). The score tf * weight is high for a word most of
    the cluster uses and the rest does not (the class noun), zero for a word every cluster uses as
    often (a scene, "photo") and negative for one the cluster avoids. Plain corpus TF-IDF would still
    rank such ubiquitous words, and document-frequency IDF over cluster documents collapses to zero
    as soon as a few misassigned items spread a class word over many clusters. Words after the first
    are kept only if they score at least a quarter of the first, so a cluster with one clear word is
    named by that word alone. English stop words and tokens shorter than two letters or containing
    digits are ignored; ties go to the alphabetically first word.
    """
    from sklearn.feature_extraction.text import CountVectorizer

    assign = np.asarray(assign)
    if not any(t and t.strip() for t in texts):
        return [[] for _ in range(k)]
    try:
        cv = CountVectorizer(stop_words="english", token_pattern=_TOKEN, lowercase=True, binary=True)
        has = cv.fit_transform(texts).tocsc()
    except ValueError:  # nothing but stop words
        return [[] for _ in range(k)]
    import scipy.sparse as sp

    vocab = np.asarray(cv.get_feature_names_out())
    # sparse: a dense items x k one-hot was 0.8 GB at a million items and 100 clusters
    onehot = sp.csr_matrix((np.ones(len(assign)), (np.arange(len(assign)), assign)), shape=(len(assign), k))
    in_c = np.asarray((onehot.T @ has).todense(), dtype=np.float64)  # k x V: items of the cluster containing the word
    total = in_c.sum(axis=0)
    n_c = np.bincount(assign, minlength=k).astype(np.float64)[:, None]
    n_rest = len(assign) - n_c
    p_c = (in_c + 0.5) / (n_c + 1.0)
    p_rest = (total[None, :] - in_c + 0.5) / (n_rest + 1.0)
    score = np.where(in_c > 0, p_c * np.log(p_c / p_rest), 0.0)
    out: list[list[str]] = []
    for c in range(k):
        order = np.lexsort((vocab, -score[c]))  # best score first, ties alphabetical
        top = score[c, order[0]]
        words = [str(vocab[i]) for i in order[:n_words] if score[c, i] > 0 and score[c, i] >= 0.25 * top]
        out.append(words)
    return out


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    taken = set(names)
    out: list[str] = []
    for name in names:
        if name not in seen:
            seen[name] = 1
            out.append(name)
            continue
        i = seen[name] + 1
        while f"{name}-{i}" in taken or f"{name}-{i}" in out:
            i += 1
        seen[name] = i
        out.append(f"{name}-{i}")
    return out


def _slug(words: list[str]) -> str:
    return "-".join(re.sub(r"\s+", "", w) for w in words)


def _cohesion(x: np.ndarray, assign: np.ndarray, seed: int) -> np.ndarray:
    """Per-item Silhouette (NaN outside the sample on a large set; see the module docstring)."""
    n = len(assign)
    if n <= SILHOUETTE_FULL_MAX:
        return silhouette_samples_chunked(x, assign)
    out = np.full(n, np.nan)
    pick = np.sort(np.random.RandomState(seed).permutation(n)[:SILHOUETTE_FULL_MAX])
    out[pick] = silhouette_samples_chunked(x[pick], assign[pick])
    return out


def propose(
    latents: np.ndarray,
    item_ids: np.ndarray,
    k: int | str = AUTO,
    labels: np.ndarray | None = None,
    texts: list[str] | None = None,
    seed: int = 42,
    n_repr: int = 5,
    method: str | None = None,
    resolution: float = DEFAULT_RESOLUTION,
) -> Proposals:
    """Cluster ``latents`` into ``k`` proposed tags, ``k="auto"``: as many as the method finds.

    ``method`` None is ``default_method(k)``: Leiden for auto, KMeans for a given k (the paper's).
    See the module docstring for every choice."""
    x = np.asarray(latents, dtype=np.float32)
    if x.ndim != 2:
        raise ConfigError(f"latents must be a 2-D array (items x dimensions), got {x.ndim} dimensions.")
    n = x.shape[0]
    ids = np.asarray(item_ids, dtype=object)
    if len(ids) != n:
        raise ConfigError(f"there are {len(ids)} item ids for {n} latents; give one id per latent row.")
    if labels is not None and len(labels) != n:
        raise ConfigError(f"there are {len(labels)} labels for {n} items; give one label per item or none.")
    if texts is not None and len(texts) != n:
        raise ConfigError(f"there are {len(texts)} titles/captions for {n} items; give one per item or none.")
    ok = np.isfinite(x).all(axis=1)
    if n_repr < 1:
        raise ConfigError(f"the number of representatives must be at least 1 (got {n_repr}).")
    rows = np.flatnonzero(ok)
    xv = np.ascontiguousarray(x) if ok.all() else np.ascontiguousarray(x[rows])  # (no copy of 0.5 GB at 1M when all are there)
    method = method or default_method(k)
    found = graph_labels(xv, method, k, resolution=resolution, seed=seed, kmeans=kmeans_any)
    k = found.k
    raw = found.labels
    n_un = int((raw == UNASSIGNED).sum())
    assign_v = np.full(len(raw), k, dtype=np.int64)  # the "unassigned" items: a last proposal after the k clusters
    kept = raw != UNASSIGNED
    assign_v[kept] = _renumber_by_size(raw[kept].astype(np.int64), k)
    sil = _cohesion(xv, assign_v, seed)

    lab_ok = label_mask(labels)
    n_groups = k + (1 if n_un else 0)
    words: list[list[str]] = [[] for _ in range(n_groups)]
    if texts is not None:
        words = distinctive_words([str(texts[i]) if texts[i] is not None else "" for i in rows], assign_v, n_groups)

    order = np.argsort(assign_v, kind="stable")
    bounds = np.searchsorted(assign_v[order], np.arange(n_groups + 1))
    recs = []
    for c in range(n_groups):
        members = order[bounds[c]:bounds[c + 1]]
        centroid = xv[members].mean(axis=0)
        dist = np.sqrt(((xv[members] - centroid) ** 2).sum(axis=1))
        nearest = members[np.lexsort((members, dist))[:n_repr]]
        majority, purity = None, float("nan")
        if lab_ok is not None:
            lab_members = [str(labels[rows[i]]) for i in members if lab_ok[rows[i]]]  # type: ignore[index]
            if lab_members:
                vals, cnts = np.unique(np.asarray(lab_members, dtype=object).astype(str), return_counts=True)
                best = int(np.argmax(cnts))  # np.unique sorts, so a tie goes to the alphabetically first
                majority, purity = str(vals[best]), float(cnts[best] / len(lab_members))
        if c == k:
            name, source = UNASSIGNED_NAME, "unassigned"
        elif majority is not None:
            name, source = majority, "label"
        elif words[c]:
            name, source = _slug(words[c]), "text"
        else:
            name, source = fallback_name(c), "fallback"
        recs.append(
            {
                "cluster": c,
                "size": int(len(members)),
                "name": name,
                "name_source": source,
                "purity": purity,
                "cohesion": float(np.nanmean(sil[members])) if np.isfinite(sil[members]).any() else float("nan"),
                "majority_label": majority,
                "representatives": [str(ids[rows[i]]) for i in nearest],
            }
        )
    table = pd.DataFrame(recs, columns=list(TABLE_COLUMNS))
    table["name"] = _unique(table["name"].tolist())
    assignments = np.full(n, -1, dtype=np.int64)
    assignments[rows] = assign_v
    return Proposals(table=table, assignments=assignments, k=k, seed=seed, k_found_by=found.k_found_by, method=method,
                     resolution=found.resolution, n_unassigned=n_un)
