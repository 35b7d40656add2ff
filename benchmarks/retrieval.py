"""Cross-modal search, measured (issue 5): retrieval quality of the aligned preset vs the paper preset, the
fused latents' clustering vs MCCA, and query latency at archive size.

``--part quality`` (per dataset: the full demo and the real UCI digits ``mfeat``): trains the paper
and the aligned preset (seed 42) into a temporary store through ``pipeline.train_and_register``, then
prints, in each search space (``shared``, the default, and the raw ``latent``s), for each ordered
modality pair and fused -> modality, class P@10 under cosine and Euclidean,
and for the better metric mAP, instance R@1/5/10 and median rank (``mmae_core.search.search_eval``,
what ``python -m mmae_core search-eval`` prints); the minimum P@10 over modality pairs against the
issue's bar (>= 0.8); a ceiling: how well a *supervised* logistic regression on the query modality's
own features (PCA 64) names the class of a test item (a query cannot find its class's items more
reliably than its modality tells the class); the P@10 of the query modality's own standardized
features (unsupervised neighbours before any model); MCCA as a search baseline (each view's canonical
variates as its search space: the tool's, weighted by canonical correlation, and unweighted at 10, 20
and 50 components); and the fused ARI / NMI of aligned, paper and
MCCA at every k (``pipeline.evaluate_model``, what ``evaluate`` prints).

``--part latency``: median and p99 of one top-10 query over 10k / 100k / 1M stored 128-d latents
(clustered like a trained model's: 50 Gaussian classes), for numpy brute force
(``retrieval.nearest``), DuckDB's ``array_cosine_similarity`` over a ``FLOAT[128]`` table in a file,
faiss exact (``IndexFlatIP``) and the index search uses (``search_index.LatentIndex``: exact up to
``EXACT_MAX`` rows, IVF above), with build times and the IVF's recall@10 against the exact answer.

    .venv/bin/python benchmarks/retrieval.py --part quality --datasets mfeat,demo [--epochs 100] [--scale 1]
    .venv/bin/python benchmarks/retrieval.py --part latency [--sizes 10000,100000,1000000] [--queries 50]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

K_GRIDS = {"demo": (30, 40, 42, 50, 60), "mfeat": (6, 8, 10, 12, 15)}


def md(df: pd.DataFrame) -> str:
    def cell(v: object) -> str:
        if isinstance(v, (bool, np.bool_)):
            return "yes" if v else "no"
        if isinstance(v, (float, np.floating)):
            return "–" if np.isnan(v) else f"{v:.3f}"
        return str(v)
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def machine() -> str:
    return (f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
            f"Python {platform.python_version()}")


# ------------------------------------------------------------------------------------------ quality
def supervised_ceiling(fs) -> dict[str, float]:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    from mmae_core.standardize import Standardizer

    std = Standardizer.fit(fs.splits["train"].features)
    tr, te = std.transform(fs.splits["train"].features), std.transform(fs.splits["test"].features)
    ytr, yte = fs.splits["train"].labels.astype(str), fs.splits["test"].labels.astype(str)
    out = {}
    for m in fs.modalities:
        p = PCA(min(64, tr[m].shape[1]), random_state=0).fit(tr[m])
        clf = LogisticRegression(max_iter=300, C=0.1).fit(p.transform(tr[m]), ytr)
        out[m] = float(clf.score(p.transform(te[m]), yte))
    return out


def own_neighbours(fs) -> dict[str, float]:
    """Class P@10 of each modality's own standardized test features (cosine, the query item left out):
    how well unsupervised neighbours in the raw modality find a class, before any model. A cross-modal
    query from a modality already beats this when its P@10 is higher."""
    from mmae_core.retrieval import retrieval_metrics
    from mmae_core.standardize import Standardizer

    te = Standardizer.fit(fs.splits["train"].features).transform(fs.splits["test"].features)
    out = {}
    for m in fs.modalities:
        r = retrieval_metrics({"q": te[m], "t": te[m]}, fs.splits["test"].labels, metric="cosine")
        out[m] = float(r.loc[r["query"] == "q", "p_at_10"].iloc[0])
    return out


MCCA_COMPONENTS = (10, 20, 50)


def mcca_search(fs) -> pd.DataFrame:
    """MCCA as a cross-modal search baseline: each view's canonical variates are its search space (they
    are what MCCA lines up across views), the mean of an item's variates its fused vector. The tool's
    version (``mcca.search_space``, ``search-eval --baseline mcca``) weights each variate by its train
    correlation at 50 components; unweighted truncations are printed beside it to show why."""
    from mmae_core.mcca import MCCA, search_space
    from mmae_core.retrieval import retrieval_metrics
    from mmae_core.standardize import Standardizer

    std = Standardizer.fit(fs.splits["train"].features)
    tr, te = std.transform(fs.splits["train"].features), std.transform(fs.splits["test"].features)
    spaces = {"50, weighted by ρ (the tool's)": search_space(tr, te)}
    for nc in MCCA_COMPONENTS:
        m = MCCA(n_components=nc).fit(tr)
        spaces[f"{nc}, unweighted"] = (m.transform_views(te), m.transform(te))
    out = []
    for name, (views, fused) in spaces.items():
        for metric in ("cosine", "euclidean"):
            t = retrieval_metrics(views, fs.splits["test"].labels, fused=fused, k=10, metric=metric)
            out.append(t.assign(components=name, metric=metric))
    return pd.concat(out, ignore_index=True)


def quality(name: str, epochs: int, scale: float) -> None:
    from mmae_core.config import EvalConfig, preset
    from mmae_core.pipeline import evaluate_model, train_and_register
    from mmae_core.search import SPACES, search_eval
    from store import Store

    if name == "mfeat":
        from mmae_core.realdata import make_real

        fs = make_real()
    else:
        from mmae_core.demo import make_demo

        fs = make_demo("demo", seed=42, scale=scale)
    ks = K_GRIDS[name]
    with tempfile.TemporaryDirectory() as t:
        store = Store(Path(t) / "r.duckdb")
        store.add_dataset(fs)
        evals, tables, secs = {}, {}, {}
        for p in ("paper", "aligned"):
            cfg = preset(p, epochs=epochs)
            out = train_and_register(store, fs.name, cfg, model_name=p)
            secs[p] = out.train_seconds
            for space in SPACES:
                tables[(p, space)] = search_eval(store, fs.name, p, "test", metric="both", space=space)
            evals[p] = evaluate_model(store, fs.name, p, EvalConfig(k_grid=ks), save=False)
        ceiling = supervised_ceiling(fs)
        own = own_neighbours(fs)
        mcca = mcca_search(fs)
    aligned = preset("aligned")
    print(f"\n### {name}{f' (scale {scale:g})' if name == 'demo' else ''}: test split, {epochs} epochs, seed 42; "
          f"aligned = dropout {aligned.modality_dropout:g}, align {aligned.align_weight:g}, weight decay {aligned.weight_decay:g}; "
          f"training s: paper {secs['paper']:.0f}, aligned {secs['aligned']:.0f}; {machine()}")
    for p, space in ((p, sp) for p in ("aligned", "paper") for sp in SPACES):
        t = tables[(p, space)]
        cos = t[t.metric == "cosine"].set_index(["query", "target"])
        euc = t[t.metric == "euclidean"].set_index(["query", "target"])
        mods = cos.index[cos.index.get_level_values(0) != "fused"]
        better = "cosine" if cos.loc[mods, "p_at_10"].mean() >= euc.loc[mods, "p_at_10"].mean() else "euclidean"
        b = cos if better == "cosine" else euc
        rows = []
        for (q, tg) in cos.index:
            rows.append({"query → target": f"{q} → {tg}", "P@10 cos": cos.loc[(q, tg), "p_at_10"],
                         "P@10 euc": euc.loc[(q, tg), "p_at_10"], f"mAP ({better[:3]})": b.loc[(q, tg), "map"],
                         "R@1": b.loc[(q, tg), "recall_at_1"], "R@5": b.loc[(q, tg), "recall_at_5"],
                         "R@10": b.loc[(q, tg), "recall_at_10"], "median rank": b.loc[(q, tg), "median_rank"],
                         "own features P@10 (query modality)": own.get(q, float("nan")),
                         "ceiling (query modality)": ceiling.get(q, float("nan"))})
        mn = float(b.loc[mods, "p_at_10"].min())
        print(f"\n{p} preset, {space} space ({better} is the better metric): min P@10 over modality pairs {mn:.3f} "
              f"(mean {float(b.loc[mods, 'p_at_10'].mean()):.3f}; {'meets' if mn >= 0.8 else 'misses'} the 0.8 bar)")
        print(md(pd.DataFrame(rows)))
    print("\nMCCA as a search baseline (each view's canonical variates; fitted on train), class P@10:")
    rows = []
    for (nc, metric), g in mcca.groupby(["components", "metric"], sort=False):
        mods = g[g["query"] != "fused"]
        row = {"components": nc, "metric": metric, "min P@10 (modality pairs)": mods["p_at_10"].min(),
               "mean P@10": mods["p_at_10"].mean()}
        row.update({f"{q} → {t}": v for q, t, v in zip(g["query"], g["target"], g["p_at_10"])})
        rows.append(row)
    print(md(pd.DataFrame(rows)))
    print("\nfused latents, ARI / NMI per k (aligned vs paper vs MCCA):")
    rows = []
    ev = {p: evals[p].set_index(["method", "k"]) for p in evals}
    for k in ks:
        a, pp, mc = ev["aligned"].loc[("mmae", k)], ev["paper"].loc[("mmae", k)], ev["paper"].loc[("mcca", k)]
        rows.append({"k": k, "aligned ARI": a.ari, "paper ARI": pp.ari, "MCCA ARI": mc.ari,
                     "aligned NMI": a.nmi, "paper NMI": pp.nmi, "MCCA NMI": mc.nmi,
                     "aligned >= both": bool(a.ari >= max(pp.ari, mc.ari) and a.nmi >= max(pp.nmi, mc.nmi))})
    print(md(pd.DataFrame(rows)), flush=True)


# ------------------------------------------------------------------------------------------ latency
def clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, d)).astype(np.float32) * 2
    out = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        out[s:e] = centres[rng.integers(0, 50, e - s)] + rng.standard_normal((e - s, d), dtype=np.float32)
    return out


def timed(fn, queries: np.ndarray) -> tuple[float, float, list]:
    fn(queries[0])  # warm-up
    ts, outs = [], []
    for q in queries:
        t0 = time.perf_counter()
        outs.append(fn(q))
        ts.append(time.perf_counter() - t0)
    ts = np.asarray(ts) * 1000
    return float(np.median(ts)), float(np.percentile(ts, 99)), outs


def latency(sizes: list[int], n_queries: int, d: int = 128) -> None:
    import duckdb
    import pyarrow as pa

    from mmae_core.search_index import EXACT_MAX, LatentIndex

    print(f"\n### query latency, one top-10 cosine query, {d}-d latents, {n_queries} queries per cell; {machine()}")
    rows = []
    for n in sizes:
        x = clustered(n, d)
        rng = np.random.default_rng(1)
        queries = x[rng.choice(n, n_queries, replace=False)] + 0.3 * rng.standard_normal((n_queries, d), dtype=np.float32)
        exact_sets = None
        cells = []
        # numpy brute force over a prepared matrix of unit rows (retrieval.nearest re-normalizes the
        # targets in float64 on every call, which is fine for metrics but not for an archive)
        t0 = time.perf_counter()
        unit = np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)
        build = time.perf_counter() - t0

        def brute(q: np.ndarray) -> np.ndarray:
            s = unit @ (q / np.linalg.norm(q))
            top = np.argpartition(-s, 10)[:10]
            return top[np.argsort(-s[top])]

        med, p99, _ = timed(brute, queries)
        cells.append(("numpy brute force (unit float32 matrix @ q)", med, p99, build, None))
        # faiss exact
        t0 = time.perf_counter()
        flat = LatentIndex(x, "cosine", exact=True)
        build = time.perf_counter() - t0
        med, p99, outs = timed(lambda q: flat.search(q, 10)[0], queries)
        exact_sets = [set(o.tolist()) for o in outs]
        cells.append(("faiss exact (IndexFlatIP)", med, p99, build, 1.0))
        # faiss IVF
        t0 = time.perf_counter()
        ivf = LatentIndex(x, "cosine", exact=False)
        build = time.perf_counter() - t0
        med, p99, outs = timed(lambda q: ivf.search(q, 10)[0], queries)
        rec = float(np.mean([len(set(o.tolist()) & e) / 10 for o, e in zip(outs, exact_sets)]))
        cells.append((f"faiss IVF (nlist {ivf.index.nlist}, nprobe {ivf.index.nprobe})", med, p99, build, rec))
        # DuckDB array functions over a FLOAT[d] table in a file
        with tempfile.TemporaryDirectory() as t:
            con = duckdb.connect(str(Path(t) / "lat.duckdb"))
            t0 = time.perf_counter()
            vec = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), type=pa.float32()), d)
            tbl = pa.table({"row_idx": pa.array(np.arange(n, dtype=np.int32)), "vec": vec})
            con.register("_in", tbl)
            con.execute(f"CREATE TABLE lat AS SELECT row_idx, vec::FLOAT[{d}] AS vec FROM _in")
            con.unregister("_in")
            build = time.perf_counter() - t0
            sql = (f"SELECT row_idx FROM lat ORDER BY array_cosine_similarity(vec, ?::FLOAT[{d}]) DESC LIMIT 10")
            nq = max(5, n_queries // (5 if n >= 10**6 else 1))
            med, p99, outs = timed(lambda q: [r[0] for r in con.execute(sql, [q.tolist()]).fetchall()], queries[:nq])
            rec = float(np.mean([len(set(o) & e) / 10 for o, e in zip(outs, exact_sets[:nq])]))
            cells.append(("DuckDB array_cosine_similarity", med, p99, build, rec))
            con.close()
        chosen = "faiss exact (IndexFlatIP)" if n <= EXACT_MAX else "faiss IVF"
        for name, med, p99, build, rec in cells:
            rows.append({"stored latents": f"{n:,}", "method": name + (" ← search uses" if name.startswith(chosen) else ""),
                         "median ms": med, "p99 ms": p99, "build s": build,
                         "recall@10 vs exact": rec if rec is not None else float("nan")})
        print(f"  {n:,} done (load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
        del x, unit, flat, ivf
    print(md(pd.DataFrame(rows)), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("quality", "latency", "all"), default="all")
    ap.add_argument("--datasets", default="mfeat,demo")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--scale", type=float, default=1.0, help="demo scale (1 = the full demo)")
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--queries", type=int, default=50)
    args = ap.parse_args()
    print(machine(), flush=True)
    if args.part in ("latency", "all"):
        latency([int(s) for s in args.sizes.split(",")], args.queries)
    if args.part in ("quality", "all"):
        for name in args.datasets.split(","):
            quality(name.strip(), args.epochs, args.scale)


if __name__ == "__main__":
    main()
