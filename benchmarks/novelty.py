"""AUROC of the novelty score, measured two ways.

1. **OOD split**: test items (normal) against the OOD split (novel). The demo only; the UCI digits
   have no OOD split.
2. **Held-out classes**: two classes are removed from the train split, the model is trained without
   them, and their *test* items (novel) are scored against the test items of the other classes. This
   is the curator's case: new material of a kind the archive has not seen. Repeated for ``--pairs``
   seeded draws of the two classes; the table shows the mean (and the min-max range).

The reference groups are KMeans clusters of the train latents with k = the number of train classes
(what ``archive.reference_groups`` uses before any tag is accepted). Every combination of the two
signals in ``mmae_core.archive.novelty`` is scored on the same items, so the table is what chose the default.

    python benchmarks/novelty.py --scale 0.2 --pairs 2            # demo scaled down + mfeat
    python benchmarks/novelty.py --datasets mfeat --pairs 5
"""
from __future__ import annotations

import argparse

import numpy as np

from archive_common import config, dataset, fit, fmt, hold_out, machine, train_clusters

from mmae_core.archive.novelty import COMBINATIONS, auroc, combine, fit_reference, parts
from mmae_core.model.train import encode, reconstruction_error


def scores(tm, fs, splits: list[str], k: int, train_set=None) -> dict[str, dict[str, np.ndarray]]:
    """Per split of ``fs``, every combination's scores; the reference is the train split the model
    was trained on (``train_set``, default ``fs``)."""
    tr = (train_set or fs).splits["train"]
    z_tr, _ = encode(tm, tr.features)
    cents, assign = train_clusters(z_tr, k)
    ref = fit_reference(reconstruction_error(tm, tr.features), z_tr, cents, [str(i) for i in range(k)], "train clusters",
                        member_z=z_tr, member_assign=assign)
    out = {}
    for s in splits:
        sp = fs.splits[s]
        z, _ = encode(tm, sp.features)
        p = parts(ref, reconstruction_error(tm, sp.features), z)
        out[s] = {how: combine(ref, p, how) for how in COMBINATIONS}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="demo,mfeat")
    ap.add_argument("--presets", default="paper")
    ap.add_argument("--scale", type=float, default=0.2, help="demo scale (1 = LUMA-sized)")
    ap.add_argument("--epochs", type=int, default=None, help="default: what train runs on the split (config.sized_epochs)")
    ap.add_argument("--pairs", type=int, default=2, help="held-out class pairs per dataset")
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    print(f"machine: {machine()}")
    rows = []
    for dname in a.datasets.split(","):
        fs = dataset(dname, a.scale, a.seed)
        classes = sorted(set(fs.splits["train"].labels.astype(str)))
        for pname in a.presets.split(","):
            cfg = config(pname, a.epochs, a.seed, fs.splits["train"].n)
            if "ood" in fs.splits:
                tm, sec = fit(fs, cfg)
                sc = scores(tm, fs, ["test", "ood"], len(classes))
                rows.append((dname, pname, "test vs ood", {h: auroc(sc["test"][h], sc["ood"][h]) for h in COMBINATIONS}, sec))
                print(f"  {dname} {pname} ood done ({sec:.0f} s train)", flush=True)
            rng = np.random.default_rng(a.seed)
            held: list[dict[str, float]] = []
            secs = 0.0
            for r in range(a.pairs):
                out = [str(c) for c in rng.choice(classes, size=2, replace=False)]
                seen = hold_out(fs, out)
                tm, sec = fit(seen, cfg)
                secs += sec
                sc = scores(tm, fs, ["test"], len(classes) - 2, train_set=seen)
                novel = np.isin(fs.splits["test"].labels.astype(str), out)
                held.append({h: auroc(sc["test"][h][~novel], sc["test"][h][novel]) for h in COMBINATIONS})
                print(f"  {dname} {pname} held out {out}: " + ", ".join(f"{h} {v:.3f}" for h, v in held[-1].items()), flush=True)
            if held:
                mean = {h: float(np.mean([x[h] for x in held])) for h in COMBINATIONS}
                rng_txt = {h: f"{min(x[h] for x in held):.3f}-{max(x[h] for x in held):.3f}" for h in COMBINATIONS}
                rows.append((dname, pname, f"2 classes held out (mean of {a.pairs})", mean, secs / a.pairs, rng_txt))
    print()
    print(f"| dataset | preset | novel items | " + " | ".join(COMBINATIONS) + " | train s |")
    print("|---|---|---|" + "---|" * len(COMBINATIONS) + "---|")
    for row in rows:
        dname, pname, way, au, sec = row[:5]
        extra = row[5] if len(row) > 5 else None
        cells = [fmt(au[h]) + (f" ({extra[h]})" if extra else "") for h in COMBINATIONS]
        label = f"demo (scale {a.scale:g})" if dname == "demo" else dname
        print(f"| {label} | {pname} | {way} | " + " | ".join(cells) + f" | {sec:.0f} |")


if __name__ == "__main__":
    main()
