"""Shared pieces of the archive benchmarks (novelty.py, conflicts.py, missing.py).

They work on ``FeatureSet``s in memory with the core functions the CLI uses (train, encode,
reconstruction_error, the novelty and conflict scores), so a sweep does not pay for a store round trip
per setting. Presets are read from ``mmae_core.config.PRESETS`` at run time, never copied here.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmae_core.config import PRESETS, TrainConfig, sized_epochs  # noqa: E402
from mmae_core.data.dataset import FeatureSet, Split  # noqa: E402
from mmae_core.data.demo import make_demo  # noqa: E402
from mmae_core.evaluation.evaluate import kmeans_labels  # noqa: E402
from mmae_core.data.realdata import make_real  # noqa: E402
from mmae_core.model.train import TrainedModel, train  # noqa: E402


def machine() -> str:
    load = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"


def dataset(name: str, scale: float, seed: int = 42) -> FeatureSet:
    """'demo' (synthetic, at ``scale``) or 'mfeat' (the real UCI digits)."""
    return make_demo("demo", seed=seed, scale=scale) if name == "demo" else make_real("mfeat", seed=seed)


def config(preset: str, epochs: int | None, seed: int = 42, n_train: int | None = None) -> TrainConfig:
    """The preset with the seed; ``epochs`` when given, else what ``train`` runs on ``n_train``
    items (``config.sized_epochs``), else the preset's own."""
    base = replace(PRESETS[preset], seed=seed)
    if epochs:
        return replace(base, epochs=epochs).checked()
    return replace(base, epochs=sized_epochs(base, n_train)).checked() if n_train else base.checked()


def fit(fs: FeatureSet, cfg: TrainConfig) -> tuple[TrainedModel, float]:
    t0 = time.perf_counter()
    tm = train(fs, cfg)
    return tm, time.perf_counter() - t0


def with_split(fs: FeatureSet, split: str, sp: Split) -> FeatureSet:
    splits = dict(fs.splits)
    splits[split] = sp
    return FeatureSet(fs.name, dict(fs.modalities), splits, fs.synthetic, fs.source, dict(fs.attrs))


def subset(sp: Split, rows: np.ndarray) -> Split:
    return Split(
        item_ids=sp.item_ids[rows],
        features={m: np.ascontiguousarray(x[rows]) for m, x in sp.features.items()},
        labels=None if sp.labels is None else sp.labels[rows],
        meta=None if sp.meta is None else sp.meta.iloc[rows].reset_index(drop=True),
    )


def hold_out(fs: FeatureSet, classes: list[str]) -> FeatureSet:
    """The set with ``classes`` removed from train only (test keeps them: they are the novel items)."""
    tr = fs.splits["train"]
    keep = np.flatnonzero(~np.isin(tr.labels.astype(str), classes))
    return with_split(fs, "train", subset(tr, keep))


def train_clusters(z_train: np.ndarray, k: int, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """(centroids, assignment) of KMeans on the train latents: the reference a fresh model is scored
    against before any tag is accepted (``archive.reference_groups``, case 3)."""
    ok = np.isfinite(z_train).all(axis=1)
    lab = kmeans_labels(np.ascontiguousarray(z_train[ok]), k, 4, seed)
    assign = np.full(len(z_train), -1, dtype=np.int64)
    assign[ok] = lab
    cents = np.stack([z_train[ok][lab == c].mean(axis=0) for c in range(k)])
    return cents, assign


def drop_modalities(sp: Split, rate: float, rng: np.random.Generator) -> Split:
    """``rate`` of the items lose a uniformly drawn non-empty proper subset of their modalities (each
    keeps at least one): the missing-modality protocol of benchmarks/missing.py."""
    mods = list(sp.features)
    n, mcount = sp.n, len(mods)
    hit = np.flatnonzero(rng.random(n) < rate)
    feats = {m: sp.features[m].copy() for m in mods}
    for i in hit:
        while True:
            drop = rng.random(mcount) < 0.5
            if 0 < drop.sum() < mcount:
                break
        for j in np.flatnonzero(drop):
            feats[mods[j]][i] = np.nan
    return Split(sp.item_ids, feats, sp.labels, sp.meta)


def supervised_missing_ceiling(tr: dict[str, np.ndarray], tr_labels: np.ndarray, te: dict[str, np.ndarray],
                               te_missing: Split, te_labels: np.ndarray) -> tuple[float, float]:
    """(ARI on complete test items, ARI with ``te_missing``'s modalities gone) of a supervised reference:
    one logistic regression per pattern of modalities, fitted on the complete standardized train split
    (``tr``) with the labels, so every item is classified from exactly the modalities it kept.

    What labels can still tell when modalities are gone: a bar on the unsupervised drop that this
    drop already breaks asks for more than the remaining modalities hold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import adjusted_rand_score

    mods = list(tr)
    present = np.stack([~np.isnan(te_missing.features[m]).all(axis=1) for m in mods], axis=1)
    y_tr, y_te = tr_labels.astype(str), te_labels.astype(str)

    def fitted(cols: list[str]) -> LogisticRegression:
        return LogisticRegression(max_iter=2000).fit(np.hstack([tr[m] for m in cols]), y_tr)

    full = fitted(mods)
    pred = full.predict(np.hstack([te[m] for m in mods])).astype(object)
    complete_ari = adjusted_rand_score(y_te, pred)
    for pattern in np.unique(present, axis=0):
        rows = (present == pattern).all(axis=1)
        cols = [m for m, p in zip(mods, pattern) if p]
        clf = full if len(cols) == len(mods) else fitted(cols)
        pred[rows] = clf.predict(np.hstack([te[m][rows] for m in cols]))
    return float(complete_ari), float(adjusted_rand_score(y_te, pred.astype(str)))


def supervised_novelty(fs: FeatureSet, held_out: list[str], seed: int) -> dict[str, float]:
    """Held-out-class novelty AUROC of two detectors given the labels of the seen classes, on the
    z-scored views of the seen train items side by side (PCA 64): the Mahalanobis distance to the
    nearest class mean under one shared covariance (Lee et al. 2018) and one minus the largest class
    probability of a logistic regression (MSP, Hendrycks and Gimpel 2017).

    What labels allow on the same items: a bar the labelled detectors miss too asks for more than the
    features tell apart."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    from mmae_core.archive.novelty import auroc
    from mmae_core.model.standardize import Standardizer

    tr, te = fs.splits["train"], fs.splits["test"]
    keep = ~np.isin(tr.labels.astype(str), held_out)
    seen = {m: x[keep] for m, x in tr.features.items()}
    std = Standardizer.fit(seen)
    a_, b_ = (np.hstack([v[m] for m in fs.modalities]) for v in (std.transform(seen), std.transform(te.features)))
    pca = PCA(64, random_state=seed).fit(a_)
    a, b = pca.transform(a_), pca.transform(b_)
    y = tr.labels.astype(str)[keep]
    novel = np.isin(te.labels.astype(str), held_out)
    classes = np.unique(y)
    means = np.stack([a[y == c].mean(axis=0) for c in classes])
    cov = sum(np.cov(a[y == c].T, bias=True) * (y == c).sum() for c in classes) / len(a)
    prec = np.linalg.pinv(cov + 1e-3 * np.eye(cov.shape[0]))
    maha = np.min([np.einsum("ij,jk,ik->i", b - mu, prec, b - mu) for mu in means], axis=0)
    msp = -LogisticRegression(C=0.1, max_iter=500).fit(a, y).predict_proba(b).max(axis=1)
    return {"Mahalanobis, with labels": auroc(maha[~novel], maha[novel]), "MSP, with labels": auroc(msp[~novel], msp[novel])}


def fmt(v: float) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.3f}"
