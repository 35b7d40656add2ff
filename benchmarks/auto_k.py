"""How close ``--k auto`` comes to the class count, and how good its clusters are, on every shipped set.

    .venv/bin/python benchmarks/auto_k.py [--sets mfeat,mfeat-profile,mfeat-karhunen,mfeat-morphology,demo]
        [--seeds 3] [--epochs 10] [--resolutions 0.5,1,2] [--no-mmae]

On the test split of each set (the four real ``mfeat`` sets of ``realdata.py`` and the synthetic demo),
for two representations: fused PCA (50 dims, the tool's standardization) and the fused latents of an
MMAE trained with the paper preset (``--epochs`` epochs, seed s). For each resolution and seed, Leiden
on the faiss 15-NN graph (``clustering.graph``, seeded with s) gives k and labels; the table shows the
mean k found against the class count, the mean |k - classes|, and ARI/NMI of Leiden's clusters, each
mean with its 95% t-interval over the seeds; for reference, ARI of KMeans told the class count
(the grid's KMeans, 4 starts) and of spectral clustering told the class count on the same graph.
Fused PCA is deterministic, so its spread comes only from the Leiden/KMeans seeds.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmae_core.evaluation.baselines import FusedPCA  # noqa: E402
from mmae_core.evaluation.evaluate import kmeans_labels  # noqa: E402
from mmae_core.clustering.graph import N_NEIGHBORS, knn_graph, leiden, spectral  # noqa: E402
from mmae_core.model.standardize import Standardizer  # noqa: E402

SETS = ("mfeat", "mfeat-profile", "mfeat-karhunen", "mfeat-morphology", "demo")


def load(name: str) -> object:
    if name == "demo":
        from mmae_core.data.demo import make_demo

        return make_demo()
    from mmae_core.data.realdata import make_real

    return make_real(name)


def ci(v: list[float]) -> str:
    a = np.asarray(v, dtype=float)
    if len(a) < 2:
        return f"{a.mean():.3f}"
    h = stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a))
    return f"{a.mean():.3f} ± {h:.3f}"


def reps(fs: object, seed: int, epochs: int, mmae: bool) -> dict[str, np.ndarray]:
    std = Standardizer.fit(fs.splits["train"].features)
    tr, te = std.transform(fs.splits["train"].features), std.transform(fs.splits["test"].features)
    out = {"fused_pca": FusedPCA(n_components=50).fit(tr).transform(te)}
    if mmae:
        from mmae_core.config import preset
        from mmae_core.model.train import encode, train

        tm = train(fs, preset("paper", epochs=epochs, seed=seed))
        out["mmae_paper"] = encode(tm, fs.splits["test"].features)[0]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--resolutions", default="0.5,1,2")
    ap.add_argument("--no-mmae", action="store_true")
    a = ap.parse_args()
    res_grid = [float(r) for r in a.resolutions.split(",")]
    recs = []
    for name in a.sets.split(","):
        fs = load(name)
        y = np.asarray(fs.splits["test"].labels).astype(str)
        classes = len(np.unique(y))
        for seed in range(a.seeds):
            t0 = time.perf_counter()
            for rep, z in reps(fs, seed, a.epochs, not a.no_mmae).items():
                z = np.ascontiguousarray(z, dtype=np.float32)
                g = knn_graph(z, N_NEIGHBORS, seed)
                km = adjusted_rand_score(y, kmeans_labels(z, classes, 4, seed))
                spc = adjusted_rand_score(y, spectral(g, classes, seed))
                for r in res_grid:
                    try:
                        lg = leiden(g, r, seed)
                        lab, k = lg.labels, lg.k
                    except Exception as e:  # a refused resolution is a result too
                        print(f"{name} {rep} seed {seed} resolution {r}: {e}", file=sys.stderr)
                        continue
                    recs.append({"set": name, "rep": rep, "resolution": r, "seed": seed, "classes": classes, "k": k,
                                 "abs_err": abs(k - classes), "ari": adjusted_rand_score(y, lab),
                                 "nmi": normalized_mutual_info_score(y, lab), "kmeans_ari_at_classes": km,
                                 "spectral_ari_at_classes": spc, "unassigned": lg.n_unassigned})
            print(f"{name} seed {seed} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        table(pd.DataFrame(recs), name)
    df = pd.DataFrame(recs)
    table(df, None)
    summ = df.groupby(["rep", "resolution"])[["abs_err", "ari", "nmi"]].mean().round(3)
    print("\nmean over sets and seeds (the default resolution is the one with the smallest |k - classes|):")
    print(summ.to_string())


def table(df: pd.DataFrame, only: str | None) -> None:
    """The per-set table (printed as each set finishes, then once whole)."""
    if only is not None:
        df = df[df["set"] == only]
    rows = []
    for (s, rep, r), g in df.groupby(["set", "rep", "resolution"], sort=False):
        rows.append({"set": s, "rep": rep, "resolution": r, "classes": int(g["classes"].iloc[0]),
                     "k found": ci(g["k"].tolist()), "|k - classes|": ci(g["abs_err"].tolist()),
                     "ARI": ci(g["ari"].tolist()), "NMI": ci(g["nmi"].tolist()),
                     "KMeans ARI at classes": ci(g["kmeans_ari_at_classes"].tolist()),
                     "spectral ARI at classes": ci(g["spectral_ari_at_classes"].tolist()),
                     "unassigned": float(g["unassigned"].mean()), "seeds": len(g)})
    out = pd.DataFrame(rows)
    with pd.option_context("display.max_rows", 500, "display.width", 250, "display.max_columns", 20):
        print(out.to_string(index=False), flush=True)


if __name__ == "__main__":
    main()
