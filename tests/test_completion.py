"""Latent completion: partial items are placed where complete ones are; everything else is untouched."""
from __future__ import annotations

import io
from dataclasses import replace
from itertools import combinations

import numpy as np
import pytest
import torch

from mmae_core.model.checkpoint import load_checkpoint, save_checkpoint
import mmae_core.model.completion as completion
from mmae_core.model.completion import MIN_COMPLETE_ITEMS, _Stats, _wanted_subsets, complete, fit_completion
from mmae_core.data.dataset import FeatureSet, Split
from mmae_core.errors import CheckpointError
from mmae_core.model.train import TrainedModel, encode, train
from tests.test_train import CFG, DIMS, make_set


def _with_test_split(n_train: int = 400, n_test: int = 200) -> FeatureSet:
    """The toy set's train split (its first 50 items lack a modality) and a complete test split."""
    sp = make_set(n_train + n_test, seed=5).splits["train"]
    part = lambda a, b: Split(sp.item_ids[a:b], {m: x[a:b] for m, x in sp.features.items()})  # noqa: E731
    return FeatureSet("toy", dict(DIMS), {"train": part(0, n_train), "test": part(n_train, n_train + n_test)}).validate()


@pytest.fixture(scope="module")
def fs() -> FeatureSet:
    return _with_test_split()


@pytest.fixture(scope="module")
def tm(fs: FeatureSet) -> TrainedModel:
    return train(fs, replace(CFG, epochs=15))


def test_completed_latent_is_nearer_the_complete_items_latent_than_the_mean(fs: FeatureSet, tm: TrainedModel) -> None:
    """On held-out items, for every proper subset: the completion errs less than the plain mean,
    measured against the latent the same item gets with all its modalities."""
    te = fs.splits["test"].features
    full, _ = encode(tm, te)
    assert tm.completion is not None and len(tm.completion.maps) == 6
    for r in (1, 2):
        for subset in combinations(DIMS, r):
            partial = {m: (x if m in subset else np.full_like(x, np.nan)) for m, x in te.items()}
            completed, _ = encode(tm, partial)
            mean, _ = encode(tm, partial, complete_missing=False)
            err_c = float(((completed - full) ** 2).sum(axis=1).mean())
            err_m = float(((mean - full) ** 2).sum(axis=1).mean())
            assert err_c < 0.8 * err_m, (subset, err_c, err_m)


def test_complete_items_and_per_modality_latents_are_untouched(fs: FeatureSet, tm: TrainedModel) -> None:
    te = fs.splits["test"].features
    a, per_a = encode(tm, te)
    b, per_b = encode(tm, te, complete_missing=False)
    assert np.array_equal(a, b)
    assert all(np.array_equal(per_a[m], per_b[m]) for m in DIMS)


def test_same_data_give_the_same_maps(fs: FeatureSet, tm: TrainedModel) -> None:
    again = train(fs, replace(CFG, epochs=15))
    assert set(again.completion.maps) == set(tm.completion.maps)
    for s, (W, b) in tm.completion.maps.items():
        assert np.array_equal(W, again.completion.maps[s][0]) and np.array_equal(b, again.completion.maps[s][1])


def test_too_few_complete_items_keep_the_plain_mean() -> None:
    rng = np.random.default_rng(0)
    per = [rng.normal(size=(100, 4)) for _ in range(3)]
    present = np.ones((100, 3), dtype=bool)
    present[MIN_COMPLETE_ITEMS - 1 :, 0] = False  # only 49 items have everything
    assert fit_completion(per, present, np.mean(per, axis=0)) is None
    fused = np.nanmean(np.stack(per), axis=0)
    assert complete(None, fused, per, present) is fused
    fs = make_set(60)  # 60 items, 50 of them lack a modality: too few complete ones
    tm = train(fs, replace(CFG, epochs=1))
    assert tm.completion is None
    z, per_z = encode(tm, fs.splits["train"].features)
    np.testing.assert_allclose(z, np.nanmean(np.stack([per_z[m] for m in DIMS]), axis=0), rtol=1e-5, atol=1e-6)


def test_many_modalities_fit_the_seen_subsets_and_single_ones() -> None:
    present = np.ones((10, 6), dtype=bool)
    present[0, [4, 5]] = False
    present[1, 0] = False
    subsets = _wanted_subsets(present)
    assert subsets == [(0,), (1,), (2,), (3,), (4,), (5,), (0, 1, 2, 3), (1, 2, 3, 4, 5)]
    assert all(type(j) is int for s in subsets for j in s)  # a checkpoint may hold plain ints only
    assert len(_wanted_subsets(np.ones((3, 4), dtype=bool))) == 14  # 2^4 - 2: every proper subset


def test_checkpoint_keeps_the_maps_and_refuses_bad_ones(fs: FeatureSet, tm: TrainedModel) -> None:
    data = save_checkpoint(tm)
    back = load_checkpoint(data)
    assert set(back.completion.maps) == set(tm.completion.maps) and back.completion.n_fit == tm.completion.n_fit
    partial = {m: x for m, x in fs.splits["test"].features.items() if m != "audio"}
    assert np.array_equal(encode(back, partial)[0], encode(tm, partial)[0])

    payload = torch.load(io.BytesIO(data), weights_only=True)
    payload["completion"]["W"][0] = torch.zeros(3, 3)
    buf = io.BytesIO()
    torch.save(payload, buf)
    with pytest.raises(CheckpointError, match=r"latent-completion map for modalities \[0\] has shape \(3, 3\)"):
        load_checkpoint(buf.getvalue())

    payload["completion"] = {"subsets": [[0, 1, 2]], "W": [torch.zeros(24, 8)], "b": [torch.zeros(8)], "n_fit": 1}
    buf = io.BytesIO()
    torch.save(payload, buf)
    with pytest.raises(CheckpointError, match="latent-completion maps are malformed"):
        load_checkpoint(buf.getvalue())

    del payload["completion"]  # a checkpoint saved before completion existed: the plain mean
    buf = io.BytesIO()
    torch.save(payload, buf)
    old = load_checkpoint(buf.getvalue())
    assert old.completion is None
    assert np.array_equal(encode(old, partial)[0], encode(tm, partial, complete_missing=False)[0])


def test_ridge_from_statistics_matches_scikit_learn() -> None:
    """The maps are solved from Gram sub-blocks; they must equal scikit-learn's Ridge (intercept
    unpenalized), and the held-out error computed from statistics must equal the direct sum."""
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(1)
    Z = rng.normal(size=(300, 12))
    Y = Z @ rng.normal(size=(12, 4)) + rng.normal(size=(300, 4)) + 3.0
    cols = np.array([0, 1, 2, 7, 8, 9])
    W, b = _Stats.of(Z, Y).solve(cols, 2.0)
    ref = Ridge(alpha=2.0).fit(Z[:, cols], Y)
    np.testing.assert_allclose(W, ref.coef_.T, atol=1e-10)
    np.testing.assert_allclose(b, ref.intercept_, atol=1e-10)
    held = _Stats.of(Z[:50], Y[:50])
    assert held.error(W, b, cols) == pytest.approx(float(((Y[:50] - (Z[:50, cols] @ W + b)) ** 2).sum()), rel=1e-9)


def test_large_train_splits_fit_on_evenly_spaced_items_and_constant_encodings_keep_the_mean(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(size=(200, 4))
    per = [y @ rng.normal(size=(4, 4)) + 0.1 * rng.normal(size=(200, 4)) for _ in range(3)]
    present = np.ones((200, 3), dtype=bool)
    monkeypatch.setattr(completion, "MAX_FIT_ITEMS", 60)
    c = fit_completion(per, present, np.mean(per, axis=0))
    assert c is not None and c.n_fit == 60 and len(c.maps) == 6
    per[1] = np.zeros_like(per[1])  # a modality whose encodings never vary predicts nothing
    c = fit_completion(per, present, np.mean(per, axis=0))
    assert (1,) not in c.maps and (0, 1) in c.maps


def test_six_modalities_round_trip_through_the_safe_checkpoint_loader() -> None:
    rng = np.random.default_rng(3)
    n, dims = 120, {f"m{j}": 4 for j in range(6)}
    factor = rng.normal(size=(n, 3))
    feats = {m: (factor @ rng.normal(size=(3, d)) + 0.1 * rng.normal(size=(n, d))).astype(np.float32) for m, d in dims.items()}
    feats["m5"][:10] = np.nan  # one pattern seen in train: m0..m4
    ids = np.array([f"i{i}" for i in range(n)], dtype=object)
    fs = FeatureSet("six", dims, {"train": Split(ids, feats)}).validate()
    tm = train(fs, replace(CFG, epochs=1))
    assert (0, 1, 2, 3, 4) in tm.completion.maps and len(tm.completion.maps) == 7
    back = load_checkpoint(save_checkpoint(tm))
    assert set(back.completion.maps) == set(tm.completion.maps)
    assert np.array_equal(encode(back, feats)[0], encode(tm, feats)[0])
