"""Cross-modal search over stored latents, and how well it works.

A curator's question "show me the items that sound like this one" is a nearest-neighbour query of
one modality's latent against another modality's latents (or the fused ones). This module is that
query and its measurement, in plain numpy, so the CLI, the Search page and the benchmarks rank the
same way.

Choices:

* Rows of NaN are items that lack the modality: they are never returned as results and never asked
  as queries, so a missing modality cannot look like a perfect (or a terrible) match.
* Cosine similarity is the default: MMAE latents vary in norm with how much of an item's signal the
  encoder saw, and ranking by angle ignores that. Euclidean is offered for comparison.
* Class precision@k and class mAP leave the query item out of its own ranking (its other-modality
  latent is the easiest match there is and would inflate class metrics); the instance metrics are
  exactly about finding that latent: Recall@1/5/10 and the median rank of the same item's latent.
* ``nearest`` breaks ties by target position (a stable sort), so results never flicker between
  reruns; the metrics count a tie against the query (the rank of an item is the number of targets
  scoring at least as high).
* Scores are chunked over queries (``_CHUNK`` rows at a time) so a 29k x 29k evaluation never holds
  the full similarity matrix.

``load_query_vector`` and ``encode_query`` serve an uploaded query vector (``--vector FILE.npy``):
the first checks the file without unpickling anything, the second encodes it with the model's own
standardization (it imports torch lazily; the rest of this module needs numpy alone).
"""
from __future__ import annotations

import io
from typing import Literal

import numpy as np
import pandas as pd

from mmae_core.errors import DataError

Metric = Literal["cosine", "euclidean"]
METRICS: tuple[str, ...] = ("cosine", "euclidean")
FUSED = "fused"
RECALL_AT: tuple[int, ...] = (1, 5, 10)
_CHUNK = 1024


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise DataError(f"'{metric}' is not a search metric; choose cosine or euclidean.")
    return metric


def _present(x: np.ndarray) -> np.ndarray:
    return np.isfinite(x).all(axis=1)


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _scores(q: np.ndarray, t: np.ndarray, metric: str) -> np.ndarray:
    """Similarity (higher = nearer) of every query row to every target row ('dot': rows already unit)."""
    if metric == "dot":
        return q @ t.T
    if metric == "cosine":
        return _unit(q) @ _unit(t).T
    # -||q - t||^2 without forming the difference tensor
    d2 = (q * q).sum(axis=1)[:, None] - 2.0 * (q @ t.T) + (t * t).sum(axis=1)[None, :]
    return -np.maximum(d2, 0.0)


def nearest(query: np.ndarray, targets: np.ndarray, top: int = 10, metric: Metric = "cosine",
            exclude: np.ndarray | int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``top`` nearest target rows and their scores, nearest first.

    ``query`` is one vector (d,) or several (q, d); the result is then (top,) or (q, top). Scores are
    cosine similarities, or Euclidean distances for ``metric='euclidean'`` (smaller = nearer). Target
    rows with NaN (items lacking that modality) are skipped, so fewer than ``top`` rows come back when
    fewer targets are present. ``exclude``: target row(s) never to return (for one query).
    """
    _check_metric(metric)
    t = np.asarray(targets, dtype=np.float64)
    q = np.asarray(query, dtype=np.float64)
    single = q.ndim == 1
    q2 = q[None, :] if single else q
    if t.ndim != 2 or q2.ndim != 2:
        raise DataError(f"search needs a query vector and a 2-D target matrix, got shapes {q.shape} and {t.shape}.")
    if q2.shape[1] != t.shape[1]:
        raise DataError(
            f"the query has {q2.shape[1]} dimensions but the targets have {t.shape[1]}; use latents of the same model."
        )
    if not np.isfinite(q2).all():
        raise DataError("the query vector has missing (NaN) or infinite values; pick an item that has this modality.")
    ok = np.flatnonzero(_present(t))
    if exclude is not None:
        ok = np.setdiff1d(ok, np.atleast_1d(np.asarray(exclude, dtype=np.int64)), assume_unique=False)
    top = int(max(0, min(int(top), ok.size)))
    idx = np.empty((q2.shape[0], top), dtype=np.int64)
    out = np.empty((q2.shape[0], top), dtype=np.float64)
    tv = t[ok]
    for s in range(0, q2.shape[0], _CHUNK):
        sim = _scores(q2[s : s + _CHUNK], tv, metric)
        order = np.argsort(-sim, axis=1, kind="stable")[:, :top]
        idx[s : s + _CHUNK] = ok[order]
        best = np.take_along_axis(sim, order, axis=1)
        out[s : s + _CHUNK] = best if metric == "cosine" else np.sqrt(-best)
    if single:
        return idx[0], out[0]
    return idx, out


def _pair_metrics(q: np.ndarray, t: np.ndarray, labels: np.ndarray | None, k: int, metric: str) -> dict[str, float]:
    """Class and instance metrics of querying rows of ``q`` against rows of ``t`` (same item order)."""
    n = q.shape[0]
    qok, tok = _present(q), _present(t)
    lab = None if labels is None else np.asarray(labels, dtype=object)
    labelled = np.ones(n, dtype=bool) if lab is None else np.array(
        [v is not None and not (isinstance(v, float) and np.isnan(v)) and str(v) != "" for v in lab], dtype=bool
    )
    queries = np.flatnonzero(qok)
    targets = np.flatnonzero(tok)
    # float32 and unit rows once: a 4,200 x 4,200 pair costs one matmul per chunk, not a re-normalisation
    tv = (_unit(t[targets]) if metric == "cosine" else t[targets]).astype(np.float32)
    qv = (_unit(q) if metric == "cosine" else q).astype(np.float32)
    inner = "dot" if metric == "cosine" else metric
    codes = None
    if lab is not None:
        _, codes = np.unique(np.where(labelled, lab, "").astype(str), return_inverse=True)
    if codes is not None:
        tcodes = codes[targets]
        tlab = labelled[targets]
    p_at, aps, ranks = [], [], []
    pos_of = np.full(n, -1, dtype=np.int64)
    pos_of[targets] = np.arange(targets.size)
    for s in range(0, queries.size, _CHUNK):
        qi = queries[s : s + _CHUNK]
        sim = _scores(qv[qi], tv, inner)
        # instance: rank of the query item's own target latent (1 = best); ties count against it
        own = pos_of[qi]
        has_own = own >= 0
        if has_own.any():
            rows = np.flatnonzero(has_own)
            own_sim = sim[rows, own[rows]]
            ranks.extend((sim[rows] >= own_sim[:, None]).sum(axis=1).tolist())
        if codes is None:
            continue
        keep = labelled[qi]
        if not keep.any():
            continue
        qi_l = qi[keep]
        sim_l = sim[keep]
        self_pos = pos_of[qi_l]
        rows = np.flatnonzero(self_pos >= 0)
        sim_l[rows, self_pos[rows]] = -np.inf  # the query item itself is never a result for class metrics
        relevant = (tcodes[None, :] == codes[qi_l][:, None]) & tlab[None, :]
        relevant[rows, self_pos[rows]] = False
        n_valid = targets.size - (self_pos >= 0).astype(np.int64)
        # precision@k: the k best of each row (argpartition is linear; ties at the cut are rare)
        kk = min(k, targets.size)
        top = np.argpartition(-sim_l, kk - 1, axis=1)[:, :kk]
        hit = np.take_along_axis(relevant, top, axis=1) & np.isfinite(np.take_along_axis(sim_l, top, axis=1))
        denom = np.minimum(k, n_valid)
        ok_rows = denom > 0
        p_at.extend((hit[ok_rows].sum(axis=1) / denom[ok_rows]).tolist())
        # average precision: the i-th best relevant target sits at rank #(scores >= its score)
        ordered = np.sort(sim_l, axis=1)
        width = ordered.shape[1]
        for j in range(len(qi_l)):
            rs = sim_l[j, relevant[j]]
            if rs.size == 0:
                aps.append(float("nan"))
                continue
            rs = np.sort(rs)[::-1]
            rank = width - np.searchsorted(ordered[j], rs, side="left")
            aps.append(float(np.mean(np.arange(1, rs.size + 1) / rank)))
    out: dict[str, float] = {"queries": float(queries.size)}
    out[f"p_at_{k}"] = float(np.mean(p_at)) if p_at else float("nan")
    out["map"] = float(np.nanmean(aps)) if aps and np.isfinite(aps).any() else float("nan")
    r = np.asarray(ranks, dtype=np.float64)
    for at in RECALL_AT:
        out[f"r_at_{at}"] = float((r <= at).mean()) if r.size else float("nan")
    out["median_rank"] = float(np.median(r)) if r.size else float("nan")
    return out


def mean_of_present(views: dict[str, np.ndarray]) -> np.ndarray:
    """Per item, the mean of the views' rows it has (NaN where it has none)."""
    first = next(iter(views.values()))
    acc = np.zeros(first.shape, dtype=np.float32)
    cnt = np.zeros(first.shape[0], dtype=np.float32)
    for z in views.values():
        ok = ~np.isnan(z).all(axis=1)
        acc[ok] += z[ok]
        cnt += ok
    with np.errstate(invalid="ignore", divide="ignore"):
        return acc / cnt[:, None]


def retrieval_metrics(per_modality: dict[str, np.ndarray], labels: np.ndarray | None = None,
                      fused: np.ndarray | None = None, k: int = 10, metric: Metric = "cosine") -> pd.DataFrame:
    """One row per ordered (query, target) pair of modalities, plus fused -> each modality.

    Columns: query, target, metric, queries, p_at_{k} (class precision@k), map (class mAP), r_at_1,
    r_at_5, r_at_10 (instance recall: the same item's target latent within the first 1/5/10 results)
    and median_rank. Every array holds one row per item, in the same item order. Without labels the
    class metrics are NaN; the instance metrics need none.
    """
    _check_metric(metric)
    if int(k) < 1:
        raise DataError(f"k must be at least 1 for precision@k (got {k}).")
    k = int(k)
    names = list(per_modality)
    if not names:
        raise DataError("no per-modality latents were given; search needs at least two modalities' latents.")
    n = {m: np.asarray(x).shape[0] for m, x in per_modality.items()}
    if fused is not None:
        n[FUSED] = np.asarray(fused).shape[0]
    if labels is not None:
        n["labels"] = len(labels)
    if len(set(n.values())) > 1:
        raise DataError(
            "the latents and labels have different row counts (" + ", ".join(f"{a}: {b}" for a, b in n.items())
            + "); give one row per item of the same split."
        )
    arrays = {m: np.asarray(x, dtype=np.float64) for m, x in per_modality.items()}
    pairs = [(a, b) for a in names for b in names if a != b]
    if fused is not None:
        arrays[FUSED] = np.asarray(fused, dtype=np.float64)
        pairs += [(FUSED, b) for b in names]
    rows = []
    for a, b in pairs:
        rows.append({"query": a, "target": b, "metric": metric, **_pair_metrics(arrays[a], arrays[b], labels, k, metric)})
    cols = ["query", "target", "metric", "queries", f"p_at_{k}", "map", *[f"r_at_{at}" for at in RECALL_AT], "median_rank"]
    df = pd.DataFrame(rows, columns=cols)
    df["queries"] = df["queries"].astype(int)
    return df


# -- query vectors from files ---------------------------------------------------------------------
def load_query_vector(data: bytes, dim: int, modality: str, name: str = "the uploaded file") -> np.ndarray:
    """A (dim,) float32 query vector from ``.npy`` bytes, without unpickling anything.

    Accepts shape (dim,) or (1, dim); anything else, NaN/Inf, or a non-numeric array is refused with
    one sentence naming the file and what was expected.
    """
    head = bytes(data[:6])
    if head[:4] == b"PK\x03\x04":
        raise DataError(f"{name} is an .npz archive, not a single .npy array; save one query vector with numpy.save.")
    if head != b"\x93NUMPY":
        raise DataError(f"{name} is not a readable .npy file; save the query vector with numpy.save.")
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DataError(f"{name} holds Python objects, which are not loaded for safety; save a numeric array with numpy.save.") from None
        raise DataError(f"{name} is not a readable .npy file; save the query vector with numpy.save.") from None
    except (OSError, EOFError):
        raise DataError(f"{name} is not a readable .npy file; save the query vector with numpy.save.") from None
    if isinstance(arr, np.lib.npyio.NpzFile) or not isinstance(arr, np.ndarray):
        raise DataError(f"{name} is not a single .npy array; save one query vector with numpy.save.")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise DataError(f"{name} holds {arr.dtype} values, not numbers; save the {modality} feature vector as floats.")
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1 or arr.shape[0] != int(dim):
        raise DataError(
            f"{name} has shape {tuple(arr.shape)} but a {modality} query must be one vector of {int(dim)} values; "
            f"upload a {modality} feature vector of the model's dataset."
        )
    vec = arr.astype(np.float32)
    if not np.isfinite(vec).all():
        raise DataError(f"{name} contains NaN or infinite values; upload a complete {modality} feature vector.")
    return vec


def encode_query(tm: object, modality: str, vec: np.ndarray) -> np.ndarray:
    """The ``modality`` latent of a raw feature vector, standardized as the model was trained."""
    from mmae_core.model.train import encode  # torch only when a vector is actually encoded

    _, per = encode(tm, {modality: np.asarray(vec, dtype=np.float32)[None, :]})
    return per[modality][0]
