"""Clustering quality of the MMAE against every baseline, on the demo and on a real feature set.

Runs the public command line exactly as a user would (``demo`` / ``import``, ``train``, ``evaluate
--format json``) against a fresh store in a temporary folder, then prints one table per dataset:
ARI / NMI / Silhouette per method and k, and whether the MMAE beats fused PCA and every unimodal
baseline at every k (the spine issue's bar). ``mcca`` is printed beside them, win or lose.

    .venv/bin/python benchmarks/quality.py [--epochs 100] [--datasets demo,mfeat,mfeat-profile] [--preset paper]
        [--extra-seeds 1,2,3] [--n-init 10]
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

import pandas as pd

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
    from mmae_core.realdata import REAL_SETS, write_real_folder

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


def seed_summary(allr: pd.DataFrame) -> pd.DataFrame:
    """Per k: the MMAE's mean (min-max) ARI and NMI over the training seeds beside the best baseline
    (fused PCA or a unimodal one) and MCCA, and in how many seeds the MMAE beats the best baseline.
    One seed's verdict flips with the seed on small data; this says how often it holds."""
    rows = []
    for k, g in allr.groupby("k"):
        m = g[g.method == "mmae"].sort_values("seed")
        base = g[~g.method.isin(["mmae", "mcca"])].groupby("method")[["ari", "nmi"]].first()
        mcca = g[g.method == "mcca"].iloc[0]
        row: dict[str, object] = {"k": k}
        for metric in ("ari", "nmi"):
            v, best = m[metric].to_numpy(), float(base[metric].max())
            row[f"mmae {metric} mean (min-max)"] = f"{v.mean():.3f} ({v.min():.3f}-{v.max():.3f})"
            row[f"best baseline {metric}"] = f"{best:.3f} ({base[metric].idxmax()})"
            row[f"seeds mmae > baseline on {metric}"] = f"{int((v > best).sum())}/{len(v)}"
        row["mcca ari / nmi"] = f"{mcca.ari:.3f} / {mcca.nmi:.3f}"
        row["seeds mmae > mcca on ari / nmi"] = (f"{int((m['ari'].to_numpy() > mcca.ari).sum())}/{len(m)} / "
                                                 f"{int((m['nmi'].to_numpy() > mcca.nmi).sum())}/{len(m)}")
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="demo,mfeat,mfeat-profile")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--n-init", type=int, default=None, help="KMeans starts (evaluate --n-init; default: the CLI's)")
    ap.add_argument("--extra-seeds", default="", help="more training seeds, e.g. 1,7: prints how the verdict moves with the seed")
    args = ap.parse_args()
    seeds = [args.seed, *[int(s) for s in args.extra_seeds.split(",") if s.strip()]]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"preset {args.preset}, {args.epochs} epochs, seeds {seeds}, KMeans starts {args.n_init or 'default'}")
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        db = tmp / "quality.duckdb"
        for name in args.datasets.split(","):
            ds, ks = prepare(db, name.strip(), tmp)
            per_seed = []
            for seed in seeds:
                t0 = time.perf_counter()
                cli(db, "train", "--dataset", ds, "--preset", args.preset, "--epochs", str(args.epochs),
                    "--seed", str(seed), "--model-name", f"bench-s{seed}")
                train_s = time.perf_counter() - t0
                more = [] if args.n_init is None else ["--n-init", str(args.n_init)]
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
            if len(seeds) > 1:
                allr = pd.concat(per_seed)
                mm = allr[allr.method == "mmae"].pivot_table(index="k", columns="seed", values=["ari", "nmi"])
                mm.columns = [f"mmae_{metric}_s{seed}" for metric, seed in mm.columns]
                base = allr[(allr.method == "fused_pca") & (allr.seed == seeds[0])].set_index("k")[["ari", "nmi"]]
                print(f"\n## {ds}: MMAE by training seed beside fused PCA (which has no training seed)")
                with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
                    print(mm.join(base.add_prefix("fused_pca_")).to_string())
                print(f"\n## {ds}: over {len(seeds)} training seeds (the baselines have none)")
                print(seed_summary(allr).to_string(index=False))

if __name__ == "__main__":
    main()
