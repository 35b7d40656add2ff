"""Cross-modal search, measured: retrieval quality of the aligned preset vs the paper preset, the
fused latents' clustering vs MCCA, and query latency at archive size.

``--part quality`` (per dataset: the full demo and the real UCI digits sets ``mfeat`` and
``mfeat-profile``): trains the paper and the aligned preset (seed 42, and ``--extra-seeds``) into a
temporary store through ``pipeline.train_and_register``, then
prints, in each search space (``shared``, the default, and the raw ``latent``s), for each ordered
modality pair and fused -> modality, class P@10 under cosine and Euclidean,
and for the better metric mAP, instance R@1/5/10 and median rank (``studio.search.search_eval``,
what ``python -m mmae_core search-eval`` prints); the minimum P@10 over modality pairs against the
target (>= 0.8); a ceiling: how well a *supervised* logistic regression on the query modality's
own features (PCA 64) names the class of a test item (a query cannot find its class's items more
reliably than its modality tells the class); per ordered pair, a *supervised search* (``pair_oracle``:
targets ranked by the chance that they share the query's class, from supervised posteriors of both
modalities), an estimate of the P@10 the data allow; the P@10 of the query modality's own standardized
features (unsupervised neighbours before any model); MCCA as a search baseline (each view's canonical
variates as its search space: the tool's, weighted by canonical correlation, and unweighted at 10, 20
and 50 components); and the fused ARI / NMI of aligned, paper and
MCCA at every k (``pipeline.evaluate_model``, what ``evaluate`` prints). With ``--extra-seeds`` a
summary over the seeds follows: each seed's worst-pair P@10, and the fused ARI / NMI means.

``--part oracle``: only the supervised search per pair, without training (seconds).

``--part latency``: median and p99 of one top-10 query over 10k / 100k / 1M stored 128-d latents
(clustered like a trained model's: 50 Gaussian classes), for numpy brute force
(``retrieval.nearest``), DuckDB's ``array_cosine_similarity`` over a ``FLOAT[128]`` table in a file,
faiss exact (``IndexFlatIP``) and the index search uses (``search_index.LatentIndex``: exact up to
``EXACT_MAX`` rows, IVF above), with build times and the IVF's recall@10 against the exact answer.

    .venv/bin/python benchmarks/retrieval.py --part quality --datasets mfeat,mfeat-profile,demo [--epochs 100]
        [--scale 1] [--extra-seeds 1,2,3]
    .venv/bin/python benchmarks/retrieval.py --part oracle --datasets mfeat,mfeat-profile
    .venv/bin/python benchmarks/retrieval.py --part latency [--sizes 10000,100000,1000000] [--queries 50]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEMO_KS = (30, 40, 42, 50, 60)
REAL_KS = (6, 8, 10, 12, 15)


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
def own_neighbours(fs) -> dict[str, float]:
    """Class P@10 of each modality's own standardized test features (cosine, the query item left out):
    how well unsupervised neighbours in the raw modality find a class, before any model. A cross-modal
    query from a modality already beats this when its P@10 is higher."""
    from mmae_core.search.retrieval import retrieval_metrics
    from mmae_core.model.standardize import Standardizer

    te = Standardizer.fit(fs.splits["train"].features).transform(fs.splits["test"].features)
    out = {}
    for m in fs.modalities:
        r = retrieval_metrics({"q": te[m], "t": te[m]}, fs.splits["test"].labels, metric="cosine")
        out[m] = float(r.loc[r["query"] == "q", "p_at_10"].iloc[0])
    return out


SVC_MAX_TRAIN = 5_000  # an RBF SVM with Platt scaling is fitted only up to this many train items (minutes beyond)


def posteriors(fs, kind: str) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Each modality's test-item class posteriors from a supervised classifier fitted on train, and its
    test accuracy. ``logreg``: the tool's (``mmae_core.search.supervised.class_posteriors``, what
    ``search-eval --baseline supervised`` uses: logistic regression on PCA 64); ``svm``: an RBF SVM with
    libsvm's Platt-scaled probabilities (sharper and, on the digits, more accurate; too slow at demo size)."""
    from sklearn.svm import SVC

    from mmae_core.model.standardize import Standardizer
    from mmae_core.search.supervised import class_posteriors

    std = Standardizer.fit(fs.splits["train"].features)
    tr, te = std.transform(fs.splits["train"].features), std.transform(fs.splits["test"].features)
    ytr, yte = fs.splits["train"].labels.astype(str), fs.splits["test"].labels.astype(str)
    classes = np.unique(ytr)
    if kind == "logreg":
        post = class_posteriors(tr, ytr, te)
    else:
        # libsvm's own probabilities (5-fold Platt scaling and pairwise coupling): their argmax named 0.90 of
        # the digits' test items from zernike where SVC.predict and CalibratedClassifierCV's sigmoid named
        # 0.81. scikit-learn 1.9 deprecates the option (removed in 1.11); it is what measured best here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            post = {m: SVC(C=10, probability=True, random_state=0).fit(tr[m], ytr).predict_proba(te[m])
                    for m in fs.modalities}
    return post, {m: float((classes[p.argmax(axis=1)] == yte).mean()) for m, p in post.items()}


def pair_oracle(fs, k: int = 10) -> tuple[dict[tuple[str, str], float], dict[str, dict[str, float]]]:
    """Class P@k of a *supervised* search for every ordered modality pair: rank the target items by
    P(same class | query's features, target's features) = sum_c P(c | x_q) P(c | x_t), with both
    posteriors from ``posteriors``. With exact posteriors that ranking is the best any search can do
    for expected class P@k (the items' classes are independent given their features), so this
    estimates the pair's attainable P@k: what the data allow, not what an unsupervised model reaches.
    The best of the classifiers per pair (the SVM only up to ``SVC_MAX_TRAIN`` train items); the
    query item itself is left out, as in ``search-eval``. Also returns each classifier's accuracies."""
    y = fs.splits["test"].labels.astype(str)
    same = y[:, None] == y[None, :]
    kinds = ["logreg"] + (["svm"] if len(fs.splits["train"].item_ids) <= SVC_MAX_TRAIN else [])
    best: dict[tuple[str, str], float] = {}
    accs = {}
    for kind in kinds:
        post, accs[kind] = posteriors(fs, kind)
        for q in post:
            for t in post:
                if q == t:
                    continue
                s = post[q] @ post[t].T
                np.fill_diagonal(s, -np.inf)
                top = np.argpartition(-s, k - 1, axis=1)[:, :k]
                v = float(np.take_along_axis(same, top, axis=1).mean())
                best[(q, t)] = max(v, best.get((q, t), 0.0))
    return best, accs


def oracle_only(name: str, scale: float) -> None:
    """``--part oracle``: the supervised search per pair, without training anything."""
    fs, _ = load_set(name, scale)
    oracle, accs = pair_oracle(fs)
    print(f"\n### {name}: supervised search (pair_oracle), class P@10 per ordered modality pair; {machine()}")
    print("classifier test accuracy: " + "; ".join(f"{k}: " + ", ".join(f"{m} {a:.3f}" for m, a in v.items()) for k, v in accs.items()))
    print(md(pd.DataFrame([{"query → target": f"{q} → {t}", "supervised search P@10": v} for (q, t), v in oracle.items()])))
    print(f"min {min(oracle.values()):.3f}, mean {np.mean(list(oracle.values())):.3f}", flush=True)


MCCA_COMPONENTS = (10, 20, 50)


def mcca_search(fs) -> pd.DataFrame:
    """MCCA as a cross-modal search baseline: each view's canonical variates are its search space (they
    are what MCCA lines up across views), the mean of an item's variates its fused vector. The tool's
    version (``mcca.search_space``, ``search-eval --baseline mcca``) weights each variate by its train
    correlation at 50 components; unweighted truncations are printed beside it to show why."""
    from mmae_core.evaluation.mcca import MCCA, search_space
    from mmae_core.search.retrieval import retrieval_metrics
    from mmae_core.model.standardize import Standardizer

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


def load_set(name: str, scale: float):
    if name == "demo":
        from mmae_core.data.demo import make_demo

        return make_demo("demo", seed=42, scale=scale), DEMO_KS
    from mmae_core.data.realdata import REAL_SETS, make_real

    if name not in REAL_SETS:
        raise SystemExit(f"unknown dataset {name}; use demo or one of {', '.join(REAL_SETS)}")
    return make_real(name), REAL_KS


def train_both(store, fs, ks, epochs: int, seed: int) -> tuple[dict, dict, dict]:
    """Train the paper and the aligned preset with ``seed``; their search tables (per space) and
    fused-latent evaluations (which include the baselines) and training seconds."""
    from mmae_core.config import EvalConfig, preset
    from studio.pipeline import evaluate_model, train_and_register
    from studio.search import SPACES, search_eval

    evals, tables, secs = {}, {}, {}
    for p in ("paper", "aligned"):
        name = f"{p}-{seed}"
        out = train_and_register(store, fs.name, preset(p, epochs=epochs, seed=seed), model_name=name)
        secs[p] = out.train_seconds
        for space in SPACES:
            tables[(p, space)] = search_eval(store, fs.name, name, "test", metric="both", space=space)
        evals[p] = evaluate_model(store, fs.name, name, EvalConfig(k_grid=ks), save=False)
        print(f"  {fs.name}: {p} preset, seed {seed} done (load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    return tables, evals, secs


def better_metric(t: pd.DataFrame) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """The metric with the higher mean P@10 over modality pairs, and the cosine and Euclidean rows."""
    cos = t[t.metric == "cosine"].set_index(["query", "target"])
    euc = t[t.metric == "euclidean"].set_index(["query", "target"])
    mods = cos.index[cos.index.get_level_values(0) != "fused"]
    better = "cosine" if cos.loc[mods, "p_at_10"].mean() >= euc.loc[mods, "p_at_10"].mean() else "euclidean"
    return better, cos, euc


def worst_pair(t: pd.DataFrame) -> float:
    better, cos, euc = better_metric(t)
    b = cos if better == "cosine" else euc
    return float(b.loc[b.index.get_level_values(0) != "fused", "p_at_10"].min())


def fused_rows(evals: dict, ks) -> list[dict]:
    rows = []
    ev = {p: evals[p].set_index(["method", "k"]) for p in evals}
    for k in ks:
        a, pp, mc = ev["aligned"].loc[("mmae", k)], ev["paper"].loc[("mmae", k)], ev["paper"].loc[("mcca", k)]
        rows.append({"k": k, "aligned ARI": a.ari, "paper ARI": pp.ari, "MCCA ARI": mc.ari,
                     "aligned NMI": a.nmi, "paper NMI": pp.nmi, "MCCA NMI": mc.nmi,
                     "aligned >= both": bool(a.ari >= max(pp.ari, mc.ari) and a.nmi >= max(pp.nmi, mc.nmi))})
    return rows


def quality(name: str, epochs: int, scale: float, extra_seeds: list[int]) -> None:
    from mmae_core.config import preset
    from studio.search import SPACES
    from store import Store

    fs, ks = load_set(name, scale)
    runs = {}
    with tempfile.TemporaryDirectory() as t:
        store = Store(Path(t) / "r.duckdb")
        store.add_dataset(fs)
        for seed in (42, *extra_seeds):
            runs[seed] = train_both(store, fs, ks, epochs, seed)
        oracle, accuracy = pair_oracle(fs)
        ceiling = accuracy["logreg"]  # how often the query modality's own classifier names a test item's class
        own = own_neighbours(fs)
        mcca = mcca_search(fs)
    tables, evals, secs = runs[42]
    aligned = preset("aligned")
    print(f"\n### {name}{f' (scale {scale:g})' if name == 'demo' else ''}: test split, {epochs} epochs, seed 42; "
          f"aligned = dropout {aligned.modality_dropout:g}, align {aligned.align_weight:g}, weight decay {aligned.weight_decay:g}; "
          f"training s: paper {secs['paper']:.0f}, aligned {secs['aligned']:.0f}; {machine()}")
    for p, space in ((p, sp) for p in ("aligned", "paper") for sp in SPACES):
        better, cos, euc = better_metric(tables[(p, space)])
        b = cos if better == "cosine" else euc
        mods = cos.index[cos.index.get_level_values(0) != "fused"]
        rows = []
        for (q, tg) in cos.index:
            rows.append({"query → target": f"{q} → {tg}", "P@10 cos": cos.loc[(q, tg), "p_at_10"],
                         "P@10 euc": euc.loc[(q, tg), "p_at_10"], f"mAP ({better[:3]})": b.loc[(q, tg), "map"],
                         "R@1": b.loc[(q, tg), "recall_at_1"], "R@5": b.loc[(q, tg), "recall_at_5"],
                         "R@10": b.loc[(q, tg), "recall_at_10"], "median rank": b.loc[(q, tg), "median_rank"],
                         "own features P@10 (query modality)": own.get(q, float("nan")),
                         "ceiling (query modality)": ceiling.get(q, float("nan")),
                         "supervised search P@10 (pair)": oracle.get((q, tg), float("nan"))})
        mn = float(b.loc[mods, "p_at_10"].min())
        print(f"\n{p} preset, {space} space ({better} is the better metric): min P@10 over modality pairs {mn:.3f} "
              f"(mean {float(b.loc[mods, 'p_at_10'].mean()):.3f}; {'meets' if mn >= 0.8 else 'misses'} the 0.8 bar)")
        print(md(pd.DataFrame(rows)))
    print(f"\nsupervised search (pair_oracle): min P@10 over modality pairs {min(oracle.values()):.3f}, "
          f"mean {np.mean(list(oracle.values())):.3f}")
    print("\nMCCA as a search baseline (each view's canonical variates; fitted on train), class P@10:")
    rows = []
    for (nc, metric), g in mcca.groupby(["components", "metric"], sort=False):
        mods = g[g["query"] != "fused"]
        row = {"components": nc, "metric": metric, "min P@10 (modality pairs)": mods["p_at_10"].min(),
               "mean P@10": mods["p_at_10"].mean()}
        row.update({f"{q} → {t}": v for q, t, v in zip(g["query"], g["target"], g["p_at_10"])})
        rows.append(row)
    print(md(pd.DataFrame(rows)))
    print("\nfused latents, ARI / NMI per k (aligned vs paper vs MCCA), seed 42:")
    print(md(pd.DataFrame(fused_rows(evals, ks))), flush=True)
    if extra_seeds:
        seeds = sorted(runs)
        print(f"\nover {len(seeds)} training seeds ({', '.join(map(str, seeds))}): worst-pair P@10 in the default "
              "(shared) space, and the fused ARI / NMI (mean; MCCA has no training seed)")
        print(md(pd.DataFrame([{"seed": s, **{f"{p} worst pair": worst_pair(runs[s][0][(p, 'shared')])
                                              for p in ("aligned", "paper")}} for s in seeds])))
        per = {s: pd.DataFrame(fused_rows(runs[s][1], ks)).set_index("k") for s in seeds}
        rows = []
        for k in ks:
            g = pd.DataFrame([per[s].loc[k] for s in seeds])
            rows.append({"k": k, "aligned ARI": g["aligned ARI"].mean(), "paper ARI": g["paper ARI"].mean(),
                         "MCCA ARI": g["MCCA ARI"].iloc[0], "aligned NMI": g["aligned NMI"].mean(),
                         "paper NMI": g["paper NMI"].mean(), "MCCA NMI": g["MCCA NMI"].iloc[0],
                         "seeds aligned >= both": f"{int(g['aligned >= both'].sum())} of {len(seeds)}",
                         "means aligned >= both": bool(g["aligned ARI"].mean() >= max(g["paper ARI"].mean(), g["MCCA ARI"].iloc[0])
                                                       and g["aligned NMI"].mean() >= max(g["paper NMI"].mean(), g["MCCA NMI"].iloc[0]))})
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

    from mmae_core.search.index import EXACT_MAX, LatentIndex

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
    ap.add_argument("--part", choices=("quality", "latency", "oracle", "all"), default="all",
                    help="oracle: only the supervised search per modality pair (no training)")
    ap.add_argument("--datasets", default="mfeat,mfeat-profile,demo",
                    help="demo and/or real sets (mmae_core.data.realdata.REAL_SETS)")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--scale", type=float, default=1.0, help="demo scale (1 = the full demo)")
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--extra-seeds", default="", help="more training seeds, e.g. 1,2,3: a summary over seeds follows")
    args = ap.parse_args()
    print(machine(), flush=True)
    if args.part in ("latency", "all"):
        latency([int(s) for s in args.sizes.split(",")], args.queries)
    if args.part == "oracle":
        for name in args.datasets.split(","):
            oracle_only(name.strip(), args.scale)
    if args.part in ("quality", "all"):
        for name in args.datasets.split(","):
            quality(name.strip(), args.epochs, args.scale, [int(x) for x in args.extra_seeds.split(",") if x.strip()])


if __name__ == "__main__":
    main()
