"""The default against every baseline, side by side, on every real set the tool ships, with the bars.

For each set (the four mfeat three-view sets and the six-view ``mfeat-all``) and each seed it trains
the default preset (``config.DEFAULT_PRESET``, or the one ``--preset`` names) and the paper preset in
memory, and measures on the test split at the class count:

* ARI / NMI: the default cut as ``propose`` cuts it at a given k by default for the graph (spectral on
  the latents' 15-NN graph) and by KMeans; the paper preset by KMeans (the paper's); fused PCA, MCCA,
  every unimodal PCA and ``spectral_pca`` as ``evaluate`` computes them (``evaluate_grid``, KMeans
  with 4 starts seeded by the seed); the best unimodal baseline per seed; and the k Leiden finds;
* class P@10 per ordered modality pair: the default's tag space (what ``search`` compares in by
  default) and its shared space, with their mean instance R@10; the supervised search
  (``search-eval --baseline supervised``) and MCCA's search space on the raw features;
* with ``--bars all``: ARI with 50% of items (train and test) missing 1-2 modalities
  (``archive_common.drop_modalities``) beside what a supervised classifier per modality subset
  loses there; swapped-modality conflicts AUROC of every score (``conflicts.run``) beside a swap
  detector given the labels (``conflicts.supervised``); held-out-class novelty AUROC of every
  combination (two classes held out per seed, ``novelty.scores``) beside two detectors given the
  seen classes' labels (``archive_common.supervised_novelty``). A bar the labelled references miss
  too asks for more than the features tell apart;
* training seconds of both presets.

* a published multimodal VAE (``--vae``: MoPoE by default, MMVAE+ on request; ``published_vae.py``),
  trained on the same standardized train split for the same epochs, its test posterior means cut by
  KMeans and by spectral clustering like the default's. When the optional ``multivae`` extra is absent
  the script says so in one line on stderr and leaves the row and its bar out.

Then it prints per set the mean ± 95% t-interval over seeds of every method, the paired gaps of the
default to each baseline, and every bar of the tool's goal as a "met" / "not met" line with its figures;
``--json-out`` also writes every row, every per-seed figure and the bar lines as JSON.

    .venv/bin/python benchmarks/compare_methods.py --seeds 1..10
    .venv/bin/python benchmarks/compare_methods.py --datasets mfeat --seeds 1,2 --epochs 20 --bars clustering
    .venv/bin/python benchmarks/compare_methods.py --seeds 1..20 --vae-epochs 50 --vae mopoe --bars all --json-out results.json
    .venv/bin/python benchmarks/compare_methods.py --preset reliability --seeds 1..10 --epochs 20
    .venv/bin/python benchmarks/compare_methods.py --seeds 1..10 --epochs 20 --input-noise 0.6
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from archive_common import (  # noqa: E402
    config, drop_modalities, fit, hold_out, machine, supervised_missing_ceiling, supervised_novelty, with_split,
)
from conflicts import run as conflicts_run  # noqa: E402
from novelty import scores as novelty_scores  # noqa: E402
from published_vae import VAES, fit_encode, multivae_models  # noqa: E402
from quality import gap_interval, parse_seeds  # noqa: E402
from retrieval import md  # noqa: E402

from mmae_core.archive.conflicts import DEFAULT_METHOD as CONFLICT_SCORE  # noqa: E402
from mmae_core.archive.novelty import DEFAULT_COMBINE, auroc  # noqa: E402
from mmae_core.clustering.graph import graph_labels, knn_graph  # noqa: E402
from mmae_core.config import DEFAULT_PRESET, PRESETS, EvalConfig  # noqa: E402
from mmae_core.data.realdata import REAL_SETS, make_real  # noqa: E402
from mmae_core.evaluation.evaluate import evaluate_grid, kmeans_labels  # noqa: E402
from mmae_core.evaluation.mcca import fit_search_space  # noqa: E402
from mmae_core.evaluation.metrics import external_scores  # noqa: E402
from mmae_core.model.standardize import Standardizer  # noqa: E402
from mmae_core.model.train import encode  # noqa: E402
from mmae_core.search.retrieval import retrieval_metrics  # noqa: E402
from mmae_core.search.spaces import fit_shared_space, fit_tag_space  # noqa: E402
from mmae_core.search.supervised import supervised_search  # noqa: E402


def default_label(preset: str, how: str = "spectral") -> str:
    """The row of the preset measured as the default, cut ``how`` (spectral: as ``propose`` cuts it)."""
    return f"default ({preset}, {how})"


def cut(z: np.ndarray, labels: np.ndarray, k: int, seed: int) -> dict[str, tuple[float, float] | int]:
    """ARI/NMI of ``z`` at k by KMeans and by spectral on its kNN graph, and the k Leiden finds."""
    z = np.ascontiguousarray(z, dtype=np.float32)
    g = knn_graph(z, seed=seed)
    return {"kmeans": external_scores(labels, kmeans_labels(z, k, 4, seed)),
            "spectral": external_scores(labels, graph_labels(z, "spectral", k, seed=seed, graph=g).labels),
            "leiden_k": graph_labels(z, "leiden", "auto", seed=seed, graph=g).k}


def pair_p10(views: dict[str, np.ndarray], labels: np.ndarray, with_recall: bool = False):
    """Class P@10 per ordered modality pair (and, ``with_recall``, the mean instance R@10 over pairs)."""
    t = retrieval_metrics(views, labels, k=10, metric="cosine")
    t = t[t["query"].isin(views) & t["target"].isin(views)]
    p10 = {f"{q}->{t_}": float(p) for q, t_, p in zip(t["query"], t["target"], t["p_at_10"])}
    return (p10, float(t["r_at_10"].mean())) if with_recall else p10


def supervised_p10(train: dict[str, np.ndarray], train_labels: np.ndarray, test: dict[str, np.ndarray],
                   test_labels: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Class P@10 of the supervised search (``--baseline supervised``) per ordered pair, keyed as ``pair_p10``."""
    sup = supervised_search(train, train_labels, test, test_labels, k=10, seed=seed)
    return {f"{q}->{t}": float(p) for q, t, p in zip(sup["query"], sup["target"], sup["p_at_10"])}


def search_spaces(per_train: dict[str, np.ndarray], fused_train: np.ndarray, seed: int) -> tuple[object, object]:
    """The space search compares in by default (and conflicts use) and the shared space, fitted on a
    model's train latents: the tag space, or the shared space when the latents give no tags (the
    fallback ``studio.search`` makes for a stored model)."""
    tags = fit_tag_space(per_train, fused_train, seed=seed)
    shared = tags.shared if tags is not None else fit_shared_space(per_train)
    return (tags if tags is not None else shared), shared


VAE_NAMES = {"mopoe": "MoPoE", "mmvaeplus": "MMVAE+"}


def one_seed(fs, seed: int, epochs: int | None, bars: str, vaes: tuple[str, ...],
             vae_epochs: int | None = None, preset: str = DEFAULT_PRESET,
             input_noise: float | None = None) -> tuple[list[dict], dict]:
    def cfg(name: str, n_train: int):
        """What ``train`` runs for ``name`` on ``n_train`` items; the measured preset with ``input_noise``."""
        c = config(name, epochs, seed, n_train)
        return replace(c, input_noise=input_noise) if name == preset and input_noise is not None else c

    tr, te = fs.splits["train"], fs.splits["test"]
    labels = te.labels
    k = len(set(labels.astype(str)))
    rows: list[dict] = []
    extra: dict = {"seed": seed}
    std = Standardizer.fit(tr.features)
    grid = evaluate_grid(std.transform(tr.features), std.transform(te.features), labels, None,
                         EvalConfig(k_grid=(k,), seed=seed))
    for r in grid.itertuples():
        rows.append({"method": r.method, "ari": r.ari, "nmi": r.nmi})
    uni = grid[grid.method.isin(list(fs.modalities))].sort_values("ari", ascending=False).iloc[0]
    rows.append({"method": "best unimodal", "ari": uni.ari, "nmi": uni.nmi})
    models = {}
    for name in (preset, "paper"):
        cpu0 = time.process_time()
        tm, sec = fit(fs, cfg(name, tr.n))
        models[name] = tm
        extra[f"train s {name}"] = sec
        extra[f"train cpu s {name}"] = time.process_time() - cpu0  # steadier than wall time on a shared machine
        z, per = encode(tm, te.features)
        c = cut(z, labels, k, seed)
        if name == "paper":
            rows.append({"method": "paper (kmeans)", "ari": c["kmeans"][0], "nmi": c["kmeans"][1]})
            rows.append({"method": "paper (spectral)", "ari": c["spectral"][0], "nmi": c["spectral"][1]})
        else:
            rows.append({"method": default_label(preset), "ari": c["spectral"][0], "nmi": c["spectral"][1]})
            rows.append({"method": default_label(preset, "kmeans"), "ari": c["kmeans"][0], "nmi": c["kmeans"][1]})
            extra["leiden k"] = c["leiden_k"]
            z_tr, per_tr = encode(tm, tr.features)
            default_space, shared = search_spaces(per_tr, z_tr, seed)
            extra["p10 default"], extra["r10 default"] = pair_p10(
                {m: default_space.transform_view(m, z_) for m, z_ in per.items()}, labels, with_recall=True)
            extra["p10 default shared"], extra["r10 default shared"] = pair_p10(
                {m: shared.transform_view(m, z_) for m, z_ in per.items()}, labels, with_recall=True)
    tr_s, te_s = std.transform(tr.features), std.transform(te.features)
    extra["p10 mcca"] = pair_p10(fit_search_space(tr_s).transform_views(te_s), labels)
    extra["p10 supervised"] = supervised_p10(tr_s, tr.labels, te_s, labels, seed)
    for vae in vaes:
        cpu0 = time.process_time()
        z = fit_encode(vae, tr_s, te_s, vae_epochs or cfg(preset, tr.n).epochs, seed)
        extra[f"train cpu s {vae}"] = time.process_time() - cpu0
        c = cut(z, labels, k, seed)
        rows.append({"method": f"{VAE_NAMES[vae]} (kmeans)", "ari": c["kmeans"][0], "nmi": c["kmeans"][1]})
        rows.append({"method": f"{VAE_NAMES[vae]} (spectral)", "ari": c["spectral"][0], "nmi": c["spectral"][1]})
    if bars == "all":
        rng = np.random.default_rng(seed + 500)
        fs_m = with_split(fs, "train", drop_modalities(tr, 0.5, rng))
        fs_m = with_split(fs_m, "test", drop_modalities(te, 0.5, rng))
        tm_m, _ = fit(fs_m, cfg(preset, tr.n))
        z_m, _ = encode(tm_m, fs_m.splits["test"].features)
        extra["missing50 ari"] = cut(z_m, labels, k, seed)["spectral"][0]
        extra["missing50 supervised ari"] = supervised_missing_ceiling(tr_s, tr.labels, te_s, fs_m.splits["test"], labels)
        conf = conflicts_run(models[preset], fs, k, np.random.default_rng(seed), 0.1, with_labels=True, space=tags)
        extra["conflicts auroc"] = conf[CONFLICT_SCORE]["auroc"]
        extra["conflicts auroc by score"] = {m: r["auroc"] for m, r in conf.items()}
        classes = sorted(set(tr.labels.astype(str)))
        out = [str(c) for c in np.random.default_rng(seed).choice(classes, size=2, replace=False)]
        seen = hold_out(fs, out)
        tm_n, _ = fit(seen, cfg(preset, seen.splits['train'].n))
        by = novelty_scores(tm_n, fs, ["test"], k - 2, train_set=seen)["test"]
        novel = np.isin(labels.astype(str), out)
        extra["novelty auroc by combination"] = {how: auroc(sc[~novel], sc[novel]) for how, sc in by.items()}
        extra["novelty auroc by combination"].update(supervised_novelty(fs, out, seed))
        extra["novelty auroc"] = extra["novelty auroc by combination"][DEFAULT_COMBINE]
    return [dict(r, seed=seed) for r in rows], extra


def ci(v: np.ndarray) -> tuple[float, float]:
    mean, lo, hi = gap_interval(np.asarray(v, dtype=float))
    return mean, (hi - lo) / 2 if np.isfinite(lo) else float("nan")


def fmt_ci(v: np.ndarray) -> str:
    mean, half = ci(v)
    return f"{mean:.3f}" if not np.isfinite(half) else f"{mean:.3f} ± {half:.3f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "not met"


def report(name: str, df: pd.DataFrame, extras: list[dict], bars: str, vaes: tuple[str, ...],
           preset: str = DEFAULT_PRESET) -> list[str]:
    """Print the set's tables and bars; return the bar lines."""
    seeds = sorted(df.seed.unique().tolist())
    print(f"\n## {name}: test split, k = class count, {len(seeds)} seeds, mean ± 95% interval")
    tab = [{"method": m, "ARI": fmt_ci(g.ari.to_numpy()), "NMI": fmt_ci(g.nmi.to_numpy())}
           for m, g in df.groupby("method", sort=False)]
    print(md(pd.DataFrame(tab)))
    ref = df[df.method == default_label(preset)].set_index("seed").sort_index()
    gaps, lines = [], []
    vae_rows = [f"{VAE_NAMES[v]} ({c})" for v in vaes for c in ("spectral", "kmeans")]
    for base in ("fused_pca", "mcca", "spectral_pca", "best unimodal", "paper (kmeans)", "paper (spectral)", *vae_rows):
        if base not in set(df.method):
            continue
        b = df[df.method == base].set_index("seed").reindex(ref.index)
        row = {"baseline": base}
        ahead, not_behind, fig = True, True, []
        for metric in ("ari", "nmi"):
            mean, lo, hi = gap_interval(ref[metric].to_numpy() - b[metric].to_numpy())
            row[f"default − baseline {metric.upper()} [95%]"] = f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]"
            ahead &= bool(lo > 0)
            not_behind &= bool(hi >= 0)
            fig.append(f"{metric.upper()} {ref[metric].mean():.3f} vs {b[metric].mean():.3f}, gap {mean:+.3f} [{lo:+.3f}, {hi:+.3f}]")
        gaps.append(row)
        if base in ("fused_pca", "mcca", "spectral_pca", "best unimodal"):
            lines.append(f"{verdict(ahead)} {name}: ARI and NMI ahead of {base} beyond the interval ({'; '.join(fig)})")
        elif base in vae_rows:
            lines.append(f"{verdict(not_behind)} {name}: ARI and NMI not behind {base} beyond the interval ({'; '.join(fig)})")
    print(f"\n{name}: paired gaps of the default to each baseline")
    print(md(pd.DataFrame(gaps)))
    pairs = sorted(extras[0]["p10 default"])
    p = {src: {pr: np.array([e[f"p10 {src}"][pr] for e in extras]) for pr in pairs}
         for src in ("default", "default shared", "supervised", "mcca")}
    print(f"\n{name}: class P@10 per ordered pair (default: the tag space search uses; default shared: the shared space)")
    print(md(pd.DataFrame([{"pair": pr, **{src: fmt_ci(p[src][pr]) for src in p}} for pr in pairs])))
    r10 = {src: np.array([e[f"r10 {src}"] for e in extras]) for src in ("default", "default shared")}
    print(f"mean instance R@10 over pairs: tag space {fmt_ci(r10['default'])}, shared space {fmt_ci(r10['default shared'])}")
    near = all(p["default"][pr].mean() >= p["supervised"][pr].mean() - 0.05 for pr in pairs)
    above = all(p["default"][pr].mean() > p["mcca"][pr].mean() for pr in pairs)
    worst = min(pairs, key=lambda pr: p["default"][pr].mean() - p["supervised"][pr].mean())
    lines.append(f"{verdict(near)} {name}: class P@10 within 0.05 of the supervised search on every pair "
                 f"(worst {worst}: {p['default'][worst].mean():.3f} vs {p['supervised'][worst].mean():.3f})")
    low = min(pairs, key=lambda pr: p["default"][pr].mean() - p["mcca"][pr].mean())
    lines.append(f"{verdict(above)} {name}: class P@10 above MCCA's on every pair "
                 f"(closest {low}: {p['default'][low].mean():.3f} vs {p['mcca'][low].mean():.3f})")
    if bars == "all":
        miss = np.array([e["missing50 ari"] for e in extras])
        full = ref.ari.to_numpy()
        sup = np.array([e["missing50 supervised ari"] for e in extras])
        lines.append(f"{verdict(full.mean() - miss.mean() <= 0.05)} {name}: 50% missing 1-2 modalities ARI "
                     f"{fmt_ci(miss)} vs complete {fmt_ci(full)} (within 0.05; drop {full.mean() - miss.mean():.3f}, where a "
                     f"supervised classifier per modality subset drops {sup[:, 0].mean() - sup[:, 1].mean():.3f}, "
                     f"{sup[:, 0].mean():.3f} -> {sup[:, 1].mean():.3f})")
        for key, title in (("conflicts auroc by score", "swapped-modality conflicts AUROC by score"),
                           ("novelty auroc by combination", "held-out-class novelty AUROC by combination")):
            names_ = list(extras[0][key])
            print(f"\n{name}: {title}")
            print(md(pd.DataFrame([{"score": h, "AUROC": fmt_ci(np.array([e[key][h] for e in extras]))} for h in names_])))
        conf = np.array([e["conflicts auroc"] for e in extras])
        conf_lab = np.array([e["conflicts auroc by score"]["with labels"] for e in extras])
        lines.append(f"{verdict(conf.mean() >= 0.97)} {name}: swapped-modality conflicts AUROC {fmt_ci(conf)} (>= 0.97; "
                     f"a detector given the labels: {conf_lab.mean():.3f})")
        nov = np.array([e["novelty auroc"] for e in extras])
        nov_lab = max(np.mean([e["novelty auroc by combination"][h] for e in extras])
                      for h in extras[0]["novelty auroc by combination"] if "with labels" in h)
        lines.append(f"{verdict(nov.mean() >= 0.98)} {name}: held-out-class novelty AUROC {fmt_ci(nov)} (>= 0.98; "
                     f"the better detector given the seen classes' labels: {nov_lab:.3f})")
    ratio = np.array([e[f"train cpu s {preset}"] / e["train cpu s paper"] for e in extras])
    wall = np.array([e[f"train s {preset}"] / e["train s paper"] for e in extras])
    lines.append(f"{verdict(ratio.mean() <= 1.5)} {name}: default trains in {ratio.mean():.2f}x the paper preset's CPU time "
                 f"(<= 1.5x; wall time {wall.mean():.2f}x on a shared machine)")
    lk = [e["leiden k"] for e in extras]
    print(f"\n{name}: Leiden found k = {', '.join(map(str, lk))} (classes: {df.attrs.get('k', '?')})")
    print("\n" + "\n".join(lines))
    sys.stdout.flush()
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(REAL_SETS))
    ap.add_argument("--seeds", default="1..10")
    ap.add_argument("--epochs", type=int, default=None, help="default: what `train` runs (the preset's 100; the reliability preset's sized to the split)")
    ap.add_argument("--preset", default=DEFAULT_PRESET, choices=[p for p in PRESETS if p != "paper"],
                    help="the preset measured as the default (default: %(default)s, what `train` uses); the paper "
                         "preset is always measured beside it")
    ap.add_argument("--input-noise", type=float, default=None, metavar="SIGMA",
                    help="train the measured preset with this input noise instead of its own (as train --input-noise)")
    ap.add_argument("--bars", choices=("clustering", "all"), default="all",
                    help="all: also the missing, conflicts and novelty bars (three more trainings per seed)")
    ap.add_argument("--rows-out", type=Path, default=None)
    ap.add_argument("--vae", default="mopoe", help=f"published VAEs to train, comma-separated from {', '.join(VAES)}; 'none' for none")
    ap.add_argument("--vae-epochs", type=int, default=None,
                    help="epochs of the published VAEs (default: --epochs). MoPoE converges slower than the MMAE: "
                         "on mfeat seed 1 its spectral ARI was .32 after 10 epochs and .78 after 40")
    ap.add_argument("--json-out", type=Path, default=None, help="also write rows, per-seed figures and bar lines as JSON")
    a = ap.parse_args()
    seeds = parse_seeds(a.seeds)
    vaes = tuple(v.strip() for v in a.vae.split(",") if v.strip() and v.strip() != "none")
    if bad := [v for v in vaes if v not in VAES]:
        ap.error(f"unknown VAE {', '.join(bad)}; choose from {', '.join(VAES)} or none")
    vae_note = ""
    if vaes and multivae_models()[0] is None:
        vae_note = f"{'/'.join(VAE_NAMES[v] for v in vaes)} skipped: {multivae_models()[1]}"
        print(vae_note, file=sys.stderr)
        vaes = ()
    print(f"machine: {machine()}; seeds {seeds}; epochs {a.epochs or 'the presets'}; VAE epochs {a.vae_epochs or a.epochs or 'the presets'}; default preset {a.preset}{'' if a.input_noise is None else f' with input noise {a.input_noise:g}'}; "
          f"published VAEs: {', '.join(VAE_NAMES[v] for v in vaes) or vae_note or 'none asked'}")
    every, out = [], {"seeds": seeds, "epochs": a.epochs, "vae_epochs": a.vae_epochs, "default_preset": a.preset,
                      "vaes": list(vaes), "vae_note": vae_note, "sets": {}}
    all_lines: list[str] = []
    for name in a.datasets.split(","):
        name = name.strip()
        fs = make_real(name)
        rows, extras = [], []
        for seed in seeds:
            t0 = time.perf_counter()
            r, e = one_seed(fs, seed, a.epochs, a.bars, vaes, a.vae_epochs, a.preset, a.input_noise)
            rows += r
            extras.append(e)
            print(f"  {name} seed {seed} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        df = pd.DataFrame(rows)
        df.attrs["k"] = len(set(fs.splits["test"].labels.astype(str)))
        every.append(df.assign(dataset=name))
        if a.rows_out is not None:
            pd.concat(every).to_csv(a.rows_out, index=False)
        lines = report(name, df, extras, a.bars, vaes, a.preset)
        if vae_note:
            lines.append(f"not measured {name}: ARI and NMI not behind a published VAE ({vae_note})")
            print(lines[-1])
        all_lines += lines
        out["sets"][name] = {"rows": df.to_dict("records"), "per_seed": extras, "bars": lines}
        if a.json_out is not None:
            a.json_out.write_text(json.dumps(out, indent=1, default=float))
    met = sum(ln.startswith("met ") for ln in all_lines)
    print(f"\n## Every bar, every set: {met} of {len(all_lines)} met\n" + "\n".join(all_lines))

if __name__ == "__main__":
    main()
