"""Which objective terms pay: an ablation of the MMAE's options on the real sets and the demo.

Each config is one ``TrainConfig`` of the one model definition (``mmae_core/model/mmae.py``), written
as ``name=field:value/field:value`` on top of a base preset. For each set, config and training seed it
trains in memory, encodes the test split and measures

* ARI / NMI of the fused latents at the class count, cut by KMeans (4 starts, as ``evaluate``) and by
  spectral clustering on their 15-NN graph (``clustering.graph``, what ``propose --cluster spectral``
  does), and the k Leiden finds on that graph (``k auto``);
* the worst ordered modality pair's class P@10 in the shared search space (cosine);
* ``P@10 vs supervised``: class P@10 in the tag space (what Search compares in by default) minus the
  supervised search's, on the ordered pair where it is lowest: the search bar of
  ``compare_methods.py`` (≥ −.05 meets it);
* training seconds.

It prints, per set, each config's mean with its 95% t-interval over the seeds, and each config's
paired gap to the ``--reference`` config (the same seeds), so "this term helps" means "ahead beyond
the interval", not "a higher mean on three draws".

    .venv/bin/python benchmarks/ablation.py --datasets mfeat,mfeat-all --seeds 1,2,3 --epochs 100
    .venv/bin/python benchmarks/ablation.py --datasets demo --scale 0.2 --seeds 1,2,3
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from archive_common import machine  # noqa: E402
from compare_methods import pair_p10, search_spaces, supervised_p10  # noqa: E402
from quality import gap_interval, parse_seeds  # noqa: E402
from retrieval import load_set, md  # noqa: E402

from mmae_core.config import PRESETS, TrainConfig  # noqa: E402

# The parts, each added alone to "dropout" (reconstruction + modality dropout + weight decay: the
# aligned preset without its alignment term), then together; "default" is the default preset
# (reliability fusion and input noise on "dropout").
DEFAULT_CONFIGS = ",".join([
    "paper=paper",
    "aligned=aligned",
    "dropout=aligned/align_weight:0",
    "+infonce=aligned/align_weight:0/contrastive_weight:1",
    "+cross=aligned/align_weight:0/cross_weight:1",
    "+reliability=aligned/align_weight:0/fusion:reliability",
    "+noise=aligned/align_weight:0/input_noise:1.0",
    "default=denoising",
    "+infonce+cross=aligned/align_weight:0/contrastive_weight:1/cross_weight:1",
    "all=aligned/align_weight:0/contrastive_weight:1/cross_weight:1/fusion:reliability",
])


def parse_config(text: str) -> tuple[str, TrainConfig]:
    """``name=base/field:value/...`` -> (name, config); values are cast to the field's type."""
    name, _, spec = text.partition("=")
    base, *sets = spec.split("/")
    cfg = PRESETS[base.strip()]
    kw: dict[str, object] = {}
    for s in sets:
        field, _, value = s.partition(":")
        current = getattr(cfg, field.strip())
        kw[field.strip()] = value if isinstance(current, str) else type(current)(float(value))
    return name.strip(), replace(cfg, **kw)


def supervised_p10_of(fs) -> dict[str, float]:
    """Class P@10 of the supervised search per ordered pair (one per set: it does not depend on the model)."""
    from mmae_core.model.standardize import Standardizer

    tr, te = fs.splits["train"], fs.splits["test"]
    std = Standardizer.fit(tr.features)
    return supervised_p10(std.transform(tr.features), tr.labels, std.transform(te.features), te.labels)


def measure(fs, cfg: TrainConfig, supervised: dict[str, float]) -> dict[str, float]:
    """One trained model's figures (see the module docstring)."""
    from mmae_core.clustering.graph import graph_labels, knn_graph
    from mmae_core.evaluation.evaluate import kmeans_labels
    from mmae_core.evaluation.mcca import fit_search_space
    from mmae_core.evaluation.metrics import external_scores
    from mmae_core.model.train import encode, train
    from mmae_core.search.retrieval import retrieval_metrics

    t0 = time.perf_counter()
    tm = train(fs, cfg)
    sec = time.perf_counter() - t0
    te = fs.splits["test"]
    labels = te.labels
    k = len(set(labels.astype(str)))
    fused_train, per_train = encode(tm, fs.splits["train"].features)
    fused, per_test = encode(tm, te.features)
    z = np.ascontiguousarray(fused, dtype=np.float32)
    ari_km, nmi_km = external_scores(labels, kmeans_labels(z, k, 4, cfg.seed))
    g = knn_graph(z, seed=cfg.seed)
    ari_sp, nmi_sp = external_scores(labels, graph_labels(z, "spectral", k, seed=cfg.seed, graph=g).labels)
    k_auto = graph_labels(z, "leiden", "auto", seed=cfg.seed, graph=g).k
    views = fit_search_space(per_train).transform_views(per_test)
    p10 = retrieval_metrics(views, labels, k=10, metric="cosine")
    pairs = p10[p10["query"].isin(fs.modalities) & p10["target"].isin(fs.modalities)]
    space, _ = search_spaces(per_train, fused_train, cfg.seed)
    in_tags = pair_p10({m: space.transform_view(m, v) for m, v in per_test.items()}, labels)
    return {"ari kmeans": ari_km, "nmi kmeans": nmi_km, "ari spectral": ari_sp, "nmi spectral": nmi_sp,
            "worst P@10": float(pairs["p_at_10"].min()),
            "P@10 vs supervised": min(in_tags[pair] - p for pair, p in supervised.items()),
            "leiden k": float(k_auto), "train s": sec}


def ci(v: np.ndarray) -> str:
    mean, lo, hi = gap_interval(np.asarray(v, dtype=float))
    return f"{mean:.3f}" if not np.isfinite(lo) else f"{mean:.3f} ± {(hi - lo) / 2:.3f}"


def report(df: pd.DataFrame, reference: str, label: str) -> None:
    metrics = [c for c in df.columns if c not in ("config", "seed")]
    print(f"\n### {label}: mean ± 95% interval over seeds {sorted(df.seed.unique().tolist())}")
    print(md(pd.DataFrame([{"config": c, **{m: ci(g[m].to_numpy()) for m in metrics}}
                           for c, g in df.groupby("config", sort=False)])))
    if reference not in set(df.config):
        return
    ref = df[df.config == reference].set_index("seed")
    rows = []
    for c, g in df.groupby("config", sort=False):
        if c == reference:
            continue
        g = g.set_index("seed").reindex(ref.index)
        row = {"config": c}
        for m in ("ari kmeans", "nmi kmeans", "ari spectral", "nmi spectral", "worst P@10", "P@10 vs supervised"):
            mean, lo, hi = gap_interval(g[m].to_numpy() - ref[m].to_numpy())
            tag = "ahead" if lo > 0 else "behind" if hi < 0 else "level"
            row[m] = f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}] {tag}" if np.isfinite(lo) else f"{mean:+.3f}"
        row["train s ratio"] = f"{g['train s'].mean() / ref['train s'].mean():.2f}x"
        rows.append(row)
    print(f"\n### {label}: paired gap to '{reference}' (same seeds), 95% interval")
    print(md(pd.DataFrame(rows)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="mfeat,mfeat-all,demo")
    ap.add_argument("--configs", default=DEFAULT_CONFIGS, help="name=base/field:value/..., comma-separated")
    ap.add_argument("--reference", default="dropout", help="config the paired gaps are taken to")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--epochs", type=int, default=None, help="default: each preset's")
    ap.add_argument("--scale", type=float, default=0.2, help="demo scale")
    ap.add_argument("--rows-out", type=Path, default=None, help="also write every row to this CSV")
    a = ap.parse_args()
    configs = [parse_config(c) for c in a.configs.split(",")]
    seeds = parse_seeds(a.seeds)
    print(f"machine: {machine()}; seeds {seeds}; epochs {a.epochs or 'the preset'}s'; demo scale {a.scale:g}")
    for name, cfg in configs:
        print(f"- {name}: " + ", ".join(f"{f}={v}" for f, v in cfg.to_dict().items() if v != TrainConfig().to_dict()[f] and f != "preset"))
    every = []
    for dname in a.datasets.split(","):
        fs, _ = load_set(dname.strip(), a.scale)
        rows = []
        supervised = supervised_p10_of(fs)
        for name, cfg in configs:
            for seed in seeds:
                c = replace(cfg, seed=seed, **({"epochs": a.epochs} if a.epochs else {}))
                rows.append({"config": name, "seed": seed, **measure(fs, c, supervised)})
                r = rows[-1]
                print(f"  {dname} {name} seed {seed}: ARI km {r['ari kmeans']:.3f} sp {r['ari spectral']:.3f}, "
                      f"worst P@10 {r['worst P@10']:.3f}, P@10 vs supervised {r['P@10 vs supervised']:+.3f}, leiden k {r['leiden k']:.0f}, {r['train s']:.0f} s",
                      file=sys.stderr, flush=True)
        df = pd.DataFrame(rows)
        every.append(df.assign(dataset=dname))
        label = f"{dname} (scale {a.scale:g})" if dname == "demo" else dname
        report(df, a.reference, label)
        if a.rows_out is not None:
            pd.concat(every).to_csv(a.rows_out, index=False)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
