"""Why the MMAE wins on some real digit sets and ties or loses on others: what each view can tell
apart, and which digits the clusterings merge.

    .venv/bin/python benchmarks/real_diagnosis.py [--sets mfeat,mfeat-profile,mfeat-karhunen,mfeat-morphology]
        [--seeds 5] [--k 10]

Two tables, on the test split of each real set (`mmae_core/data/realdata.py`), with the tool's own
standardization, fused PCA and KMeans (four seeded starts, seeded like `evaluate --seed`):

1. Per view: 5-nearest-neighbour accuracy (train -> test), i.e. how much class information the view
   holds, and how many of the test 6s and 9s it takes for each other. The weak views of every set,
   `fourier` and `zernike`, are rotation-invariant descriptors, and a 6 turned over is a 9.
2. Per set and method (the paper preset's MMAE trained with seeds 0..N-1, fused PCA evaluated with the
   same seeds): ARI at k, 5-NN accuracy of the representation (information kept), and in how many
   seeds KMeans puts the majority of the 6s and of the 9s in the same cluster.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score
from sklearn.neighbors import KNeighborsClassifier

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmae_core.evaluation.baselines import FusedPCA  # noqa: E402
from mmae_core.config import EvalConfig, preset  # noqa: E402
from mmae_core.evaluation.evaluate import kmeans_labels  # noqa: E402
from mmae_core.data.realdata import REAL_SETS, make_real  # noqa: E402
from mmae_core.model.standardize import Standardizer  # noqa: E402
from mmae_core.model.train import encode, train  # noqa: E402

PAIR = ("digit-6", "digit-9")


def knn(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, n: int = 5) -> np.ndarray:
    return KNeighborsClassifier(n).fit(train_x, train_y).predict(test_x)


def swapped(y: np.ndarray, pred: np.ndarray) -> int:
    """Test 6s predicted 9 plus 9s predicted 6."""
    a, b = PAIR
    return int(((y == a) & (pred == b)).sum() + ((y == b) & (pred == a)).sum())


def merged(y: np.ndarray, labels: np.ndarray) -> bool:
    """Do the majority clusters of the 6s and of the 9s coincide?"""
    a, b = (np.bincount(labels[y == c]).argmax() for c in PAIR)
    return bool(a == b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="mfeat,mfeat-profile,mfeat-karhunen,mfeat-morphology")
    ap.add_argument("--seeds", type=int, default=5, help="MMAE training seeds 0..N-1 (each also seeds KMeans)")
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    n_init = EvalConfig.n_init
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"paper preset, seeds 0..{args.seeds - 1}, k = {args.k}, KMeans starts {n_init}", flush=True)
    views, methods = [], []
    for name in args.sets.split(","):
        t0 = time.perf_counter()
        fs = make_real(name.strip())
        tr, te = fs.splits["train"], fs.splits["test"]
        ytr, yte = tr.labels.astype(str), te.labels.astype(str)
        std = Standardizer.fit(tr.features)
        xtr, xte = std.transform(tr.features), std.transform(te.features)
        for m in fs.modalities:
            pred = knn(xtr[m], ytr, xte[m])
            views.append({"set": fs.name, "view": m, "dims": fs.modalities[m], "5-NN accuracy": (pred == yte).mean(),
                          "6s and 9s swapped (of 100)": swapped(yte, pred)})
        fused = FusedPCA(n_components=EvalConfig.fused_dim).fit(xtr)  # as `evaluate` builds it
        reps = {"fused_pca": (fused.transform(xtr), fused.transform(xte))}
        rows: dict[str, list[tuple[float, float, bool]]] = {"mmae": [], "fused_pca": []}
        for seed in range(args.seeds):
            tm = train(fs, preset("paper", seed=seed), log=lambda _: None)
            reps["mmae"] = (encode(tm, tr.features)[0], encode(tm, te.features)[0])
            for method, (a, b) in reps.items():
                labels = kmeans_labels(b, args.k, n_init, seed)
                acc = float((knn(a, ytr, b) == yte).mean())
                rows[method].append((adjusted_rand_score(yte, labels), acc, merged(yte, labels)))
        for method, r in rows.items():
            ari, acc, merge = zip(*r)
            methods.append({"set": fs.name, "method": method, f"ARI k={args.k} (mean)": np.mean(ari),
                            "5-NN accuracy (mean)": np.mean(acc), "seeds merging 6 and 9": f"{sum(merge)}/{len(merge)}"})
        print(f"{fs.name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        print("\n## what each view tells apart (test split)")
        print(pd.DataFrame(views).to_string(index=False))
        print("\n## what each representation keeps and what KMeans merges")
        print(pd.DataFrame(methods).to_string(index=False))


if __name__ == "__main__":
    main()
