"""A cross-modal search that knows the classes: what a split's features and labels allow search to reach.

An analyst who sees class P@10 of 0.45 for audio -> image needs to know whether the model is weak or
the audio simply does not tell the classes apart. This module answers with a reference search that
is given the labels: per modality, a classifier fitted on the train split (logistic regression on at
most 64 principal components of the standardized features) gives each item's class probabilities
P(c | x_m); a query then ranks the target items by the chance that they share its class,

    sum_c P(c | x_query) * P(c | x_target).

With exact probabilities that ranking is the best any search can do for expected class P@k (two
items' classes are independent given their features), so its P@10 estimates what the data allow.
It is an estimate, not a bound: a stronger classifier can move it up (an RBF SVM lifted the digits'
worst pair from 0.79 to 0.82, docs/results.md "Cross-modal search"); logistic regression is what fits in a
few seconds at archive size.

Only class metrics are meaningful here (instance recall would ask which of a class's items is the
query's own, which class probabilities cannot say), and there are no fused rows.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from mmae_core.errors import ConfigError
from mmae_core.log import Log, silent
from mmae_core.evaluation.metrics import label_mask
from mmae_core.search.retrieval import _pair_metrics

METHOD = "supervised"
METRIC = "posterior"  # the metric column of its rows: ranked by the inner product of class probabilities
N_COMPONENTS = 64
C = 0.1
FIT_ROWS = 50_000  # classifiers are fitted on at most this many labelled train items (evenly spaced)


def _labelled(labels: np.ndarray | None) -> np.ndarray:
    """``metrics.label_mask``, as an all-False mask where no item is labelled."""
    mask = label_mask(labels)
    return np.zeros(0 if labels is None else len(labels), dtype=bool) if mask is None else mask


def _classes(train_labels: np.ndarray | None) -> np.ndarray:
    """The sorted classes of the labelled train items; refuses fewer than two."""
    lab = _labelled(train_labels)
    classes = np.unique(np.asarray(train_labels, dtype=object)[lab].astype(str)) if lab.any() else np.array([])
    if len(classes) < 2:
        raise ConfigError("the supervised search needs labels of at least two classes on the train split; "
                          "this dataset has none, so there is nothing to learn the classes from.")
    return classes


def check_labels(train_labels: np.ndarray | None, target_labels: np.ndarray | None) -> None:
    """Refuse, in one sentence and before any slow work, splits the supervised search cannot learn
    from (train) or score (the split searched)."""
    _classes(train_labels)
    if not _labelled(target_labels).any():
        raise ConfigError("the supervised search measures class precision, which needs labels on the split searched.")


def class_posteriors(train: dict[str, np.ndarray], train_labels: np.ndarray | None, target: dict[str, np.ndarray],
                     seed: int = 0, log: Log = silent) -> dict[str, np.ndarray]:
    """Per modality, (n_target, n_classes) class probabilities of the target rows, one class order for
    all; NaN rows where the target item lacks the modality. ``train`` and ``target`` are standardized
    features. Refuses train data without labels of two classes."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    classes = _classes(train_labels)
    lab = _labelled(train_labels)
    out: dict[str, np.ndarray] = {}
    for m, x in train.items():
        rows = np.flatnonzero(lab & np.isfinite(x).all(axis=1))
        rows = rows[:: max(1, -(-len(rows) // FIT_ROWS))]
        y = np.asarray(train_labels, dtype=object)[rows].astype(str)
        if len(np.unique(y)) < 2:
            raise ConfigError(f"the supervised search needs labelled train items of at least two classes with "
                              f"the {m} modality; add labels or drop {m} from the comparison.")
        log(f"supervised search: fitting a classifier of the {m} features ({len(rows):,} labelled train items) ...")
        pca = PCA(min(N_COMPONENTS, x.shape[1], len(rows)), random_state=seed).fit(x[rows])
        clf = LogisticRegression(C=C, max_iter=300).fit(pca.transform(x[rows]), y)
        t = target[m]
        ok = np.isfinite(t).all(axis=1)
        p = np.full((t.shape[0], len(classes)), np.nan)
        cols = np.searchsorted(classes, clf.classes_)
        p[ok] = 0.0
        if ok.any():
            p[np.ix_(ok, cols)] = clf.predict_proba(pca.transform(t[ok]))
        out[m] = p
    return out


def supervised_search(train: dict[str, np.ndarray], train_labels: np.ndarray | None, target: dict[str, np.ndarray],
                      target_labels: np.ndarray | None, k: int = 10, seed: int = 0, log: Log = silent) -> pd.DataFrame:
    """Class P@k and mAP of the supervised search for every ordered pair of modalities, as rows with
    ``query``, ``target``, ``metric`` (``posterior``), ``queries``, ``p_at_{k}``, ``map``; the query item
    is left out of its own ranking, as in ``retrieval.retrieval_metrics``."""
    check_labels(train_labels, target_labels)
    post = class_posteriors(train, train_labels, target, seed=seed, log=log)
    names = list(post)
    rows = []
    for a in names:
        for b in names:
            if a != b:
                r = _pair_metrics(post[a], post[b], target_labels, k, "dot")
                rows.append({"query": a, "target": b, "metric": METRIC, "queries": int(r["queries"]),
                             f"p_at_{k}": r[f"p_at_{k}"], "map": r["map"]})
    return pd.DataFrame(rows, columns=["query", "target", "metric", "queries", f"p_at_{k}", "map"])
