"""The supervised search (``mmae_core.search.supervised``): a reference that knows the classes, so an
analyst can tell a weak model from data that cannot say more."""
from __future__ import annotations

import numpy as np
import pytest

from mmae_core.errors import ConfigError
from mmae_core.search.supervised import class_posteriors, supervised_search


def make(n: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Four classes; ``sharp`` and ``blurred`` carry them (blurred less), ``noise`` does not."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    centres = np.random.default_rng(0).normal(size=(3, 4, 8)) * 3
    x = {
        "sharp": centres[0][y] + rng.normal(size=(n, 8)),
        "blurred": centres[1][y] * 0.25 + rng.normal(size=(n, 8)),
        "noise": rng.normal(size=(n, 8)),
    }
    return x, np.array([f"c{v}" for v in y], dtype=object)


def test_ranks_by_the_chance_of_sharing_the_class_and_tracks_how_much_each_modality_knows() -> None:
    tr, ytr = make(600, 1)
    te, yte = make(300, 2)
    table = supervised_search(tr, ytr, te, yte).set_index(["query", "target"])
    assert len(table) == 6 and set(table["metric"]) == {"posterior"} and (table["queries"] == 300).all()
    p = table["p_at_10"]
    assert p[("sharp", "blurred")] > 0.9
    assert p[("noise", "sharp")] < 0.45  # chance is 0.25: noise knows nothing of the class
    assert p[("sharp", "blurred")] > p[("blurred", "sharp")] > p[("noise", "sharp")]
    # the same P@10 by hand: targets ranked by sum_c P(c|query) P(c|target), the query item left out
    post = class_posteriors(tr, ytr, te)
    s = post["blurred"] @ post["sharp"].T
    np.fill_diagonal(s, -np.inf)
    top = np.argsort(-s, axis=1, kind="stable")[:, :10]
    assert p[("blurred", "sharp")] == pytest.approx((yte[top] == yte[:, None]).mean(), abs=0.01)


def test_items_without_a_modality_are_neither_asked_nor_found_and_unlabelled_ones_are_not_learned_from() -> None:
    tr, ytr = make(600, 1)
    te, yte = make(300, 2)
    tr["sharp"][:50] = np.nan
    ytr[50:100] = None
    te["blurred"][:20] = np.nan
    post = class_posteriors(tr, ytr, te)
    assert np.isnan(post["blurred"][:20]).all() and np.isfinite(post["blurred"][20:]).all()
    assert np.allclose(post["sharp"].sum(axis=1), 1.0)
    table = supervised_search(tr, ytr, te, yte).set_index(["query", "target"])
    assert table.loc[("blurred", "sharp"), "queries"] == 280 and table.loc[("sharp", "blurred"), "queries"] == 300


def test_without_labels_it_says_what_it_needs_in_one_sentence() -> None:
    tr, ytr = make(100, 1)
    te, yte = make(50, 2)
    for bad in (None, np.array([None] * 100, dtype=object), np.array(["one"] * 100, dtype=object)):
        with pytest.raises(ConfigError, match="labels of at least two classes on the train split"):
            supervised_search(tr, bad, te, yte)
    with pytest.raises(ConfigError, match="needs labels on the split searched"):
        supervised_search(tr, ytr, te, None)
