"""KMeans and Leiden at archive size: scikit-learn MiniBatchKMeans vs faiss k-means, and a 1M-item Leiden.

    python benchmarks/kmeans_scale.py                      # 100k, 300k, 1M points x 128 dims, k = 100
    python benchmarks/kmeans_scale.py --sizes 100000 --no-leiden

Every run is its own process, so its peak RSS (``resource.getrusage``, the kernel's ru_maxrss) is
its own; "data" is the RSS right after the points were generated (1M x 128 float32 = 0.5 GB), so
peak minus data is what the method itself needs. Points: a seeded mixture of 100 Gaussian clusters
of unequal spread in 128 dims, generated in chunks. Quality: each method's centroids are scored on a
fixed 20,000-point sample against full scikit-learn ``KMeans`` (k-means++, one start) fitted on that
sample: inertia relative to it (1.00 = as good) and ARI of the two labelings. Leiden: the faiss kNN
graph (``clustering.graph.knn_graph``, IVF above 50k points) then Leiden at the default resolution.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLE = 20_000


def points(n: int, d: int = 128, k_true: int = 100, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k_true, d)).astype(np.float32) * 3.0
    spread = rng.uniform(0.5, 2.0, k_true).astype(np.float32)
    out = np.empty((n, d), dtype=np.float32)
    step = 100_000
    for a in range(0, n, step):
        r = np.random.default_rng([seed, a])
        y = r.integers(0, k_true, min(step, n - a))
        out[a:a + len(y)] = centers[y] + r.standard_normal((len(y), d), dtype=np.float32) * spread[y, None]
    return out


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_one(method: str, n: int, k: int, seed: int) -> dict:
    x = points(n)
    data_mb = rss_mb()
    t0 = time.perf_counter()
    extra: dict = {}
    if method == "faiss":
        from mmae_core.clustering.kmeans import faiss_kmeans

        labels, _ = faiss_kmeans(x, k, seed)
        centers = None  # the centroids of the labels, computed after the clock stops
    elif method == "minibatch":
        from sklearn.cluster import MiniBatchKMeans

        mb = MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=4096, n_init=3).fit(x)
        labels, centers = mb.labels_, mb.cluster_centers_
    elif method == "leiden":
        from mmae_core.clustering.graph import DEFAULT_RESOLUTION, knn_graph, leiden

        g = knn_graph(x, seed=seed)
        extra["graph_s"] = round(time.perf_counter() - t0, 1)
        extra["graph_edges"] = int(g.nnz // 2)
        res = leiden(g, DEFAULT_RESOLUTION, seed)
        extra["k_found"] = res.k
        extra["unassigned"] = res.n_unassigned
        labels, centers = res.labels, None
    else:
        raise SystemExit(f"unknown method {method}")
    secs = time.perf_counter() - t0
    if method == "faiss":
        import scipy.sparse as sps

        onehot = sps.csr_matrix((np.ones(n, np.float32), (labels, np.arange(n))), shape=(k, n))
        centers = np.asarray(onehot @ x) / np.maximum(np.asarray(onehot.sum(axis=1)), 1)
    out = {"method": method, "n": n, "k": k, "seconds": round(secs, 1), "peak_rss_mb": round(rss_mb()),
           "data_rss_mb": round(data_mb), **extra}
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    idx = np.random.RandomState(1).choice(n, SAMPLE, replace=False)
    xs = x[idx]
    ref = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(xs)
    if centers is not None:
        d = ((xs[:, None, :] - centers[None, :, :].astype(np.float32)) ** 2).sum(-1) if k * SAMPLE < 5e6 else None
        if d is None:
            import faiss

            idx_c = faiss.IndexFlatL2(xs.shape[1])
            idx_c.add(np.ascontiguousarray(centers, dtype=np.float32))
            dd, _ = idx_c.search(np.ascontiguousarray(xs), 1)
            inertia = float(dd.sum())
        else:
            inertia = float(d.min(axis=1).sum())
        out["inertia_vs_full"] = round(inertia / float(ref.inertia_), 4)
    out["ari_vs_full"] = round(float(adjusted_rand_score(ref.labels_, np.asarray(labels)[idx])), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,300000,1000000")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="faiss,minibatch")
    ap.add_argument("--no-leiden", action="store_true", help="skip the 1M-point Leiden run")
    ap.add_argument("--leiden-n", type=int, default=1_000_000)
    ap.add_argument("--one", nargs=3, metavar=("METHOD", "N", "K"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(run_one(a.one[0], int(a.one[1]), int(a.one[2]), a.seed)))
        return
    jobs = [(m, int(n)) for n in a.sizes.split(",") for m in a.methods.split(",")]
    if not a.no_leiden:
        jobs.append(("leiden", a.leiden_n))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    print(f"{'method':<10} {'n':>9} {'k':>5} {'seconds':>8} {'peak RSS MB':>12} {'data MB':>8} {'inertia/full':>13} {'ARI vs full':>12}  extra",
          flush=True)
    for m, n in jobs:
        p = subprocess.run([sys.executable, __file__, "--one", m, str(n), str(a.k), "--seed", str(a.seed)],
                           capture_output=True, text=True, env=env)
        if p.returncode != 0:
            print(f"{m:<10} {n:>9} failed: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}", flush=True)
            continue
        r = json.loads(p.stdout.strip().splitlines()[-1])
        extra = {k: v for k, v in r.items() if k in ("graph_s", "graph_edges", "k_found", "unassigned")}
        print(f"{m:<10} {n:>9} {r['k']:>5} {r['seconds']:>8} {r['peak_rss_mb']:>12} {r['data_rss_mb']:>8} "
              f"{r.get('inertia_vs_full', float('nan')):>13} {r['ari_vs_full']:>12}  {extra or ''}", flush=True)


if __name__ == "__main__":
    main()
