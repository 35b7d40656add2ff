"""The search spaces as plain arrays: the tag space learns the model's own tags per modality, ranks by
their overlap averaged with the shared cosine, survives a round trip to disk, and gives way where the
latents hold no tags."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from mmae_core.search.spaces import SharedSpace, TagSpace, fit_shared_space, fit_tag_space


def latents(n: int = 600, groups: int = 6, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Three modalities' latents of ``groups`` classes (each a random linear view of the class centre
    plus its own noise), their mean as the fused latent, and the classes."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % groups
    centres = rng.normal(size=(groups, 8)) * 3
    per = {m: ((centres[y] + rng.normal(size=(n, 8))) @ rng.normal(size=(8, 16))).astype(np.float32)
           for m in ("image", "audio", "text")}
    return per, np.mean(list(per.values()), axis=0), y


def test_the_tag_space_learns_the_latents_tags_in_every_modality():
    per, fused, y = latents()
    space = fit_tag_space(per, fused, seed=3)
    assert isinstance(space, TagSpace) and space.names == ("image", "audio", "text")
    for m, z in per.items():
        p = space.probabilities(m, z)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
        assert adjusted_rand_score(y, p.argmax(axis=1)) > 0.9  # each modality alone names the class's tag


def test_the_inner_product_is_the_average_of_tag_overlap_and_shared_cosine():
    per, fused, _ = latents()
    space = fit_tag_space(per, fused, seed=3)
    a, b = space.transform_view("image", per["image"][:50]), space.transform_view("text", per["text"][:50])
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    pa, pb = space.probabilities("image", per["image"][:50]), space.probabilities("text", per["text"][:50])
    sa, sb = space.shared.transform_view("image", per["image"][:50]), space.shared.transform_view("text", per["text"][:50])
    cos = (sa / np.linalg.norm(sa, axis=1, keepdims=True)) @ (sb / np.linalg.norm(sb, axis=1, keepdims=True)).T
    np.testing.assert_allclose(a @ b.T, (np.sqrt(pa) @ np.sqrt(pb).T + cos) / 2, atol=1e-5)


def test_a_missing_modality_stays_missing():
    per, fused, _ = latents()
    space = fit_tag_space(per, fused, seed=3)
    z = per["audio"][:10].copy()
    z[[2, 5]] = np.nan
    v = space.transform_view("audio", z)
    assert np.isnan(v[[2, 5]]).all() and np.isfinite(np.delete(v, [2, 5], axis=0)).all()


def test_the_same_seed_gives_the_same_space_and_a_round_trip_to_disk_keeps_it(tmp_path):
    per, fused, _ = latents()
    one, two = fit_tag_space(per, fused, seed=3), fit_tag_space(per, fused, seed=3)
    for key, arr in one.arrays().items():
        np.testing.assert_array_equal(arr, two.arrays()[key])
    np.savez(tmp_path / "space.npz", **one.arrays())
    with np.load(tmp_path / "space.npz", allow_pickle=False) as f:
        back = TagSpace.from_arrays(list(per), {k: f[k] for k in f.files})
    np.testing.assert_array_equal(back.transform_view("text", per["text"]), one.transform_view("text", per["text"]))
    shared = SharedSpace.from_arrays(list(per), fit_shared_space(per).arrays())
    np.testing.assert_array_equal(shared.transform_view("audio", per["audio"]), one.shared.transform_view("audio", per["audio"]))


def test_the_tag_classifiers_fit_on_one_blas_thread(monkeypatch):
    """Reproducible across processes: with a multi-threaded BLAS the classifiers' last bits varied
    between runs of the same fit, and with them an item's rank now and then (class P@10 by .001)."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_info

    seen: list[int] = []
    fit = LogisticRegression.fit

    def counting(self, *args, **kwargs):
        seen.extend(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas")
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(LogisticRegression, "fit", counting)
    per, fused, _ = latents()
    assert fit_tag_space(per, fused, seed=3) is not None
    assert seen and set(seen) == {1}


def test_latents_without_tags_give_no_tag_space():
    """Fused latents all alike: Leiden finds no communities, so there is nothing to learn; the caller
    then searches the shared space."""
    per, fused, _ = latents()
    assert fit_tag_space(per, np.zeros_like(fused), seed=3) is None


@pytest.mark.parametrize("rows", [100, 650])
def test_the_fit_reads_at_most_the_fit_rows(monkeypatch, rows):
    """At archive size the space is fitted on evenly spaced train items, not all of them."""
    import mmae_core.search.spaces as spaces

    monkeypatch.setattr(spaces, "FIT_ROWS", 300)
    per, fused, _ = latents(n=rows)
    seen: list[str] = []
    fit_tag_space(per, fused, seed=3, log=seen.append)
    expected = len(range(0, rows, -(-rows // 300)))  # every row below the limit, every 3rd of 650
    assert expected == min(rows, 217) and f"on {expected:,} train items" in seen[0]
