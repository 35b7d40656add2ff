"""How many epochs the default preset should train for, by the size of the train split.

For each set and seed it trains the given preset (default: ``config.DEFAULT_PRESET``) at each number
of epochs and cuts the test latents as ``propose`` does at the class count (spectral clustering on the
latents' 15-NN graph), then prints the ARI per set and number of epochs (mean ± 95% interval over
seeds) with the train split's size, which number of epochs is best per set, and how many the
default gives that split (``config.sized_epochs``). The sets: the real
digits (``mfeat``, ``mfeat-karhunen``, 1,500 train items) and the synthetic demo at two scales
(``demo@0.07``: 1,450 train items; ``demo@0.3``: 6,300), so the size of the split and the kind of
data can be told apart.

    .venv/bin/python benchmarks/epochs.py --seeds 1..10
    .venv/bin/python benchmarks/epochs.py --sets mfeat,demo@0.07 --epochs 10,20,100 --seeds 1,2
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from archive_common import config, fit, machine  # noqa: E402
from compare_methods import cut, fmt_ci  # noqa: E402
from quality import parse_seeds  # noqa: E402
from retrieval import md  # noqa: E402

from mmae_core.config import DEFAULT_PRESET, sized_epochs  # noqa: E402
from mmae_core.data.demo import make_demo  # noqa: E402
from mmae_core.data.realdata import make_real  # noqa: E402
from mmae_core.model.train import encode  # noqa: E402


def load(name: str, seed: int):
    """``mfeat…`` (a real set, in the tool's own split: the seed varies the training, as in
    compare_methods.py) or ``demo@SCALE`` (drawn with the seed)."""
    if name.startswith("demo@"):
        return make_demo("demo", seed=seed, scale=float(name.split("@", 1)[1]))
    return make_real(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="mfeat,mfeat-karhunen,demo@0.07,demo@0.3")
    ap.add_argument("--epochs", default="10,20,40,100")
    ap.add_argument("--seeds", default="1..5")
    ap.add_argument("--preset", default=DEFAULT_PRESET)
    a = ap.parse_args()
    seeds, grid = parse_seeds(a.seeds), [int(e) for e in a.epochs.split(",")]
    print(f"machine: {machine()}; preset {a.preset}; seeds {seeds}; epochs {grid}")
    rows = []
    for name in a.sets.split(","):
        for seed in seeds:
            fs = load(name.strip(), seed)
            te = fs.splits["test"]
            k = len(set(te.labels.astype(str)))
            for ep in grid:
                tm, sec = fit(fs, config(a.preset, ep, seed))
                z, _ = encode(tm, te.features)
                rows.append({"set": name, "train items": fs.splits["train"].n, "epochs": ep, "seed": seed,
                             "ari": cut(z, te.labels, k, seed)["spectral"][0], "s": sec})
            print(f"  {name} seed {seed} done", file=sys.stderr, flush=True)
    df = pd.DataFrame(rows)
    out = []
    for name, g in df.groupby("set", sort=False):
        n = int(g["train items"].iloc[0])
        row = {"set": name, "train items": f"{n:,}"}
        means = {}
        for ep, h in g.groupby("epochs"):
            row[f"{ep} epochs"] = fmt_ci(h.ari.to_numpy())
            means[ep] = h.ari.mean()
        row["best"] = max(means, key=means.get)
        row["default's epochs"] = sized_epochs(config(a.preset, None), n)
        out.append(row)
    print("\nARI at the class count (spectral), mean ± 95% interval over seeds:")
    print(md(pd.DataFrame(out)))


if __name__ == "__main__":
    main()
