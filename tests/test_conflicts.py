"""Conflicting modalities: the disagreement score on made-up latents, the swap experiment with a real
(tiny) model, and the CLI contract."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from functools import partial

from studio.cli import main
from mmae_core.archive.conflicts import (
    METHODS, NEEDS_MODEL, NEEDS_TAGS, conflict_table, fit_reference, score, tag_disagreement,
)
from mmae_core.search.spaces import fit_tag_space
from mmae_core.config import preset
from mmae_core.data.dataset import Split
from mmae_core.errors import ConfigError
from mmae_core.archive.novelty import auroc
from studio.pipeline import train_and_register
from mmae_core.model.train import encode, fuse_latents, train
from store import Store

from .test_novelty import TINY, toy_set


def latents(assign: np.ndarray, cents: dict[str, np.ndarray], rng: np.random.Generator, noise: float = 0.3) -> dict[str, np.ndarray]:
    return {m: c[assign] + noise * rng.standard_normal((len(assign), c.shape[1])) for m, c in cents.items()}


def test_a_modality_from_another_group_is_flagged_and_ranked_first() -> None:
    rng = np.random.default_rng(0)
    cents = {m: rng.standard_normal((4, 5)) * 3 for m in ("image", "audio", "text")}  # unaligned spaces
    ref_assign = np.repeat(np.arange(4), 50)
    ref = fit_reference(latents(ref_assign, cents, rng), ref_assign, list("abcd"), "made up")
    assign = np.array([0, 1, 2, 3, 0, 1])
    per = latents(assign, cents, rng)
    per["text"][0] = cents["text"][2]  # item 0: its text belongs to group c
    per["audio"][1] = np.nan  # item 1 lacks audio and agrees otherwise
    per["image"][5] = np.nan
    per["audio"][5] = np.nan  # item 5 has text only: nothing to disagree with
    for method in set(METHODS) - set(NEEDS_MODEL) - set(NEEDS_TAGS):
        s, near = score(ref, per, method)
        assert s.argmax() == 0 and s[5] == 0.0
        assert near["text"][0] == 2 and near["image"][0] == 0 and near["audio"][1] == -1
    for method in NEEDS_MODEL:  # made-up latents have no model to fuse them with
        with pytest.raises(ConfigError, match="needs the model"):
            score(ref, per, method)
    with pytest.raises(ConfigError, match="needs the model's tags"):
        score(ref, per, "tags")
    table = conflict_table(ref, per, np.array([f"i{i}" for i in range(6)]), "margin")
    assert table["item_id"].iloc[0] == "i0" and bool(table["flagged"].iloc[0])
    assert table.set_index("item_id").loc["i0", ["image", "audio", "text"]].tolist() == ["a", "a", "c"]
    assert table["flagged"].sum() == 1 and pd.isna(table.set_index("item_id").loc["i1", "audio"])
    with pytest.raises(ConfigError, match="two tags"):
        fit_reference(per, np.zeros(6, dtype=int), ["only"], "x")


def test_tag_disagreement_is_how_far_one_modality_names_another_tag_than_the_rest():
    """Made-up tag probabilities: 1 - overlap of a modality's with the mean of the others', the largest
    over the item's modalities; a missing modality has no say, a lone one nothing to disagree with."""
    sure = {0: [1.0, 0.0], 1: [0.0, 1.0], None: [np.nan, np.nan]}
    rows = {"image": [0, 0, 0, None], "audio": [0, 0, None, None], "text": [0, 1, 0, 0]}

    def tags(m: str, z: np.ndarray) -> np.ndarray:
        return np.array([sure[v] for v in rows[m]])

    s = tag_disagreement({m: np.zeros((4, 2)) for m in rows}, tags)
    # item 0 agrees; item 1's text names the other tag; item 2 (no audio) agrees; item 3 has text only
    np.testing.assert_allclose(s, [0.0, 1.0, 0.0, 0.0])


def swap(sp: Split, n: int, rng: np.random.Generator, same_class: bool = False) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``n`` items get one modality (drawn uniformly) of an item of another class (or of the same one)."""
    feats = {m: x.copy() for m, x in sp.features.items()}
    mods = list(feats)
    labels = sp.labels.astype(str)
    rows = rng.choice(sp.n, size=n, replace=False)
    for i in rows:
        m = mods[int(rng.integers(len(mods)))]
        donors = (labels == labels[i]) if same_class else (labels != labels[i])
        donors[i] = False
        donor = int(rng.choice(np.flatnonzero(donors)))
        feats[m][i] = sp.features[m][donor]
    swapped = np.zeros(sp.n, dtype=bool)
    swapped[rows] = True
    return feats, swapped


@pytest.mark.parametrize("name", ["paper", "aligned"])
def test_swapped_modalities_rank_first_at_small_size(name: str) -> None:
    fs = toy_set(n_classes=5, per_class={"train": 60, "test": 40})
    tm = train(fs, preset(name, **TINY))
    z_tr, per_tr = encode(tm, fs.splits["train"].features)
    from sklearn.cluster import KMeans

    assign = KMeans(5, n_init=4, random_state=0).fit_predict(z_tr)
    fuse = partial(fuse_latents, tm)
    tags = fit_tag_space(per_tr, z_tr, seed=0).probabilities
    ref = fit_reference(per_tr, assign, list("abcde"), "train clusters", fuse, tags)
    feats, swapped = swap(fs.splits["test"], 20, np.random.default_rng(3))  # 10% of 200 test items
    _, per = encode(tm, feats)
    for method in ("margin", "tags", "combined"):
        s, _ = score(ref, per, method, fuse, tags)
        top = np.argsort(-s, kind="mergesort")[:20]
        # random scores: AUROC 0.5 +- 0.07 and precision@20 about 0.1; these bounds cannot be met by chance
        assert auroc(s[~swapped], s[swapped]) > 0.85
        assert swapped[top].mean() >= 0.5


def test_a_swap_between_two_items_of_one_class_is_seen_by_the_instance_score_only() -> None:
    """Both items carry the same tag, so no group-based score can tell; the model's prediction of
    where the item sits from the swapped modality alone still differs from the others'."""
    fs = toy_set(n_classes=5, per_class={"train": 60, "test": 40})
    tm = train(fs, preset("reliability", **TINY))
    z_tr, per_tr = encode(tm, fs.splits["train"].features)
    from sklearn.cluster import KMeans

    assign = KMeans(5, n_init=4, random_state=0).fit_predict(z_tr)
    fuse = partial(fuse_latents, tm)
    ref = fit_reference(per_tr, assign, list("abcde"), "train clusters", fuse)
    feats, swapped = swap(fs.splits["test"], 40, np.random.default_rng(3), same_class=True)
    _, per = encode(tm, feats)
    got = {m: auroc(s[~swapped], s[swapped]) for m in ("margin", "cross") for s in [score(ref, per, m, fuse)[0]]}
    # 40 swapped of 200: a chance AUROC is 0.5 +- 0.05, so 0.65 is three deviations above it
    assert got["cross"] > 0.65 and got["cross"] > got["margin"] + 0.1, got


@pytest.fixture(scope="module")
def toy_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("conflicts") / "s.duckdb"
    store = Store(db)
    store.add_dataset(toy_set(per_class={"train": 60, "test": 20}))
    train_and_register(store, "toy", preset("aligned", **TINY), model_name="m")
    return db


def test_cli_conflicts_json_contract(toy_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conflicts", "--dataset", "toy", "--model", "m", "--format", "json", "--db", str(toy_db)]) == 0
    out, errs = capsys.readouterr()
    rows = json.loads(out)
    assert len(rows) == 100
    assert list(rows[0])[:3] == ["item_id", "score", "flagged"] and {"image", "audio", "text"} <= set(rows[0])
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert all(r["item_id"].startswith("test-") for r in rows)
    assert "train clusters" in errs and "of 100 test items" in errs
    for r in rows:
        assert r["flagged"] == (len({r["image"], r["audio"], r["text"]}) > 1 and r["score"] > 0)
    assert main(["conflicts", "--dataset", "toy", "--model", "m", "--flagged-only", "--top", "3", "--format", "json",
                 "--db", str(toy_db)]) == 0
    few = json.loads(capsys.readouterr()[0])
    assert len(few) <= 3 and all(r["flagged"] for r in few)
    # one score by name: the model's own tags, learned per modality (the search's tag space)
    assert main(["conflicts", "--dataset", "toy", "--model", "m", "--method", "tags", "--format", "json",
                 "--db", str(toy_db)]) == 0
    by_tags = json.loads(capsys.readouterr()[0])
    assert len(by_tags) == 100 and [r["score"] for r in by_tags] != [r["score"] for r in rows]
    assert main(["conflicts", "--dataset", "toy", "--split", "ood", "--db", str(toy_db)]) == 1
    out, errs = capsys.readouterr()
    assert out == "" and errs.startswith("error: ") and errs.count("\n") == 1


def test_the_spreads_of_a_large_reference_come_from_evenly_spaced_members(monkeypatch: pytest.MonkeyPatch) -> None:
    """An archive's members would cost a fusion of every one of them; the spreads need a sample."""
    import mmae_core.archive.conflicts as conflicts

    fs = toy_set(n_classes=5, per_class={"train": 60, "test": 20})
    tm = train(fs, preset("reliability", **TINY))
    _, per_tr = encode(tm, fs.splits["train"].features)
    assign = np.repeat(np.arange(5), 60)
    seen: list[int] = []
    fuse = partial(fuse_latents, tm)

    def counting(per: dict[str, np.ndarray]) -> np.ndarray:
        seen.append(len(next(iter(per.values()))))
        return fuse(per)

    full = fit_reference(per_tr, assign, list("abcde"), "x", counting)
    assert set(seen) == {300}
    seen.clear()
    monkeypatch.setattr(conflicts, "STATS_ITEMS", 100)
    sampled = fit_reference(per_tr, assign, list("abcde"), "x", counting)
    assert set(seen) == {100}
    for m in full.cross_log_mean:  # a spread measured on a third of the members is close to the whole's
        assert abs(sampled.cross_log_mean[m] - full.cross_log_mean[m]) < 0.5 * full.cross_log_std[m]
