"""Clustering quality of the MMAE against every baseline, on the demo and on a real feature set.

Runs the public command line exactly as a user would (``demo`` / ``import``, ``train``, ``evaluate
--format json``) against a fresh store in a temporary folder, then prints one table per dataset:
ARI / NMI / Silhouette per method and k, and whether the MMAE beats fused PCA and every unimodal
baseline at every k (the target). ``mcca`` is printed beside them, win or lose.

    .venv/bin/python benchmarks/quality.py [--epochs 100] [--datasets demo,mfeat,mfeat-profile] [--preset paper]
        [--extra-seeds 1,2,3 | 1..29] [--n-init 10] [--eval-seed same|fixed] [--rows-out rows.csv]

With several seeds, each training seed's model is evaluated with that seed too (``--eval-seed same``,
the default), so the KMeans starts of every method change with it: the baselines get a mean over
seeds like the MMAE, and each seed's verdict compares methods of one evaluation. On 500 test digits
one KMeans draw of fused PCA moves by more than 0.2 ARI with the seed, so setting the MMAE's mean against
a single draw of the baselines (``--eval-seed fixed``) misleads either way.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]


def cli(db: Path, *args: str) -> str:
    env = {**os.environ, "MMAE_STUDIO_DB": str(db)}
    p = subprocess.run([sys.executable, "-m", "mmae_core", *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if p.returncode != 0:
        raise SystemExit(f"`mmae_core {' '.join(args)}` failed: {p.stderr.strip().splitlines()[-1]}")
    return p.stdout


def prepare(db: Path, name: str, tmp: Path) -> tuple[str, str]:
    """Register the dataset through the CLI; returns (dataset name, k grid)."""
    if name == "demo":
        cli(db, "demo", "--name", "demo")
        return "demo", "30,40,42,50,60"
    from mmae_core.data.realdata import REAL_SETS, write_real_folder

    if name in REAL_SETS:
        folder = write_real_folder(tmp / name, name=name)
        cli(db, "import", str(folder), "--name", name)
        return name, "6,8,10,12,15"
    raise SystemExit(f"unknown dataset {name}; use demo or one of {', '.join(REAL_SETS)}")


def verdict(df: pd.DataFrame) -> pd.DataFrame:
    """Per k: does the MMAE beat fused PCA and every unimodal baseline on ARI and NMI?"""
    rows = []
    for k, g in df.groupby("k"):
        m = g[g.method == "mmae"].iloc[0]
        base = g[~g.method.isin(["mmae", "mcca"])]
        rows.append({
            "k": k,
            "mmae_ari": m.ari, "best_baseline_ari": base.ari.max(), "mcca_ari": g[g.method == "mcca"].ari.max(),
            "mmae_nmi": m.nmi, "best_baseline_nmi": base.nmi.max(), "mcca_nmi": g[g.method == "mcca"].nmi.max(),
            "mmae_beats_baselines": bool(m.ari > base.ari.max() and m.nmi > base.nmi.max()),
            "mmae_beats_mcca": bool(m.ari > g[g.method == "mcca"].ari.max()),
        })
    return pd.DataFrame(rows)


def gap_interval(diff: np.ndarray) -> tuple[float, float, float]:
    """Mean per-seed difference and its 95% t-interval: whether a gap of a few hundredths is more than
    the seed-to-seed noise of KMeans on a few hundred test items. An interval across 0 is a tie at this
    number of seeds, whichever mean is higher."""
    mean = float(diff.mean())
    if len(diff) < 2:
        return mean, float("-inf"), float("inf")
    half = float(stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff)))
    return mean, mean - half, mean + half


def fused_gaps(allr: pd.DataFrame) -> dict[tuple[int, str], tuple[float, float, float]]:
    """(k, metric) -> the MMAE's mean per-seed gap to fused PCA (the best baseline on every set so far)
    and its 95% interval; seeds pair the two, since each seed also drives both methods' KMeans."""
    out = {}
    for k, g in allr.groupby("k"):
        m = g[g.method == "mmae"].set_index("seed").sort_index()
        f = g[g.method == "fused_pca"].set_index("seed").reindex(m.index)
        for metric in ("ari", "nmi"):
            out[(k, metric)] = gap_interval(m[metric].to_numpy() - f[metric].to_numpy())
    return out


def format_gap(mean: float, lo: float, hi: float) -> str:
    return f"{mean:+.3f}" if not np.isfinite(lo) else f"{mean:+.3f} ({lo:+.3f} to {hi:+.3f})"


def gap_tally(allr: pd.DataFrame) -> str:
    """One line per dataset: over every (k, metric) cell, where the MMAE is ahead of fused PCA (interval
    above 0), level (interval across 0) or behind (interval below 0)."""
    cells: dict[str, list[str]] = {"ahead": [], "level": [], "behind": []}
    for (k, metric), (_, lo, hi) in fused_gaps(allr).items():
        cells["ahead" if lo > 0 else "behind" if hi < 0 else "level"].append(f"{metric.upper()} k={k}")
    return "; ".join(f"{name} {len(v)}" + (f" ({', '.join(v)})" if v and name != "ahead" else "")
                     for name, v in cells.items())


def seed_summary(allr: pd.DataFrame) -> pd.DataFrame:
    """Per k: the MMAE's mean (min-max) ARI and NMI over the seeds beside the best baseline (fused PCA
    or a unimodal one, by its mean) and MCCA, and in how many seeds the MMAE beats every baseline of
    the same evaluation. One seed's verdict flips with the seed on small data; this says how often it
    holds, and the MMAE's gap to fused PCA (the best baseline on every set so far) with its 95% interval
    says whether it is more than noise. With a fixed evaluation seed the baselines' rows are the same in
    every seed."""
    rows = []
    gaps = fused_gaps(allr)
    for k, g in allr.groupby("k"):
        m = g[g.method == "mmae"].set_index("seed").sort_index()
        base = g[~g.method.isin(["mmae", "mcca"])]
        per_seed_best = base.groupby("seed")[["ari", "nmi"]].max().reindex(m.index)
        means = base.groupby("method")[["ari", "nmi"]].mean()
        mcca = g[g.method == "mcca"].set_index("seed").reindex(m.index)
        row: dict[str, object] = {"k": k}
        for metric in ("ari", "nmi"):
            v = m[metric].to_numpy()
            row[f"mmae {metric} mean (min-max)"] = f"{v.mean():.3f} ({v.min():.3f}-{v.max():.3f})"
            row[f"best baseline {metric} (mean)"] = f"{means[metric].max():.3f} ({means[metric].idxmax()})"
            row[f"seeds mmae > every baseline on {metric}"] = f"{int((v > per_seed_best[metric].to_numpy()).sum())}/{len(v)}"
        for metric in ("ari", "nmi"):
            row[f"mmae - fused_pca {metric} (95% CI)"] = format_gap(*gaps[(k, metric)])
        row["mcca ari / nmi (mean)"] = f"{mcca.ari.mean():.3f} / {mcca.nmi.mean():.3f}"
        row["seeds mmae > mcca on ari / nmi"] = (f"{int((m.ari.to_numpy() > mcca.ari.to_numpy()).sum())}/{len(m)} / "
                                                 f"{int((m.nmi.to_numpy() > mcca.nmi.to_numpy()).sum())}/{len(m)}")
        rows.append(row)
    return pd.DataFrame(rows)


def parse_seeds(text: str) -> list[int]:
    """``1,7`` or ``1..29`` (inclusive) or both mixed: thirty seeds should not need typing out."""
    out: list[int] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        lo, sep, hi = part.partition("..")
        out += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="demo,mfeat,mfeat-profile")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--n-init", type=int, default=None, help="KMeans starts (evaluate --n-init; default: the CLI's)")
    ap.add_argument("--extra-seeds", default="", help="more training seeds, e.g. 1,7 or 1..29: prints how the verdict moves with the seed")
    ap.add_argument("--rows-out", type=Path, default=None,
                    help="also write every evaluated row (dataset, seed, method, k, metrics) to this CSV")
    ap.add_argument("--eval-seed", choices=("fixed", "same"), default="same",
                    help="fixed: evaluate every model with --seed; same: with its own training seed, so the "
                         "baselines' KMeans starts vary with the seed too")
    args = ap.parse_args()
    seeds = [args.seed, *parse_seeds(args.extra_seeds)]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"preset {args.preset}, {args.epochs} epochs, seeds {seeds}, KMeans starts {args.n_init or 'default'}, "
          f"evaluation seed {args.seed if args.eval_seed == 'fixed' else 'the training seed'}")
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        db = tmp / "quality.duckdb"
        collected: list[pd.DataFrame] = []
        for name in args.datasets.split(","):
            ds, ks = prepare(db, name.strip(), tmp)
            per_seed = []
            for seed in seeds:
                t0 = time.perf_counter()
                cli(db, "train", "--dataset", ds, "--preset", args.preset, "--epochs", str(args.epochs),
                    "--seed", str(seed), "--model-name", f"bench-s{seed}")
                train_s = time.perf_counter() - t0
                more = [] if args.n_init is None else ["--n-init", str(args.n_init)]
                more += ["--seed", str(args.seed if args.eval_seed == "fixed" else seed)]
                rows = pd.DataFrame(json.loads(cli(db, "evaluate", "--dataset", ds, "--model", f"bench-s{seed}", "--k", ks,
                                                   *more, "--format", "json")))
                per_seed.append(rows.assign(seed=seed))
                print(f"\n## {ds}, training seed {seed} (test split; training took {train_s:.0f} s wall, CLI included)")
                wide = rows.pivot_table(index="method", columns="k", values=["ari", "nmi", "silhouette"])
                with pd.option_context("display.width", 200, "display.max_columns", 40, "display.float_format", "{:.3f}".format):
                    if seed == seeds[0]:
                        for metric in ("ari", "nmi", "silhouette"):
                            print(f"\n{metric.upper()}")
                            print(wide[metric].to_string())
                    print("\nverdict")
                    print(verdict(rows).to_string(index=False))
            allr = pd.concat(per_seed).assign(dataset=ds)
            collected.append(allr)
            if len(seeds) > 1:
                mm = allr[allr.method == "mmae"].pivot_table(index="k", columns="seed", values=["ari", "nmi"])
                mm.columns = [f"mmae_{metric}_s{seed}" for metric, seed in mm.columns]
                fp = allr[allr.method == "fused_pca"].pivot_table(index="k", columns="seed", values=["ari", "nmi"])
                fp.columns = [f"fused_pca_{metric}_s{seed}" for metric, seed in fp.columns]
                if args.eval_seed == "fixed":  # one column per metric: every seed evaluated the baselines alike
                    fp = fp[[f"fused_pca_{metric}_s{seeds[0]}" for metric in ("ari", "nmi")]]
                print(f"\n## {ds}: MMAE by seed beside fused PCA")
                with pd.option_context("display.width", 250, "display.max_columns", 80, "display.float_format", "{:.3f}".format):
                    print(mm.join(fp).to_string())
                print(f"\n## {ds}: over {len(seeds)} seeds"
                      + (" (the baselines have no training seed and one evaluation seed)" if args.eval_seed == "fixed"
                         else " (each seed also drives every method's KMeans starts)"))
                print(seed_summary(allr).to_string(index=False))
                print(f"MMAE against fused PCA over k x (ARI, NMI), by 95% interval: {gap_tally(allr)}")
            if args.rows_out is not None:  # after every dataset, so a long run's finished sets are kept
                pd.concat(collected).to_csv(args.rows_out, index=False)

if __name__ == "__main__":
    main()
