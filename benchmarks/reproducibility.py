"""Same seed, data and config → the same latents and metrics on the CPU (non-negotiable 5).

Trains the MMAE twice on the demo with one seed (and once with another), evaluates each on the test
split, and prints whether latents and the metric table are bit-identical.

    .venv/bin/python benchmarks/reproducibility.py [--epochs 5] [--scale 1.0] [--parallel modalities|ops|both]

Each thread plan (``TrainConfig.parallel``) is checked on its own: the plans round differently, so
a seed reproduces a model with the same plan, not across plans.
"""
from __future__ import annotations

import argparse
import hashlib
import time

import numpy as np
import pandas as pd

from mmae_core.config import EvalConfig, preset
from mmae_core.demo import make_demo
from mmae_core.evaluate import evaluate_grid
from mmae_core.standardize import Standardizer
from mmae_core.train import encode, train


def run(fs: object, seed: int, epochs: int, parallel: str) -> tuple[np.ndarray, pd.DataFrame, float]:
    t0 = time.perf_counter()
    tm = train(fs, preset("paper", epochs=epochs, seed=seed, device="cpu", parallel=parallel))
    fused, _ = encode(tm, fs.splits["test"].features)
    std = Standardizer.fit(fs.splits["train"].features)
    table = evaluate_grid(std.transform(fs.splits["train"].features), std.transform(fs.splits["test"].features),
                          fs.splits["test"].labels, fused, EvalConfig(k_grid=(30, 50)))
    return fused, table[["method", "k", "silhouette", "ari", "nmi"]], time.perf_counter() - t0


def digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--parallel", choices=("modalities", "ops", "both"), default="both")
    args = ap.parse_args()
    fs = make_demo(seed=42, scale=args.scale)
    ok = True
    for plan in ("modalities", "ops") if args.parallel == "both" else (args.parallel,):
        rows = []
        results = {}
        for label, seed in (("run A", 42), ("run B", 42), ("run C", 7)):
            z, table, secs = run(fs, seed, args.epochs, plan)
            results[label] = (z, table)
            rows.append({"plan": plan, "run": label, "seed": seed, "latents sha256": digest(z),
                         "mmae ARI k=50": float(table.query("method == 'mmae' and k == 50").ari.iloc[0]), "seconds": round(secs, 1)})
        print(pd.DataFrame(rows).to_string(index=False))
        same_z = np.array_equal(results["run A"][0], results["run B"][0])
        same_m = results["run A"][1].equals(results["run B"][1])
        diff_seed = not np.array_equal(results["run A"][0], results["run C"][0])
        print(f"parallel={plan}: same seed → identical latents: {same_z}; identical metric table: {same_m}; other seed differs: {diff_seed}\n")
        ok = ok and same_z and same_m and diff_seed
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
