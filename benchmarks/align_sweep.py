"""What the aligned preset's alignment term costs and buys, in the shared search space (docs/results.md,
"What the alignment term costs").

``tune_aligned.py`` chose the preset's defaults on the raw latents, with one seed. Search now compares
in the model's shared space (``studio.search``), so this sweep asks the question again there, over
several training seeds: for each (modality dropout, alignment weight λ, weight decay) it trains the
MMAE in memory, and prints

* the worst ordered modality pair's class P@10 in the shared space (cosine; what the Search page uses);
* the fused latents' ARI / NMI at every k of the set's grid (KMeans with four starts, as ``evaluate``);
* the mean over seeds, and per k its margin over the better of the paper preset (the same seeds, if
  ``0:0:0`` is among the configs) and MCCA (fitted once on train).

    .venv/bin/python benchmarks/align_sweep.py --datasets mfeat,mfeat-profile --seeds 1,2,3,4 \
        --configs 0:0:0,0.7:0.1:0.3,0.7:0:0.3,0.5:0:0.3,0.3:0:0.3,0.3:0.01:0.3
    .venv/bin/python benchmarks/align_sweep.py --datasets demo --seeds 42,1,2 --configs 0.7:0.1:0.3,0.7:0:0.3
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from retrieval import load_set, md  # noqa: E402
from tune_aligned import cluster_scores, mcca_scores  # noqa: E402

PAPER = (0.0, 0.0, 0.0)


def measure(fs, ks, p: float, lam: float, wd: float, seed: int, epochs: int) -> dict:
    from mmae_core.config import preset
    from mmae_core.evaluation.mcca import fit_search_space
    from mmae_core.search.retrieval import retrieval_metrics
    from mmae_core.model.train import encode, train

    cfg = preset("paper" if (p, lam, wd) == PAPER else "aligned", epochs=epochs, seed=seed,
                 modality_dropout=p, align_weight=lam, weight_decay=wd)
    tm = train(fs, cfg)
    _, per_train = encode(tm, fs.splits["train"].features)
    fused, per_test = encode(tm, fs.splits["test"].features)
    views = fit_search_space(per_train).transform_views(per_test)
    t = retrieval_metrics(views, fs.splits["test"].labels, k=10, metric="cosine")
    cl = cluster_scores(fused, fs.splits["test"].labels, ks)
    return {"worst": float(t["p_at_10"].min()), **{f"ari {k}": cl[k][0] for k in ks}, **{f"nmi {k}": cl[k][1] for k in ks}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="mfeat,mfeat-profile")
    ap.add_argument("--configs", default="0:0:0,0.7:0.1:0.3,0.7:0:0.3,0.5:0:0.3,0.3:0:0.3,0.3:0.01:0.3",
                    help="dropout:lambda:weight_decay, comma-separated (0:0:0 is the paper preset)")
    ap.add_argument("--seeds", default="1,2,3,4")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--scale", type=float, default=1.0, help="demo scale (1 = the full demo)")
    args = ap.parse_args()
    configs = [tuple(float(v) for v in c.split(":")) for c in args.configs.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"Python {platform.python_version()}; {args.epochs} epochs; seeds {', '.join(map(str, seeds))}", flush=True)
    for name in args.datasets.split(","):
        fs, ks = load_set(name.strip(), args.scale)
        mcca = mcca_scores(fs, ks)
        rows = []
        for p, lam, wd in configs:
            for seed in seeds:
                t0 = time.perf_counter()
                rows.append({"config": f"{p:g} / {lam:g} / {wd:g}", "seed": seed, **measure(fs, ks, p, lam, wd, seed, args.epochs)})
                print(f"  {name} {p:g}/{lam:g}/{wd:g} seed {seed}: worst pair {rows[-1]['worst']:.3f} "
                      f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        df = pd.DataFrame(rows)
        print(f"\n### {name}: per seed (dropout / λ / weight decay)")
        print(md(df))
        mean = df.drop(columns="seed").groupby("config", sort=False).mean()
        paper = mean.loc["0 / 0 / 0"] if "0 / 0 / 0" in mean.index else None
        out = []
        for cfg, r in mean.iterrows():
            row = {"dropout / λ / weight decay": cfg, "worst pair P@10": r["worst"]}
            row.update({f"ARI {k}": r[f"ari {k}"] for k in ks})
            for k in ks:
                best_ari = max(mcca[k][0], paper[f"ari {k}"] if paper is not None else -1.0)
                best_nmi = max(mcca[k][1], paper[f"nmi {k}"] if paper is not None else -1.0)
                row[f"ΔARI {k}"] = f"{r[f'ari {k}'] - best_ari:+.3f}"
                row[f"ΔNMI {k}"] = f"{r[f'nmi {k}'] - best_nmi:+.3f}"
            out.append(row)
        print(f"\n### {name}: means over {len(seeds)} seeds; Δ = margin over the better of "
              f"{'the paper preset (0 / 0 / 0) and ' if paper is not None else ''}MCCA "
              f"(ARI {', '.join(f'{mcca[k][0]:.3f}' for k in ks)})")
        print(md(pd.DataFrame(out)), flush=True)


if __name__ == "__main__":
    main()
