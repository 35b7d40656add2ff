"""2-D maps: shape, dtype, determinism per seed, NaN rows passed through, tiny inputs, bad method."""
from __future__ import annotations

import numpy as np
import pytest

from mmae_core.errors import ConfigError
from mmae_core.evaluation.projection import project_2d


def points(n: int = 60, d: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((3, d)) * 6
    return (centers[np.arange(n) % 3] + rng.standard_normal((n, d))).astype(np.float32)


@pytest.mark.parametrize("method", ["pca", "tsne", "umap"])
def test_map_shape_dtype_determinism_and_nan_rows(method: str) -> None:
    x = points()
    x[[3, 17]] = np.nan
    a = project_2d(x, method, seed=7)
    b = project_2d(x, method, seed=7)
    assert a.shape == (60, 2) and a.dtype == np.float32
    assert np.isnan(a[[3, 17]]).all()
    keep = np.setdiff1d(np.arange(60), [3, 17])
    assert np.isfinite(a[keep]).all()
    np.testing.assert_array_equal(a, b)
    # the three groups stay apart on the map: nearest map neighbour is in the same group
    y = keep % 3
    pts = a[keep].astype(np.float64)
    d = ((pts[:, None] - pts[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (y[d.argmin(1)] == y).mean() > 0.9


def test_pca_map_is_the_two_leading_components() -> None:
    x = points(d=5).astype(np.float64)
    xc = x - x.mean(0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    ref = xc @ vt[:2].T
    ours = project_2d(x, "pca").astype(np.float64)
    signs = np.sign((ours * ref).sum(0))
    assert np.allclose(ours, ref * signs, atol=1e-3)


def test_the_seed_reaches_umap() -> None:
    x = points()
    assert not np.array_equal(project_2d(x, "umap", seed=1), project_2d(x, "umap", seed=2))


@pytest.mark.parametrize("method", ["pca", "tsne", "umap"])
def test_tiny_and_empty_inputs(method: str) -> None:
    assert project_2d(points(n=3), method).shape == (3, 2)
    one = project_2d(points(n=1), method)
    assert one.shape == (1, 2) and np.isfinite(one).all()
    allnan = np.full((4, 3), np.nan, dtype=np.float32)
    assert np.isnan(project_2d(allnan, method)).all()


def test_unknown_method_is_refused_in_a_sentence() -> None:
    with pytest.raises(ConfigError, match="unknown map 'mds'"):
        project_2d(points(), "mds")  # type: ignore[arg-type]


def test_large_tsne_warns_through_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    import mmae_core.evaluation.projection as proj

    monkeypatch.setattr(proj, "_SLOW_TSNE", 50)  # a smaller threshold instead of 10,000 real points
    seen: list[str] = []
    project_2d(points(), "tsne", on_progress=seen.append)
    assert seen and "t-SNE" in seen[0]


@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_large_maps_fit_a_sample_and_place_the_rest(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmae_core.evaluation import projection

    monkeypatch.setattr(projection, "FIT_SAMPLE", 150)  # stands for 20,000 at a test's size
    monkeypatch.setattr(projection, "PLACE_CHUNK", 100)  # several chunks of placed points
    x = points(n=450, d=60)
    notes: list[str] = []
    a = project_2d(x, method, seed=3, on_progress=notes.append)
    assert projection.fit_sample_size(method, 450) == 150 and projection.fit_sample_size("pca", 450) is None
    assert any("sample of 150 of 450" in n for n in notes) and any("placed 300 of 300" in n for n in notes)
    assert a.shape == (450, 2) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, project_2d(x, method, seed=3))
    # placed points land with their own group: nearest map neighbour is in the same group
    d = ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (d.argmin(1) % 3 == np.arange(450) % 3).mean() > 0.95
