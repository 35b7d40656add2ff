"""Where search should compare: class P@10 and instance R@10 of the default model in every search space.

For each dataset and seed it trains the default preset into a temporary store as ``train`` does
(``pipeline.train_and_register``, with the epochs ``train`` gives it) and measures ``search-eval`` on the test
split in each space (``studio.search.SPACES``: ``tags``, ``shared``, ``latent``) under cosine, plus the
supervised search (``--baseline supervised``: what the labels allow). It prints, per space, the worst
modality pair's class P@10, the mean over pairs, the largest shortfall to the supervised search on any
pair, and the mean instance R@10 (the same item's other modality among the first 10), each as
mean ± 95% interval over seeds.

    .venv/bin/python benchmarks/search_spaces.py --datasets demo --scale 0.2 --seeds 1..5
    .venv/bin/python benchmarks/search_spaces.py --datasets mfeat,mfeat-karhunen --seeds 1..3
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from archive_common import machine  # noqa: E402
from compare_methods import fmt_ci  # noqa: E402
from quality import parse_seeds  # noqa: E402
from retrieval import md  # noqa: E402


def load(name: str, scale: float):
    from mmae_core.data.demo import make_demo
    from mmae_core.data.realdata import make_real

    return make_demo("demo", seed=42, scale=scale) if name == "demo" else make_real(name)


def one_seed(fs, seed: int) -> dict[str, dict[str, float]]:
    from mmae_core.config import DEFAULT_PRESET, preset
    from store import Store
    from studio.pipeline import train_and_register
    from studio.search import FUSED, SPACES, search_eval

    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as t:
        store = Store(Path(t) / "s.duckdb")
        store.add_dataset(fs)
        train_and_register(store, fs.name, preset(DEFAULT_PRESET, seed=seed), model_name="m")
        sup = None
        for space in SPACES:
            tab = search_eval(store, fs.name, "m", "test", metric="cosine", space=space,
                              baseline=None if sup is not None else "supervised")
            if sup is None:
                sup = tab[tab.method == "supervised"].set_index(["query", "target"])["p_at_10"]
            mine = tab[(tab.method == "mmae") & (tab["query"] != FUSED)].set_index(["query", "target"])
            gap = (sup - mine["p_at_10"].reindex(sup.index)).max()
            out[space] = {"worst P@10": float(mine["p_at_10"].min()), "mean P@10": float(mine["p_at_10"].mean()),
                          "largest shortfall to supervised": float(gap),
                          "mean R@10": float(mine["recall_at_10"].mean()) if "recall_at_10" in mine else float("nan")}
        out["supervised"] = {"worst P@10": float(sup.min()), "mean P@10": float(sup.mean()),
                             "largest shortfall to supervised": 0.0, "mean R@10": float("nan")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="demo")
    ap.add_argument("--scale", type=float, default=0.2, help="the demo's scale (real sets are used whole)")
    ap.add_argument("--seeds", type=parse_seeds, default=[1, 2, 3])
    args = ap.parse_args()
    print(f"machine: {machine()}; seeds {args.seeds}")
    for name in args.datasets.split(","):
        fs = load(name, args.scale)
        runs = []
        for seed in args.seeds:
            runs.append(one_seed(fs, seed))
            print(f"  {name} seed {seed} done", file=sys.stderr, flush=True)
        rows = []
        for space in runs[0]:
            row = {"space": space}
            for col in runs[0][space]:
                v = np.array([r[space][col] for r in runs])
                row[col] = "–" if np.isnan(v).all() else fmt_ci(v)
            rows.append(row)
        n = fs.splits["train"].n
        print(f"\n## {name}{f' (scale {args.scale:g})' if name == 'demo' else ''}: {n:,} train items, "
              f"test split, cosine, {len(runs)} seeds, mean ± 95% interval")
        print(md(pd.DataFrame(rows)))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
