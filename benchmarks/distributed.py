"""Data-parallel training: one process against N processes under torchrun, same budget, several seeds.

Builds the synthetic demo in a fresh store (``demo`` command), then for each seed trains with the
public command line twice with the same preset, seed and ``--samples`` budget (so the same number of
items is seen in all): once as one plain process, once as ``torchrun --standalone --nproc_per_node
N -m mmae_core train``. Each model's fused test latents are clustered by KMeans at the class count
and scored with ARI and NMI; prints per-run rows, then the mean of each setting and of the per-seed
difference (N processes minus one) with 95% t-intervals, and the wall time of each command.

    .venv/bin/python benchmarks/distributed.py [--seeds 1..3] [--scale 0.25] [--samples 105000]
        [--nproc 2] [--preset reliability] [--keep DIR]

Wall time includes starting Python and torch in every process; ``train_seconds`` is the training
itself as rank 0 measured it. On a machine with fewer free cores than processes, N processes are not
faster: they share the cores and add a gradient all-reduce per step.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import gap_interval, parse_seeds  # noqa: E402  (one interval rule for every benchmark)


def cli(*args: str, nproc: int = 1) -> tuple[dict, float]:
    """Run ``python -m mmae_core ARGS`` (under torchrun with ``nproc`` > 1); its JSON and wall seconds."""
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    "--nproc_per_node", str(nproc)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    p = subprocess.run([*launcher, "-m", "mmae_core", *args, "--format", "json"], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(args[:1])} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(p.stdout), wall


def score(db: Path, dataset: str, model: str, seed: int = 0, split: str = "test", n_init: int = 4) -> dict[str, float]:
    """ARI and NMI of KMeans at the class count on a model's fused latents of ``split`` (store read-only)."""
    from mmae_core.evaluation.evaluate import kmeans_labels
    from mmae_core.evaluation.metrics import external_scores
    from store import Store

    store = Store(db, read_only=True, create=False)
    labels = np.asarray(store.load_dataset(dataset, lazy=True).splits[split].labels)
    _, z = store.latents(dataset, model, split, "fused")
    k = len(np.unique(labels))
    ari, nmi = external_scores(labels, kmeans_labels(z, k, n_init, seed))
    return {"k": k, "ari": ari, "nmi": nmi}


def train(db: Path, dataset: str, preset: str, seed: int, samples: int, nproc: int) -> dict:
    name = f"p{nproc}-s{seed}"
    out, wall = cli("train", "--db", str(db), "--dataset", dataset, "--preset", preset, "--seed", str(seed),
                    "--samples", str(samples), "--device", "cpu", "--model-name", name, nproc=nproc)
    return {"processes": nproc, "seed": seed, "model": name, "wall_s": wall, "train_s": out["train_seconds"],
            **score(db, dataset, name, seed)}


def interval(v: np.ndarray) -> str:
    mean, lo, hi = gap_interval(np.asarray(v, dtype=float))
    return f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]" if np.isfinite(lo) else f"{mean:+.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1..3")
    ap.add_argument("--scale", type=float, default=0.25, help="demo size (1.0: 21,000 train items)")
    ap.add_argument("--samples", type=int, default=105_000, help="items seen in all, per run (20 epochs at scale 0.25)")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--preset", default="reliability")
    ap.add_argument("--keep", help="build the store in this folder and keep it")
    args = ap.parse_args()
    seeds = parse_seeds(args.seeds)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        db = folder / "distributed.duckdb"
        cli("demo", "--db", str(db), "--scale", str(args.scale), "--replace")
        rows = []
        for seed in seeds:
            for nproc in (1, args.nproc):
                rows.append(train(db, "demo", args.preset, seed, args.samples, nproc))
                print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1, float_format=lambda x: f"{x:.3f}"),
                      file=sys.stderr, flush=True)
    df = pd.DataFrame(rows)
    print(f"\ndemo scale {args.scale}, preset {args.preset}, {args.samples:,} samples per run, seeds {args.seeds}, "
          f"{os.cpu_count()} cores")
    print(df.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    one, many = df[df.processes == 1].set_index("seed"), df[df.processes == args.nproc].set_index("seed")
    summary = []
    for col in ("ari", "nmi", "train_s", "wall_s"):
        summary.append({"measure": col, "1 process": interval(one[col]), f"{args.nproc} processes": interval(many[col]),
                        "difference": interval((many[col] - one[col]).to_numpy())})
    print("\nmean [95% t-interval over seeds]; difference = N processes minus 1, per seed")
    print(pd.DataFrame(summary).to_string(index=False))


if __name__ == "__main__":
    main()
