"""How well the disagreement score finds items whose modalities do not belong together.

Protocol: train on the clean train split; in the test split, 10% of the items (seeded) get one
modality (drawn uniformly) replaced by that modality of a test item of another class. Every test
item is then encoded and scored with ``mmae_core.archive.conflicts``; the swapped items should rank first.
Reported: AUROC of swapped against untouched items, precision at n (n = the number swapped), and
the AUROC per swapped modality (a swap of a weak modality is harder to see). The reference groups
are KMeans clusters of the train latents, k = the number of classes (``archive.reference_groups``
before any tag is accepted).

    python benchmarks/conflicts.py --scale 0.2                 # demo scaled down + mfeat, paper and aligned
"""
from __future__ import annotations

import argparse
from functools import partial

import numpy as np

from archive_common import config, dataset, fit, fmt, machine, train_clusters

from mmae_core.archive.conflicts import METHODS, NEEDS_TAGS, fit_reference, score
from mmae_core.search.spaces import TagSpace, fit_tag_space
from mmae_core.data.dataset import Split
from mmae_core.archive.novelty import auroc
from mmae_core.model.train import encode, fuse_latents


def swap(sp: Split, frac: float, rng: np.random.Generator) -> tuple[Split, np.ndarray, np.ndarray]:
    """A copy of ``sp`` where ``frac`` of the items carry one modality of an item of another class.
    Returns (split, swapped mask, index of the swapped modality or -1)."""
    mods = list(sp.features)
    n = sp.n
    labels = sp.labels.astype(str)
    rows = rng.choice(n, size=max(1, int(round(frac * n))), replace=False)
    which = np.full(n, -1)
    feats = {m: x.copy() for m, x in sp.features.items()}
    for i in rows:
        j = int(rng.integers(len(mods)))
        donors = np.flatnonzero((labels != labels[i]) & ~np.isnan(sp.features[mods[j]]).all(axis=1))
        d = int(rng.choice(donors))
        feats[mods[j]][i] = sp.features[mods[j]][d]
        which[i] = j
    return Split(sp.item_ids, feats, sp.labels, sp.meta), which >= 0, which


def precision_at(scores: np.ndarray, positive: np.ndarray) -> float:
    n = int(positive.sum())
    top = np.argsort(-scores, kind="mergesort")[:n]
    return float(positive[top].mean())


def supervised(fs, swapped: Split, pos: np.ndarray, seed: int) -> float:
    """AUROC of a swap detector given the train labels: per modality a classifier of the classes
    (``search.supervised.class_posteriors``), and the largest ``1 - overlap`` between one modality's
    class probabilities and the mean of the others' (``conflicts.tag_disagreement`` with classes for
    tags). What labels allow on the same swaps."""
    from mmae_core.archive.conflicts import tag_disagreement
    from mmae_core.model.standardize import Standardizer
    from mmae_core.search.supervised import class_posteriors

    tr = fs.splits["train"]
    std = Standardizer.fit(tr.features)
    post = class_posteriors(std.transform(tr.features), tr.labels, std.transform(swapped.features), seed=seed)
    s = tag_disagreement(post, lambda m, _z: post[m])
    return auroc(s[~pos], s[pos])


def run(tm, fs, k: int, rng: np.random.Generator, frac: float, with_labels: bool = False,
        space: TagSpace | None = None) -> dict[str, dict[str, float]]:
    """Every score's AUROC (and, ``with_labels``, the labelled detector's: ``supervised``). ``space``:
    the model's tag space when the caller has fitted it (else it is fitted here)."""
    tr = fs.splits["train"]
    z_tr, per_tr = encode(tm, tr.features)
    _, assign = train_clusters(z_tr, k)
    fuse = partial(fuse_latents, tm)
    if space is None:  # what search and conflicts use (studio.search.tag_space)
        space = fit_tag_space(per_tr, z_tr, seed=tm.config.seed)
    tags = None if space is None else space.probabilities
    ref = fit_reference(per_tr, assign, [str(c) for c in range(k)], "train clusters", fuse, tags)
    sw, pos, which = swap(fs.splits["test"], frac, rng)
    _, per = encode(tm, sw.features)
    out = {}
    for method in METHODS:
        if method in NEEDS_TAGS and tags is None:
            continue
        s, _ = score(ref, per, method, fuse, tags)
        res = {"auroc": auroc(s[~pos], s[pos]), "p@n": precision_at(s, pos)}
        for j, m in enumerate(sw.features):
            res[f"auroc {m}"] = auroc(s[~pos], s[which == j])
        out[method] = res
    if with_labels:
        out["with labels"] = {"auroc": supervised(fs, sw, pos, tm.config.seed)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="demo,mfeat")
    ap.add_argument("--presets", default="paper,aligned")
    ap.add_argument("--scale", type=float, default=0.2)
    ap.add_argument("--epochs", type=int, default=None, help="default: what train runs on the split (config.sized_epochs)")
    ap.add_argument("--frac", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    print(f"machine: {machine()}")
    rows = []
    for dname in a.datasets.split(","):
        fs = dataset(dname, a.scale, a.seed)
        k = len(set(fs.splits["train"].labels.astype(str)))
        for pname in a.presets.split(","):
            cfg = config(pname, a.epochs, a.seed, fs.splits["train"].n)
            tm, sec = fit(fs, cfg)
            res = run(tm, fs, k, np.random.default_rng(a.seed), a.frac)
            for method, r in res.items():
                rows.append((dname, pname, method, r, sec))
                print(f"  {dname} {pname} {method}: " + ", ".join(f"{key} {v:.3f}" for key, v in r.items()), flush=True)
    print()
    for dname in a.datasets.split(","):
        mods = [key[6:] for key in rows[[r[0] for r in rows].index(dname)][3] if key.startswith("auroc ")]
        label = f"demo (scale {a.scale:g})" if dname == "demo" else dname
        print(f"{label}, {int(a.frac * 100)}% of test items with one modality swapped:")
        print("| preset | score | AUROC | precision@n | " + " | ".join(f"AUROC, {m} swapped" for m in mods) + " | train s |")
        print("|---|---|---|---|" + "---|" * len(mods) + "---|")
        for d, pname, method, r, sec in rows:
            if d == dname:
                print(f"| {pname} | {method} | {fmt(r['auroc'])} | {fmt(r['p@n'])} | "
                      + " | ".join(fmt(r[f'auroc {m}']) for m in mods) + f" | {sec:.0f} |")
        print()


if __name__ == "__main__":
    main()
