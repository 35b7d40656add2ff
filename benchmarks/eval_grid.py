"""Time the full evaluation grid on a demo-sized test split (target < 15 s, aim 5 s).

Full grid: 3 unimodal PCAs + fused PCA + MCCA + MMAE, k in {30, 40, 42, 50, 60}, 4,200 test items,
every metric. The data are the built-in demo (``mmae_core.data.demo.make_demo``: train 21,000 / test
4,200, image 50 / audio 1,024 / text 768, 50 classes) standardized on train, with random 128-d
"latents" standing in for a trained MMAE (random latents have no cluster structure, so KMeans needs
the most iterations on them: a worst case for time). ``--random`` uses random features of the same
shape instead of the demo.

Prints the median wall and CPU time of ``--runs`` runs, the per-method share of the work (seconds
summed over worker threads, from the table's ``attrs['timings']``), the MCCA fit alone (target < 1 s),
the load average (on a shared machine a busy neighbour stretches wall time; CPU time is the steadier
figure, and wall time on idle cores is about CPU time / cores), and whether the runs gave identical
tables.

    .venv/bin/python benchmarks/eval_grid.py [--runs 3] [--random] [--scale 1.0] [--n-init 4]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmae_core.config import EvalConfig  # noqa: E402
from mmae_core.evaluation.evaluate import evaluate_grid  # noqa: E402
from mmae_core.evaluation.mcca import MCCA  # noqa: E402
from mmae_core.model.standardize import Standardizer  # noqa: E402

DIMS = {"image": 50, "audio": 1024, "text": 768}


def demo_data(scale: float) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, str]:
    from mmae_core.data.demo import make_demo

    fs = make_demo(seed=42, scale=scale)
    std = Standardizer.fit(fs.splits["train"].features)
    test = fs.splits["test"]
    return std.transform(fs.splits["train"].features), std.transform(test.features), test.labels, "demo (make_demo, seed 42)"


def random_data(scale: float) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, str]:
    rng = np.random.default_rng(0)
    n_tr, n_te = int(21_000 * scale), int(4_200 * scale)
    train = {m: rng.standard_normal((n_tr, d), dtype=np.float32) for m, d in DIMS.items()}
    test = {m: rng.standard_normal((n_te, d), dtype=np.float32) for m, d in DIMS.items()}
    labels = np.array([f"class{i % 50:02d}" for i in range(n_te)], dtype=object)
    return train, test, labels, "random features of the demo's shape"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--random", action="store_true", help="random features instead of the demo")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the demo size")
    ap.add_argument("--n-init", type=int, default=None, help="KMeans starts (default: EvalConfig's)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    train, test, labels, what = (random_data if args.random else demo_data)(args.scale)
    n_test = next(iter(test.values())).shape[0]
    latents = np.random.default_rng(1).standard_normal((n_test, 128)).astype(np.float32)
    print(f"data: {what}; train {next(iter(train.values())).shape[0]:,} / test {n_test:,} items, "
          f"dims {', '.join(f'{m} {x.shape[1]}' for m, x in train.items())}; prepared in {time.perf_counter() - t0:.1f} s")
    cfg = EvalConfig() if args.n_init is None else EvalConfig(n_init=args.n_init)
    print(f"grid: k {list(cfg.k_grid)}, n_init {cfg.n_init}, seed {cfg.seed}; {os.cpu_count()} cores; "
          f"load average before: {os.getloadavg()[0]:.2f}")

    mcca_times, mcca_cpu = [], []
    for _ in range(3):
        t, c = time.perf_counter(), time.process_time()
        MCCA(n_components=cfg.mcca_dim, reg=cfg.mcca_reg).fit(train)
        mcca_times.append(time.perf_counter() - t)
        mcca_cpu.append(time.process_time() - c)

    tables: list[pd.DataFrame] = []
    walls: list[float] = []
    cpus: list[float] = []
    for i in range(max(1, args.runs)):
        w, c = time.perf_counter(), time.process_time()
        tables.append(evaluate_grid(train, test, labels, latents, cfg))
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
        print(f"  run {i + 1}: {walls[-1]:.2f} s wall, {cpus[-1]:.2f} s CPU")

    med = int(np.argsort(walls)[len(walls) // 2])
    timings = tables[med].attrs["timings"]
    work = sum(timings.values())
    share = pd.DataFrame(
        {"method": list(timings), "seconds_of_work": [round(v, 2) for v in timings.values()],
         "share": [f"{v / work:.0%}" for v in timings.values()]}
    )
    print("\nper method (median run; work summed over threads, includes fit, KMeans, metrics):")
    print(share.to_string(index=False))
    identical = all(t.equals(tables[0]) for t in tables[1:])
    print(f"\nevaluate_grid median: {statistics.median(walls):.2f} s wall ({statistics.median(cpus):.2f} s CPU) over {len(walls)} runs")
    n_train = next(iter(train.values())).shape[0]
    print(f"MCCA fit alone ({n_train:,} x {sum(x.shape[1] for x in train.values())}) median: "
          f"{statistics.median(mcca_times):.2f} s wall ({statistics.median(mcca_cpu):.2f} s CPU)")
    print(f"identical tables across runs: {identical}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    pd.set_option("display.width", 160)
    print("\nmetrics (median run):")
    print(tables[med].drop(columns=["note", "split"]).round(3).to_string(index=False))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
