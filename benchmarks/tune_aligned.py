"""How the ``aligned`` preset's defaults were chosen: a measured sweep of modality dropout x alignment weight
(x AdamW weight decay, ``--weight-decay``).

For each dataset (the real UCI digits ``mfeat`` and a scaled demo) and each (modality_dropout,
align_weight) it trains the MMAE (paper architecture, seed 42), encodes the test split and prints:

* class P@10 for every ordered pair of modalities (cosine and Euclidean; the better metric's
  minimum over pairs is the number the search target is about), and the fused -> modality minimum;
* the fused latents' ARI / NMI at every k of the dataset's grid (KMeans as in ``evaluate``), and
  beside them the same for ``mcca`` (fitted once on train) and for the paper preset (p=0, lambda=0);
* whether the config reaches the bar: min P@10 >= 0.8 and ARI, NMI >= paper and >= mcca at every k.

Each finished config is appended as one JSON line to ``--out`` (default ``tune_aligned.jsonl`` in
the temp folder), and configs already in that file are skipped, so a long sweep can be resumed.

    .venv/bin/python benchmarks/tune_aligned.py [--datasets mfeat,demo] [--scale 0.2] [--epochs 100]
        [--dropout 0.3,0.5,0.7] [--align 0,0.1,1,3] [--weight-decay 0] [--seed 42] [--out FILE.jsonl]
    # the weight-decay sweep: .venv/bin/python benchmarks/tune_aligned.py --dropout 0.7 --align 0.1 \
    #     --weight-decay 0,0.1,0.3,1 --datasets mfeat   (and --datasets demo --scale 1)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmae_core.config import EvalConfig, preset  # noqa: E402
from mmae_core.evaluation.evaluate import evaluate_grid, kmeans_labels  # noqa: E402
from mmae_core.evaluation.metrics import external_scores  # noqa: E402
from mmae_core.search.retrieval import retrieval_metrics  # noqa: E402
from mmae_core.model.standardize import Standardizer  # noqa: E402

K_GRIDS = {"demo": (30, 40, 42, 50, 60), "mfeat": (6, 8, 10, 12, 15)}


def md(df: pd.DataFrame) -> str:
    """A Markdown table (no tabulate dependency): floats to 3 places, booleans as yes/no."""
    def cell(v: object) -> str:
        if isinstance(v, (bool, np.bool_)):
            return "yes" if v else "no"
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v)
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def load(name: str, scale: float):
    if name == "mfeat":
        from mmae_core.data.realdata import make_real

        return make_real()
    from mmae_core.data.demo import make_demo

    return make_demo("demo", seed=42, scale=scale)


def cluster_scores(z: np.ndarray, labels: np.ndarray, ks: tuple[int, ...], seed: int = 42) -> dict[int, tuple[float, float]]:
    return {k: external_scores(labels, kmeans_labels(z, k, n_init=4, seed=seed)) for k in ks}


def mcca_scores(fs, ks: tuple[int, ...]) -> dict[int, tuple[float, float]]:
    std = Standardizer.fit(fs.splits["train"].features)
    te = fs.splits["test"]
    table = evaluate_grid(std.transform(fs.splits["train"].features), std.transform(te.features), te.labels, None,
                          EvalConfig(k_grid=ks, n_init=4))
    g = table[table.method == "mcca"].set_index("k")
    return {int(k): (float(g.loc[k, "ari"]), float(g.loc[k, "nmi"])) for k in ks}


def run_config(fs, p: float, lam: float, epochs: int, seed: int, latent: int | None, wd: float = 0.0) -> dict:
    from mmae_core.model.train import encode, train

    cfg = preset("aligned" if (p or lam) else "paper", epochs=epochs, seed=seed, modality_dropout=p,
                 align_weight=lam, latent=latent, weight_decay=wd)
    t0 = time.perf_counter()
    tm = train(fs, cfg)
    secs = time.perf_counter() - t0
    te = fs.splits["test"]
    fused, per = encode(tm, te.features)
    out: dict = {"p": p, "lam": lam, "wd": wd, "epochs": epochs, "seed": seed, "latent": cfg.latent, "train_s": round(secs, 1)}
    for metric in ("cosine", "euclidean"):
        t = retrieval_metrics(per, te.labels, fused=fused, k=10, metric=metric)
        mm = t[t["query"] != "fused"]
        fu = t[t["query"] == "fused"]
        out[metric] = {
            "min_p10": float(mm["p_at_10"].min()), "mean_p10": float(mm["p_at_10"].mean()),
            "min_map": float(mm["map"].min()), "fused_min_p10": float(fu["p_at_10"].min()),
            "min_r10": float(mm["r_at_10"].min()),
            "pairs": {f"{a}->{b}": round(float(v), 4) for a, b, v in zip(t["query"], t["target"], t["p_at_10"])},
        }
    out["clusters"] = {str(k): v for k, v in cluster_scores(fused, te.labels, K_GRIDS[fs.name]).items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="mfeat,demo")
    ap.add_argument("--scale", type=float, default=0.2, help="demo scale (1 = full LUMA size)")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--dropout", default="0.3,0.5,0.7")
    ap.add_argument("--align", default="0,0.1,1,3")
    ap.add_argument("--weight-decay", default="0", help="AdamW weight decays to sweep (0 = plain Adam)")
    ap.add_argument("--latent", type=int, default=None)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "tune_aligned.jsonl"))
    args = ap.parse_args()
    ps = [float(x) for x in args.dropout.split(",")]
    lams = [float(x) for x in args.align.split(",")]
    wds = [float(x) for x in args.weight_decay.split(",")]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
          f"Python {platform.python_version()}; epochs {args.epochs}, seed {args.seed}, demo scale {args.scale}", flush=True)
    out = Path(args.out)
    done = []
    if out.exists():
        done = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]

    def have(ds: str, p: float, lam: float, wd: float) -> dict | None:
        for r in done:
            if (r["dataset"], r["p"], r["lam"], r.get("wd", 0.0), r["epochs"], r["seed"], r.get("scale"), r.get("latent_arg")) == (
                    ds, p, lam, wd, args.epochs, args.seed, args.scale if ds == "demo" else None, args.latent):
                return r
        return None

    for ds in args.datasets.split(","):
        fs = load(ds, args.scale)
        ks = K_GRIDS[ds]
        mcca = mcca_scores(fs, ks)
        configs = [(0.0, 0.0, 0.0)] + [(p, lam, wd) for p in ps for lam in lams for wd in wds]
        rows = []
        for p, lam, wd in configs:
            r = have(ds, p, lam, wd)
            if r is None:
                r = run_config(fs, p, lam, args.epochs, args.seed, args.latent, wd)
                r.update(dataset=ds, scale=args.scale if ds == "demo" else None, latent_arg=args.latent,
                         load=round(os.getloadavg()[0], 1))
                with out.open("a") as f:
                    f.write(json.dumps(r) + "\n")
                done.append(r)
                print(f"  {ds} p={p} lam={lam} wd={wd}: cos min P@10 {r['cosine']['min_p10']:.3f} "
                      f"euc {r['euclidean']['min_p10']:.3f} ({r['train_s']} s)", file=sys.stderr, flush=True)
            rows.append(r)
        paper = rows[0]["clusters"]
        table = []
        for r in rows:
            best = max(("cosine", "euclidean"), key=lambda m: r[m]["min_p10"])
            cl = r["clusters"]
            ari_ok = all(cl[str(k)][0] >= max(paper[str(k)][0], mcca[k][0]) - 1e-9 for k in ks)
            nmi_ok = all(cl[str(k)][1] >= max(paper[str(k)][1], mcca[k][1]) - 1e-9 for k in ks)
            table.append({
                "dropout": r["p"], "align": r["lam"], "weight decay": r.get("wd", 0.0), "metric": best,
                "min P@10": r[best]["min_p10"], "mean P@10": r[best]["mean_p10"], "min mAP": r[best]["min_map"],
                "fused->m min P@10": r[best]["fused_min_p10"], "min R@10": r[best]["min_r10"],
                "ARI min-k": min(cl[str(k)][0] for k in ks), "NMI min-k": min(cl[str(k)][1] for k in ks),
                "ARI>=paper,mcca all k": ari_ok, "NMI>=paper,mcca all k": nmi_ok,
                "bar": bool(r[best]["min_p10"] >= 0.8 and ari_ok and nmi_ok), "train s": r["train_s"],
            })
        df = pd.DataFrame(table)
        label = f"{ds}" + (f" (scale {args.scale})" if ds == "demo" else "")
        print(f"\n### {label}: test split, {args.epochs} epochs, seed {args.seed}")
        print("mcca ARI/NMI per k: " + ", ".join(f"k={k} {a:.3f}/{n:.3f}" for k, (a, n) in mcca.items()))
        print("paper ARI/NMI per k: " + ", ".join(f"k={k} {paper[str(k)][0]:.3f}/{paper[str(k)][1]:.3f}" for k in ks))
        print(md(df), flush=True)


if __name__ == "__main__":
    main()
