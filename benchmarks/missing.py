"""Missing-rate sweep: how clustering holds up when items lose modalities.

At each rate (0, 20, 50, 80%) that share of the items, in train *and* test, loses a uniformly drawn
non-empty proper subset of its modalities (every item keeps at least one; seeded). Then, at one k
(the number of classes), on the test split:

* MMAE with the paper preset and with the aligned preset (read from ``PRESETS`` at run time), KMeans
  on the fused latent of whatever each item has: as the product computes it (an item lacking
  modalities gets its completed latent, ``mmae_core/model/completion.py``) and, as "mean", the plain mean
  of the encodings it has, so the gain of completion is visible;
* fused PCA with mean imputation and MCCA (``mmae_core.evaluation.evaluate``, as the Compare page computes them);
* each unimodal PCA baseline on the test items that have that modality.

A second table gives the MMAE's ARI on the test items grouped by the subset of modalities they kept
(the clustering is the one over all items; ARI within each group), since an item left with only a
weak modality limits what any method can do.

    python benchmarks/missing.py --scale 0.2                 # demo scaled down + mfeat
    python benchmarks/missing.py --datasets mfeat --rates 0,0.5
"""
from __future__ import annotations

import argparse
from itertools import combinations

import numpy as np
import pandas as pd

from archive_common import config, dataset, drop_modalities, fit, fmt, machine, with_split

from mmae_core.config import EvalConfig
from mmae_core.evaluation.evaluate import evaluate_grid, kmeans_labels
from mmae_core.evaluation.metrics import external_scores
from mmae_core.model.standardize import Standardizer
from mmae_core.model.train import encode


def sweep_one(fs, rate: float, presets: list[str], epochs: int | None, seed: int) -> tuple[list[dict], list[dict]]:
    rng = np.random.default_rng(seed + int(rate * 1000))
    fs_r = with_split(fs, "train", drop_modalities(fs.splits["train"], rate, rng))
    fs_r = with_split(fs_r, "test", drop_modalities(fs.splits["test"], rate, rng))
    te = fs_r.splits["test"]
    labels = te.labels.astype(str)
    k = len(set(labels))
    std = Standardizer.fit(fs_r.splits["train"].features)
    grid = evaluate_grid(std.transform(fs_r.splits["train"].features), std.transform(te.features), te.labels, None,
                         EvalConfig(k_grid=(k,), seed=seed))
    rows = [{"rate": rate, "method": r.method, "ari": r.ari, "nmi": r.nmi, "n": int(r.n_items) if "n_items" in grid else te.n}
            for r in grid.itertuples()]
    mods = list(fs.modalities)
    kept = np.stack([te.present(m) for m in mods], axis=1)
    subsets = []
    for pname in presets:
        tm, sec = fit(fs_r, config(pname, epochs, seed, fs_r.splits["train"].n))
        # the product's fused latent (partial items completed) and, to show what completion adds,
        # the plain mean of the encodings an item has
        for label, completed in ((pname, True), (f"{pname} mean", False)):
            z, _ = encode(tm, te.features, complete_missing=completed)
            pred = kmeans_labels(np.ascontiguousarray(z), k, 4, seed)
            ari, nmi = external_scores(te.labels, pred)
            rows.append({"rate": rate, "method": f"mmae {label}", "ari": ari, "nmi": nmi, "n": te.n, "train_s": sec})
            for r in range(1, len(mods) + 1):
                for sub in combinations(range(len(mods)), r):
                    want = np.zeros(len(mods), dtype=bool)
                    want[list(sub)] = True
                    rows_s = (kept == want).all(axis=1)
                    if rows_s.sum() >= 20:  # ARI on fewer items says little
                        a, _ = external_scores(te.labels[rows_s], pred[rows_s])
                        subsets.append({"rate": rate, "preset": label, "kept": "+".join(mods[j] for j in sub),
                                        "n": int(rows_s.sum()), "ari": a})
            print(f"  rate {rate:.0%} {label}: ARI {ari:.3f} NMI {nmi:.3f} ({sec:.0f} s train)", flush=True)
    return rows, subsets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="demo,mfeat")
    ap.add_argument("--presets", default="paper,aligned")
    ap.add_argument("--rates", default="0,0.2,0.5,0.8")
    ap.add_argument("--scale", type=float, default=0.2)
    ap.add_argument("--epochs", type=int, default=None, help="default: what train runs on the split (config.sized_epochs)")
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    print(f"machine: {machine()}")
    rates = [float(r) for r in a.rates.split(",")]
    presets = a.presets.split(",")
    for dname in a.datasets.split(","):
        fs = dataset(dname, a.scale, a.seed)
        all_rows, all_subsets = [], []
        for rate in rates:
            rows, subsets = sweep_one(fs, rate, presets, a.epochs, a.seed)
            all_rows += rows
            all_subsets += subsets
        df = pd.DataFrame(all_rows)
        k = len(set(fs.splits["test"].labels.astype(str)))
        label = f"demo (scale {a.scale:g}, {fs.splits['test'].n} test items)" if dname == "demo" else f"mfeat ({fs.splits['test'].n} test items)"
        print(f"\n{label}, k = {k}, ARI / NMI on the test split:")
        methods = [f"mmae {p}" for p in presets] + [f"mmae {p} mean" for p in presets] + ["fused_pca", "mcca"] + list(fs.modalities)
        print("| missing | " + " | ".join(m.replace("_", " ") + (" (items that have it)" if m in fs.modalities else "")
                                         for m in methods) + " |")
        print("|---|" + "---|" * len(methods))
        for rate in rates:
            cells = []
            for m in methods:
                r = df[(df["rate"] == rate) & (df["method"] == m)]
                cells.append(f"{fmt(r['ari'].iloc[0])} / {fmt(r['nmi'].iloc[0])}" if len(r) else "–")
            print(f"| {rate:.0%} | " + " | ".join(cells) + " |")
        sub = pd.DataFrame(all_subsets)
        if len(sub):
            print(f"\n{label}: MMAE ARI by the modalities a test item kept (n items), per rate:")
            piv = sub.pivot_table(index=["kept"], columns=["rate", "preset"], values="ari", aggfunc="first")
            ns = sub.pivot_table(index=["kept"], columns=["rate"], values="n", aggfunc="first")
            cols = [(r, p) for r in rates for p in presets + [f"{q} mean" for q in presets] if (r, p) in piv.columns]
            print("| kept | " + " | ".join(f"{r:.0%} {p}" for r, p in cols) + " |")
            print("|---|" + "---|" * len(cols))
            for kept in piv.index:
                print(f"| {kept} | " + " | ".join(
                    (f"{fmt(piv.loc[kept, c])} (n={int(ns.loc[kept, c[0]])})" if np.isfinite(piv.loc[kept, c]) else "–")
                    for c in cols) + " |")
        print()


if __name__ == "__main__":
    main()
