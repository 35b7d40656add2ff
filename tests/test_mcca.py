"""MCCA: equal to classic CCA on two views, better than a weak view on three, missing views, reduction,
and its correlation-weighted search space."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import subspace_angles
from sklearn.cross_decomposition import CCA
from sklearn.metrics import adjusted_rand_score

from mmae_core.evaluation.baselines import TrainMoments, UnimodalPCA
from mmae_core.errors import ConfigError
from mmae_core.evaluation.evaluate import kmeans_labels
from mmae_core.evaluation.mcca import MCCA, search_space


def standardize(x: np.ndarray) -> np.ndarray:
    return ((x - x.mean(0)) / x.std(0)).astype(np.float32)


def two_views(n: int = 1500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three shared latent factors of decreasing strength seen through two noisy linear maps."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 3)) * np.array([1.0, 0.6, 0.3])
    x = z @ rng.standard_normal((3, 10)) + rng.standard_normal((n, 10))
    y = z @ rng.standard_normal((3, 8)) + rng.standard_normal((n, 8))
    return standardize(x), standardize(y)


def test_two_view_mcca_is_classic_cca_as_in_sklearn() -> None:
    x, y = two_views()
    f = {"a": x, "b": y}
    ours = MCCA(n_components=3, reg=0.0).fit(f)
    views = ours.transform_views(f)
    sk = CCA(n_components=3, scale=False, max_iter=5000, tol=1e-12).fit(x.astype(np.float64), y.astype(np.float64))
    xs, ys = sk.transform(x.astype(np.float64), y.astype(np.float64))
    sk_corr = np.array([np.corrcoef(xs[:, i], ys[:, i])[0, 1] for i in range(3)])
    our_corr = ours.canonical_correlations(f)
    assert np.all(np.abs(np.abs(our_corr) - np.abs(sk_corr)) < 1e-2), (our_corr, sk_corr)
    assert np.allclose(ours.eigenvalues_ - 1.0, our_corr, atol=1e-4)  # rho = lambda - 1 on two views
    assert our_corr[0] > our_corr[1] > our_corr[2] > 0.1
    # the same canonical subspaces, and component by component the same variates
    assert np.max(subspace_angles(views["a"].astype(np.float64), xs)) < 1e-2
    assert np.max(subspace_angles(views["b"].astype(np.float64), ys)) < 1e-2
    for i in range(3):
        assert abs(np.corrcoef(views["a"][:, i], xs[:, i])[0, 1]) > 0.999


def test_canonical_variates_have_unit_variance_and_are_uncorrelated_within_a_view() -> None:
    x, y = two_views(seed=1)
    f = {"a": x, "b": y}
    v = MCCA(n_components=3, reg=0.0).fit(f).transform_views(f)["a"].astype(np.float64)
    assert np.allclose(np.cov(v.T, bias=True), np.eye(3), atol=1e-4)


def class_views(n_per: int, k: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Three views of the same class signal through different linear maps and noise; 'weak' is noisiest."""
    rng = np.random.default_rng(seed)
    world = np.random.default_rng(99)  # the same prototypes and maps for every split
    protos = world.standard_normal((k, 10)) * 1.5
    y = np.repeat(np.arange(k), n_per)
    c = protos[y] + 0.5 * rng.standard_normal((len(y), 10))
    views = {}
    for name, noise, d in (("left", 4.0, 20), ("right", 4.0, 25), ("weak", 12.0, 15)):
        a = world.standard_normal((10, d))
        views[name] = c @ a + noise * rng.standard_normal((len(y), d))
    return views, y


def test_mcca_separates_classes_better_than_a_single_weak_view() -> None:
    tr, _ = class_views(60, 8, seed=2)
    ev, y = class_views(30, 8, seed=3)
    mu = {m: tr[m].mean(0) for m in tr}
    sd = {m: tr[m].std(0) for m in tr}
    trs = {m: ((tr[m] - mu[m]) / sd[m]).astype(np.float32) for m in tr}
    evs = {m: ((ev[m] - mu[m]) / sd[m]).astype(np.float32) for m in ev}
    z = MCCA(n_components=8, reg=0.1).fit(trs).transform(evs)
    ari_mcca = adjusted_rand_score(y, kmeans_labels(z, 8, 4, 0))
    zw = UnimodalPCA("weak", 15).fit(trs).transform(evs)
    ari_weak = adjusted_rand_score(y, kmeans_labels(zw, 8, 4, 0))
    assert ari_mcca > ari_weak + 0.3, (ari_mcca, ari_weak)
    assert ari_mcca > 0.6


def test_missing_views_are_imputed_for_fitting_and_skipped_when_averaging() -> None:
    views, _ = class_views(40, 5, seed=4)
    f = {m: standardize(x) for m, x in views.items()}
    f["right"][:30] = np.nan
    f["weak"][10:20] = np.nan
    f["left"][25:30] = np.nan  # items 25..29 have only the weak view
    model = MCCA(n_components=4).fit(f)
    z = model.transform(f)
    per = model.transform_views(f)
    assert np.isfinite(z).all()
    assert np.isnan(per["right"][:30]).all() and np.isfinite(per["right"][30:]).all()
    assert np.allclose(z[25:30], per["weak"][25:30], atol=1e-6)
    assert np.allclose(z[:10], (per["left"][:10] + per["weak"][:10]) / 2, atol=1e-5)
    assert np.allclose(z[40:], (per["left"][40:] + per["right"][40:] + per["weak"][40:]) / 3, atol=1e-5)


def test_wide_views_are_reduced_to_their_leading_components() -> None:
    rng = np.random.default_rng(5)
    n = 400
    z = rng.standard_normal((n, 3))
    f = {
        "wide": standardize(z @ rng.standard_normal((3, 120)) + 0.3 * rng.standard_normal((n, 120))),
        "narrow": standardize(z @ rng.standard_normal((3, 6)) + rng.standard_normal((n, 6))),
    }
    model = MCCA(n_components=3, max_view_dim=40, var_keep=0.9).fit(f)
    assert model.view_dims_["wide"] <= 40 and model.view_dims_["narrow"] == 6
    assert model.explained_variance_kept_["wide"] >= 0.9 or model.view_dims_["wide"] == 40
    assert model.transform(f).shape == (n, 3)
    assert model.canonical_correlations(f)[0] > 0.8


def test_cached_moments_and_projected_data_give_the_same_model() -> None:
    views, _ = class_views(30, 4, seed=6)
    f = {m: standardize(x) for m, x in views.items()}
    a = MCCA(n_components=3).fit(f).transform(f)
    b = MCCA(n_components=3).fit(f, moments=TrainMoments.of(f).compute_all()).transform(f)
    assert np.allclose(a, b, atol=1e-4)


def test_mcca_refuses_one_modality_and_bad_settings() -> None:
    x, y = two_views(n=100)
    with pytest.raises(ConfigError, match="at least two modalities"):
        MCCA().fit({"a": x})
    with pytest.raises(ConfigError, match="regularization"):
        MCCA(reg=1.5).fit({"a": x, "b": y})


def test_search_space_weights_each_variate_by_its_train_correlation_and_averages_present_views() -> None:
    views, _ = class_views(40, 5, seed=4)
    train = {m: standardize(x) for m, x in views.items()}
    target = {m: x[:60].copy() for m, x in train.items()}
    target["right"][:10] = np.nan  # items 0..9 lack a view
    model = MCCA(n_components=4).fit(train)
    rho = model.canonical_correlations(train)
    assert rho[0] > rho[-1] > 0  # strongly and weakly shared components, weighted differently below
    plain = model.transform_views(target)
    weighted, fused = search_space(train, target, n_components=4)
    for m in train:
        np.testing.assert_allclose(weighted[m], plain[m] * rho.astype(np.float32), rtol=1e-5, atol=1e-6, equal_nan=True)
    assert np.isnan(weighted["right"][:10]).all() and np.isfinite(fused).all()
    np.testing.assert_allclose(fused[:10], (weighted["left"][:10] + weighted["weak"][:10]) / 2, atol=1e-6)
    np.testing.assert_allclose(fused[10:], sum(weighted[m][10:] for m in train) / 3, atol=1e-5)
