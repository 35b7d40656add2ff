"""The helpers behind the real-data verdicts docs/results.md quotes (benchmarks/quality.py and
benchmarks/real_diagnosis.py): seed ranges, the per-seed gap's interval, the ahead/level/behind
tally, and the 6-and-9 facts of the UCI views."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from quality import gap_interval, gap_tally, parse_seeds  # noqa: E402
from real_diagnosis import knn, merged, swapped  # noqa: E402

from mmae_core.data.realdata import make_real  # noqa: E402
from mmae_core.model.standardize import Standardizer  # noqa: E402


def test_seed_ranges_and_lists() -> None:
    assert parse_seeds("1..3,7") == [1, 2, 3, 7]
    assert parse_seeds(" 5 , 1..1 ") == [5, 1]
    assert parse_seeds("") == []


def test_gap_interval_is_the_t_interval() -> None:
    diff = np.array([0.01, 0.03, 0.02, 0.04])
    mean, lo, hi = gap_interval(diff)
    half = 3.182446 * diff.std(ddof=1) / 2  # t(0.975, 3) * s / sqrt(4)
    assert mean == pytest.approx(0.025) and lo == pytest.approx(mean - half, abs=1e-6) and hi == pytest.approx(mean + half, abs=1e-6)
    assert gap_interval(np.array([0.5]))[1:] == (float("-inf"), float("inf"))  # one seed says nothing


def rows(gaps: dict[tuple[int, str], list[float]]) -> pd.DataFrame:
    out = []
    for (k, metric), diffs in gaps.items():
        for seed, d in enumerate(diffs):
            out.append({"k": k, "seed": seed, "method": "fused_pca", "metric": metric, "v": 0.5})
            out.append({"k": k, "seed": seed, "method": "mmae", "metric": metric, "v": 0.5 + d})
    wide = pd.DataFrame(out).pivot_table(index=["k", "seed", "method"], columns="metric", values="v").reset_index()
    return wide


def test_tally_sorts_cells_by_the_interval_not_the_mean() -> None:
    clear_win = [0.05, 0.06, 0.04, 0.05]
    noisy_win = [0.10, -0.08, 0.09, -0.07]  # mean above 0, interval across it: level
    clear_loss = [-0.03, -0.04, -0.05, -0.04]
    tally = gap_tally(rows({(6, "ari"): clear_win, (6, "nmi"): noisy_win, (8, "ari"): clear_loss, (8, "nmi"): clear_win}))
    assert tally == "ahead 2; level 1 (NMI k=6); behind 1 (ARI k=8)"


def test_swaps_and_merges() -> None:
    y = np.array(["digit-6"] * 3 + ["digit-9"] * 3 + ["digit-1"] * 2)
    assert swapped(y, np.array(["digit-9", "digit-6", "digit-6", "digit-6", "digit-9", "digit-9", "digit-1", "digit-6"])) == 2
    assert merged(y, np.array([0, 0, 1, 0, 0, 2, 1, 1]))
    assert not merged(y, np.array([0, 0, 1, 2, 2, 0, 1, 1]))


def test_the_weak_views_cannot_tell_6_from_9_and_the_strong_one_can() -> None:
    """docs/results.md's explanation of the `mfeat` ties rests on this fact of the data."""
    fs = make_real("mfeat")
    tr, te = fs.splits["train"], fs.splits["test"]
    std = Standardizer.fit(tr.features)
    xtr, xte = std.transform(tr.features), std.transform(te.features)
    y = te.labels.astype(str)
    swaps = {m: swapped(y, knn(xtr[m], tr.labels.astype(str), xte[m])) for m in fs.modalities}
    assert swaps["pixel"] == 0
    assert swaps["fourier"] >= 25 and swaps["zernike"] >= 40, swaps
