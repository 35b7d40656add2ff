"""The k-grid comparison: unimodal PCA, fused PCA, MCCA and the MMAE, one tidy table.

Protocol, as in the paper: every representation is fitted on the train split (PCA, MCCA), the split
being evaluated (``cfg.split``, the test split by default) is projected, and KMeans runs on that
projection for each k (``algorithm='lloyd'``, ``n_init=cfg.n_init``, ``random_state=cfg.seed``).

Metrics per (method, k): Silhouette of the clustering *on the representation that was clustered*;
ARI and NMI against the labels (NaN, with the note "no labels in this split, so ARI/NMI cannot be
computed", when there are none); Calinski-Harabasz and Davies-Bouldin always (they are O(n d) and tell
an analyst something even with labels). Silhouette uses every item when the split has at most
``metrics.SILHOUETTE_FULL_MAX`` (10,000) of them, else a fixed sample of that size drawn with
``cfg.seed`` (scikit-learn's ``sample_size`` semantics), so the number never depends on the run.

Items lacking a modality are left out of that modality's unimodal rows (they have no coordinates in
it; the row's ``n_items`` and ``note`` say how many); fused PCA imputes the mean, MCCA averages the
views an item has, and the MMAE already encodes from what is present.

Why it is fast (full LUMA-sized grid, 6 methods x 5 k on 4,200 items, a few seconds on 2 cores):
the train moments are computed once and shared by all linear fits (see ``baselines``); each
representation is fitted and projected once; each Silhouette reuses one distance matrix per
representation for all k; and the independent pieces (fits, KMeans runs) run on worker threads with
BLAS and OpenMP pinned to one thread each, which is both faster than nested library threading and
robust on a busy machine. Every random choice is seeded, so two runs give identical tables.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans

from mmae_core.evaluation.baselines import (
    FusedPCA,
    TrainMoments,
    UnimodalPCA,
    blas_single_thread,
    parallel_map,
    threadpool_controller,
    unimodal_dim,
)
from mmae_core.config import EvalConfig
from mmae_core.errors import ConfigError
from mmae_core.clustering.graph import (
    AUTO,
    DEFAULT_RESOLUTION,
    N_NEIGHBORS,
    check_method,
    check_resolution,
    check_setting,
    knn_graph,
    leiden,
    parse_k_value,
    spectral_embedding,
    spectral_from_embedding,
)
from mmae_core.clustering.kmeans import EVAL_SAMPLE
from mmae_core.model.standardize import Standardizer
from mmae_core.log import Log, silent
from mmae_core.evaluation.mcca import MCCA
from mmae_core.evaluation.metrics import (
    NO_LABELS_NOTE,
    SILHOUETTE_FULL_MAX,
    encode_labels,
    external_scores_encoded,
    internal_scores,
    pairwise,
    silhouette_from_distances,
)

COLUMNS: tuple[str, ...] = (
    "method",
    "k",
    "split",
    "n_items",
    "silhouette",
    "ari",
    "nmi",
    "calinski_harabasz",
    "davies_bouldin",
    "note",
    "cluster",
    "k_found_by",
    "resolution",
    "sample_size",
)
FUSED, MCCA_NAME, MMAE, SPECTRAL_PCA = "fused_pca", "mcca", "mmae", "spectral_pca"
SPECTRAL_PCA_DIM = 50
SPECTRAL_PCA_NEIGHBORS = 10  # the baseline as measured (.84 ARI on mfeat; .849 with 15 neighbours)


@dataclass
class _Rep:
    """One representation of the evaluated split: the rows that could be clustered and their coordinates."""

    method: str
    z: np.ndarray  # (n_valid, dim) float32
    rows: np.ndarray  # indices of those items in the split
    note: str
    seconds: float


def throttled(log: Log, message: str, every: float = 2.0) -> Callable[[int, int], None]:
    """A ``parallel_map`` progress callback that logs ``message`` at most every ``every`` seconds
    (and not for the last item: the caller says when the phase is done). Why: more KMeans starts
    or an archive-size split make the clustering phase a minute of silence otherwise."""
    last = [time.perf_counter()]

    def on_done(done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - last[0] >= every:
            last[0] = now
            log(message.format(done=done, total=total))

    return on_done


def kmeans_plusplus(x: np.ndarray, k: int, rs: np.random.RandomState) -> np.ndarray:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii, with scikit-learn's 2 + ln k local trials).

    Ours rather than scikit-learn's because on float32 data scikit-learn upcasts every distance
    block to float64 in small chunks, which made seeding cost more than the Lloyd iterations
    themselves (measured: 0.9 of 1.4 s for k=60 on 4,200 x 50). Here each step is one small GEMM.
    """
    n = x.shape[0]
    n_local = 2 + int(np.log(k))
    xt = np.ascontiguousarray(x.T)
    sq = np.einsum("ij,ij->i", x, x)
    idx = np.empty(k, dtype=np.int64)
    idx[0] = rs.randint(n)
    closest = np.maximum(sq + sq[idx[0]] - 2.0 * (x[idx[0]] @ xt), 0.0).astype(np.float64)
    pot = closest.sum()
    for c in range(1, k):
        cum = np.cumsum(closest)
        cand = np.minimum(np.searchsorted(cum, rs.uniform(size=n_local) * pot), n - 1)
        d = x[cand] @ xt  # (n_local, n) squared distances, computed in place
        d *= -2.0
        d += sq[None, :]
        d += sq[cand, None]
        np.maximum(d, 0.0, out=d)
        np.minimum(d, closest[None, :], out=d)
        pots = d.sum(axis=1, dtype=np.float64)
        best = int(np.argmin(pots))
        closest, pot, idx[c] = d[best].astype(np.float64), pots[best], cand[best]
    return x[idx].copy()


def kmeans_run(x: np.ndarray, k: int, seed: int) -> tuple[float, np.ndarray]:
    """One Lloyd KMeans from our k-means++ seeding: (inertia, labels). One OpenMP thread."""
    with threadpool_controller().limit(limits=1, user_api="openmp"):
        centers = kmeans_plusplus(x, k, np.random.RandomState(seed))
        km = KMeans(n_clusters=k, init=centers, n_init=1, algorithm="lloyd", random_state=seed).fit(x)
    return float(km.inertia_), km.labels_.astype(np.int32)


def init_seeds(seed: int, n_init: int) -> list[int]:
    """The seeds of the ``n_init`` KMeans starts, derived from one seed."""
    return [int(s) for s in np.random.RandomState(seed).randint(0, 2**31 - 1, size=max(1, n_init))]


def best_of(runs: list[tuple[float, np.ndarray]]) -> np.ndarray:
    """Labels of the run with the lowest inertia (the first on a tie), as KMeans(n_init) picks."""
    return min(enumerate(runs), key=lambda t: (t[1][0], t[0]))[1][1]


def kmeans_labels(x: np.ndarray, k: int, n_init: int, seed: int) -> np.ndarray:
    """KMeans with ``n_init`` seeded starts, the starts run on worker threads."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return best_of(parallel_map(lambda s: kmeans_run(x, k, s), init_seeds(seed, n_init)))


def stratified_sample(codes: np.ndarray | None, n: int, size: int, seed: int) -> np.ndarray:
    """Sorted indices of ``size`` of ``n`` items, each label (unlabelled items: one more group) drawn in
    proportion to its share, largest remainders first, seeded. Why stratified: a plain random sample
    of 20,000 from an archive can lose a rare class entirely, and ARI/NMI would then score a split
    that is not the archive's."""
    rs = np.random.RandomState(seed)
    if codes is None:
        return np.sort(rs.permutation(n)[:size])
    groups, inv = np.unique(codes, return_inverse=True)
    counts = np.bincount(inv)
    quota = counts * (size / n)
    take = np.floor(quota).astype(np.int64)
    rest = size - int(take.sum())
    order = np.lexsort((np.arange(len(groups)), -(quota - take)))
    take[order[:rest]] += 1
    out = [rs.permutation(np.flatnonzero(inv == g))[:take[g]] for g in range(len(groups))]
    return np.sort(np.concatenate(out))


# The most train rows the baselines are fitted on when the features are given as stored (``raw``): a
# million-item archive's train split is 7 GB, and PCA/MCCA moments of 1,842 dimensions are settled
# long before 50,000 rows (a d x d covariance from 27 rows per dimension). Below it, every row.
FIT_SAMPLE = 50_000


def fit_rows(n: int, seed: int) -> slice | np.ndarray:
    """Every train row, or ``FIT_SAMPLE`` of them drawn with ``seed`` (sorted, so a file on disk is
    read front to back)."""
    if n <= FIT_SAMPLE:
        return slice(0, n)
    return np.sort(np.random.RandomState(seed).permutation(n)[:FIT_SAMPLE])


def _check_inputs(
    train: dict[str, np.ndarray], evalx: dict[str, np.ndarray], labels: np.ndarray | None, latents: np.ndarray | None
) -> int:
    if not train:
        raise ConfigError("there are no modalities to evaluate; load a dataset with at least one feature array.")
    missing = [m for m in train if m not in evalx]
    if missing:
        raise ConfigError(f"the evaluated split lacks {', '.join(missing)}; every split needs the train split's modalities.")
    n = int(evalx[next(iter(train))].shape[0])
    for m in train:
        if evalx[m].shape[0] != n:
            raise ConfigError(f"{m} has {evalx[m].shape[0]} rows in the evaluated split but the others have {n}; align them.")
        if evalx[m].shape[1] != train[m].shape[1]:
            raise ConfigError(f"{m} has dimension {evalx[m].shape[1]} in the evaluated split but {train[m].shape[1]} in train; use the same features.")
    if labels is not None and len(labels) != n:
        raise ConfigError(f"there are {len(labels)} labels for {n} items; give one label per item or none.")
    if latents is not None and np.asarray(latents).shape[0] != n:
        raise ConfigError(f"the MMAE latents have {np.asarray(latents).shape[0]} rows for {n} items; encode the same split.")
    return n


def _fit_rep(method: str, est: object, train: dict[str, np.ndarray], evalx: dict[str, np.ndarray], mom: TrainMoments) -> _Rep:
    t0 = time.perf_counter()
    est.fit(train, moments=mom)  # type: ignore[attr-defined]
    z = est.transform(evalx)  # type: ignore[attr-defined]
    ok = ~np.isnan(z).any(axis=1)
    note = ""
    if not ok.all():
        note = f"{int((~ok).sum())} items lack {method} and were left out"
    return _Rep(method, np.ascontiguousarray(z[ok], dtype=np.float32), np.flatnonzero(ok), note, time.perf_counter() - t0)


def _spectral_rep(reps: list[_Rep], cfg: EvalConfig, train: dict[str, np.ndarray], evalx: dict[str, np.ndarray],
                  names: list[str]) -> _Rep:
    """The ``spectral_pca`` baseline's vectors: the z-scored concatenated views, PCA to 50 dims. That is
    fused PCA with no weights at 50 dims, so its vectors are reused when fused PCA is exactly that."""
    fused = next(r for r in reps if r.method == FUSED)
    if not cfg.fused_weights and cfg.fused_dim == SPECTRAL_PCA_DIM:
        return _Rep(SPECTRAL_PCA, fused.z, fused.rows, fused.note, 0.0)
    return _fit_rep(SPECTRAL_PCA, FusedPCA(n_components=SPECTRAL_PCA_DIM, modalities=tuple(names)), train, evalx,
                    TrainMoments.of(train))


def evaluate_grid(
    train: dict[str, np.ndarray],
    evalx: dict[str, np.ndarray],
    labels: np.ndarray | None,
    mmae_latents: np.ndarray | None,
    cfg: EvalConfig,
    on_progress: Log | None = None,
    cluster: str = "kmeans",
    resolution: float = DEFAULT_RESOLUTION,
    sample_size: int | None = EVAL_SAMPLE,
    raw: bool = False,
) -> pd.DataFrame:
    """Metrics for every method and k as one tidy table (columns ``COLUMNS``).

    ``train`` and ``evalx`` are modality -> array dicts standardized with the train statistics (an
    all-NaN row is a missing modality). With ``raw`` they are the features as stored, in memory or
    as ``NpyWindows`` on disk: only the rows the evaluation uses are read (the train rows the
    baselines are fitted on, at most ``FIT_SAMPLE``, and the evaluated sample), and they are
    standardized with statistics fitted on those train rows; ``labels`` are the evaluated split's labels or None;
    ``mmae_latents`` the MMAE's fused latents of the evaluated split, or None to leave the MMAE out.
    Methods: each modality's name (unimodal PCA), ``fused_pca`` and ``mcca`` (with two or more
    modalities), ``spectral_pca`` (with two or more: spectral clustering on a 10-NN graph of the z-scored
    concatenated views reduced to 50 dims by PCA, whatever ``cluster`` says), ``mmae``.

    ``cfg.k_grid`` may hold ``"auto"``: each representation's k is then found by Leiden on its kNN
    graph at ``resolution``, and the row's ``k`` is the k found (``k_found_by`` "leiden"). ``cluster``
    (kmeans, leiden, spectral) is how every representation but ``spectral_pca`` is cut; leiden needs
    k "auto". A split of more than ``sample_size`` items is evaluated on a stratified sample of that
    size (column ``sample_size``; None: every item). ``df.attrs`` holds ``note`` (why ARI/NMI are missing, if they are),
    ``timings`` (seconds of work per method, summed over threads), ``seconds`` (wall time) and
    ``silhouette`` ("full" or the sample size).
    """
    log = on_progress or silent
    t_start = time.perf_counter()
    n = _check_inputs(train, evalx, labels, mmae_latents)
    cluster = check_method(cluster)
    resolution = check_resolution(resolution)
    grid = tuple(dict.fromkeys(parse_k_value(k) for k in cfg.k_grid))  # a repeated k is evaluated once
    k_grid = tuple(int(k) for k in grid if k != AUTO)
    has_auto = AUTO in grid
    if k_grid or not has_auto:
        replace(cfg, k_grid=k_grid).checked(n)
    for k in k_grid[:1]:
        check_setting(cluster, k)
    codes = encode_labels(labels)
    sampled: int | None = None
    if sample_size is not None and n > sample_size:
        if sample_size < 2 or (k_grid and max(k_grid) > sample_size):
            raise ConfigError(f"the evaluation sample of {sample_size} items is smaller than k; give a larger sample size.")
        pick = stratified_sample(codes, n, sample_size, cfg.seed)
        log(f"evaluating a stratified sample of {sample_size:,} of the {n:,} {cfg.split} items")
        evalx = {m: v[pick] for m, v in evalx.items()}  # only these rows are read from a file on disk
        codes = None if codes is None else codes[pick]
        mmae_latents = None if mmae_latents is None else np.asarray(mmae_latents)[pick]
        sampled = n = len(pick)
    if raw:
        fit = fit_rows(len(next(iter(train.values()))), cfg.seed)
        train = {m: x[fit] for m, x in train.items()}
        std = Standardizer.fit(train)
        train, evalx = std.transform(train), std.transform({m: np.asarray(v) for m, v in evalx.items()})
    global_note = NO_LABELS_NOTE if codes is None else ""
    names = list(train)

    specs: list[tuple[str, object]] = [
        (m, UnimodalPCA(m, unimodal_dim(m, cfg.unimodal_dims, cfg.default_unimodal_dim))) for m in names
    ]
    if len(names) >= 2:
        specs.append((FUSED, FusedPCA(weights=cfg.fused_weights, n_components=cfg.fused_dim, modalities=tuple(names))))
        specs.append((MCCA_NAME, MCCA(n_components=cfg.mcca_dim, reg=cfg.mcca_reg, modalities=tuple(names))))

    reps: list[_Rep] = []
    with blas_single_thread():
        if specs:
            t0 = time.perf_counter()
            log(f"fitting {len(specs)} baselines on {next(iter(train.values())).shape[0]:,} train items")
            mom = TrainMoments.of(train)
            if len(names) >= 2:
                mom.compute_all()
            else:
                mom.gram(names[0], names[0])
            t_mom = time.perf_counter() - t0
            fitted = parallel_map(lambda s: _fit_rep(s[0], s[1], train, evalx, mom), specs)
            share = t_mom / len(fitted)  # the shared moments, split evenly for the timing table
            for r in fitted:
                r.seconds += share
            reps.extend(fitted)
            del mom
            if len(names) >= 2:
                reps.append(_spectral_rep(reps, cfg, train, evalx, names))
        if mmae_latents is not None:
            z = np.asarray(mmae_latents, dtype=np.float32)
            ok = ~np.isnan(z).any(axis=1)
            note = "" if ok.all() else f"{int((~ok).sum())} items have no MMAE latent and were left out"
            reps.append(_Rep(MMAE, np.ascontiguousarray(z[ok]), np.flatnonzero(ok), note, 0.0))

        seeds = init_seeds(cfg.seed, cfg.n_init)
        by_kmeans = [r.method != SPECTRAL_PCA and cluster == "kmeans" for r in reps]
        jobs = [(ri, k, s) for ri, r in enumerate(reps) if by_kmeans[ri] for k in k_grid if k <= len(r.rows) for s in seeds]
        jobs.sort(key=lambda j: -reps[j[0]].z.shape[1] * j[1])  # longest first balances the threads
        log(f"clustering: {len(jobs):,} KMeans runs ({len(reps)} representations x {len(k_grid)} k x {len(seeds)} starts)")

        def run(job: tuple[int, int, int]) -> tuple[float, np.ndarray, float]:
            t0 = time.perf_counter()
            inertia, pred = kmeans_run(reps[job[0]].z, job[1], job[2])
            return inertia, pred, time.perf_counter() - t0

        runs = dict(zip(jobs, parallel_map(run, jobs, on_done=throttled(log, "clustering: {done:,} of {total:,} KMeans runs done"))))

        def score(key: tuple[int, int]) -> tuple[tuple[int, int], dict[str, float], np.ndarray, float]:
            ri, k = key
            t0 = time.perf_counter()
            r = reps[ri]
            pred = best_of([runs[(ri, k, s)][:2] for s in seeds])
            ch, db = internal_scores(r.z, pred)
            ari, nmi = external_scores_encoded(None if codes is None else codes[r.rows], pred)
            secs = sum(runs[(ri, k, s)][2] for s in seeds) + time.perf_counter() - t0
            return key, {"calinski_harabasz": ch, "davies_bouldin": db, "ari": ari, "nmi": nmi}, pred, secs

        keys = sorted({(ri, k) for ri, k, _ in jobs})
        results = {key: (sc, pred, secs) for key, sc, pred, secs in parallel_map(score, keys)}
        graph_keys = [(ri, k) for ri, r in enumerate(reps) for k in grid
                      if (k == AUTO or not by_kmeans[ri]) and (k == AUTO or k <= len(r.rows))]
        found: dict[tuple[int, object], tuple[int, str, float | None]] = {}  # -> (k, found by, resolution)
        failed: dict[int, str] = {}
        graph_reps = sorted({ri for ri, _ in graph_keys})
        if graph_reps:
            log(f"clustering {len(graph_reps)} representations on their nearest-neighbour graphs"
                + (f" (k found by Leiden at resolution {resolution:g})" if has_auto else ""))

        def graph_work(ri: int) -> list[tuple[tuple[int, object], np.ndarray, int, str, float | None, float]]:
            r = reps[ri]
            t0 = time.perf_counter()
            method = "spectral" if r.method == SPECTRAL_PCA else cluster
            ks = [k for (rj, k) in graph_keys if rj == ri]
            g = knn_graph(r.z, SPECTRAL_PCA_NEIGHBORS if r.method == SPECTRAL_PCA else N_NEIGHBORS, cfg.seed)
            out = []
            auto_k, auto_res = None, None
            if AUTO in ks:
                lg = leiden(g, resolution, cfg.seed)
                auto_k, auto_res = lg.k, lg.resolution
                if method == "leiden":
                    out.append(((ri, AUTO), lg.labels, lg.k, "leiden", auto_res))
            want = [(k, int(auto_k if k == AUTO else k)) for k in ks if not (k == AUTO and method == "leiden")]
            if method == "spectral" and want:
                emb = spectral_embedding(g, max(kk for _, kk in want), cfg.seed)
                for k, kk in want:
                    out.append(((ri, k), spectral_from_embedding(emb, kk, cfg.seed), kk,
                                "given" if k != AUTO else "leiden", None if k != AUTO else auto_res))
            else:
                for k, kk in want:
                    out.append(((ri, k), kmeans_labels(r.z, kk, cfg.n_init, cfg.seed), kk, "leiden", auto_res))
            secs = (time.perf_counter() - t0) / max(1, len(out))
            return [(*o, secs) for o in out]

        def safe_graph_work(ri: int) -> list:
            try:
                return graph_work(ri)
            except ConfigError as e:
                failed[ri] = str(e)
                return []

        for outs in parallel_map(safe_graph_work, graph_reps):
            for key, pred, kk, by, res, secs in outs:
                ch, db = internal_scores(reps[key[0]].z, pred)
                ari, nmi = external_scores_encoded(None if codes is None else codes[reps[key[0]].rows], pred)
                results[key] = ({"calinski_harabasz": ch, "davies_bouldin": db, "ari": ari, "nmi": nmi}, pred, secs)
                found[key] = (kk, by, res)

        sil: dict[tuple[int, int], float] = {}
        sil_mode = "full"
        for ri, r in enumerate(reps):
            ks = [k for k in grid if (ri, k) in results]
            if not ks:
                continue
            t0 = time.perf_counter()
            log(f"silhouette for {r.method}")
            sample = np.arange(len(r.rows))
            if len(sample) > SILHOUETTE_FULL_MAX:
                sample = np.random.RandomState(cfg.seed).permutation(len(sample))[:SILHOUETTE_FULL_MAX]
                sil_mode = f"sample of {SILHOUETTE_FULL_MAX}"
            dist = pairwise(r.z[sample])
            vals = parallel_map(lambda k: silhouette_from_distances(dist, results[(ri, k)][1][sample]), ks)
            sil.update({(ri, k): v for k, v in zip(ks, vals)})
            del dist
            r.seconds += time.perf_counter() - t0

    rows = []
    for ri, r in enumerate(reps):
        how = "spectral" if r.method == SPECTRAL_PCA else cluster
        for k in grid:
            note = "; ".join(x for x in (r.note, global_note) if x)
            extra = {"cluster": how, "k_found_by": "leiden" if k == AUTO else "given",
                     "resolution": resolution if k == AUTO else np.nan, "sample_size": sampled}
            if (ri, k) not in results:
                why = failed.get(ri) or f"only {len(r.rows)} items have {r.method}, fewer than k"
                rows.append({"method": r.method, "k": 0 if k == AUTO else k, "split": cfg.split, "n_items": len(r.rows),
                             "silhouette": np.nan, "ari": np.nan, "nmi": np.nan, "calinski_harabasz": np.nan,
                             "davies_bouldin": np.nan, "note": "; ".join(x for x in (why, note) if x), **extra})
                continue
            scores, _, secs = results[(ri, k)]
            r.seconds += secs
            k_out = found.get((ri, k), (k, "given", None))[0]
            rows.append({"method": r.method, "k": int(k_out), "split": cfg.split, "n_items": len(r.rows),
                         "silhouette": sil[(ri, k)], **scores, "note": note, **extra})
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df["k"] = df["k"].astype(int)
    df["n_items"] = df["n_items"].astype(int)
    df.attrs["note"] = global_note
    df.attrs["timings"] = {r.method: round(r.seconds, 4) for r in reps}
    df.attrs["seconds"] = round(time.perf_counter() - t_start, 4)
    df.attrs["silhouette"] = sil_mode
    df.attrs["sample_size"] = sampled
    log(f"evaluation done in {df.attrs['seconds']:.1f} s")
    return df
