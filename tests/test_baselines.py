"""Unimodal and fused PCA against scikit-learn's PCA, missing rows, caps, weights, threading guard."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from sklearn.decomposition import PCA
from threadpoolctl import threadpool_info

from mmae_core.evaluation.baselines import FusedPCA, TrainMoments, UnimodalPCA, blas_single_thread, parallel_map, par_gram
from mmae_core.errors import ConfigError


def views(n: int = 300, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 4))
    out = {
        "image": z @ rng.standard_normal((4, 9)) + 0.5 * rng.standard_normal((n, 9)),
        "text": z @ rng.standard_normal((4, 14)) + rng.standard_normal((n, 14)),
    }
    return {m: ((x - x.mean(0)) / x.std(0)).astype(np.float32) for m, x in out.items()}


def same_up_to_sign(a: np.ndarray, b: np.ndarray, atol: float) -> bool:
    signs = np.sign((a * b).sum(axis=0))
    return bool(np.allclose(a, b * signs, atol=atol))


def test_unimodal_pca_matches_sklearn() -> None:
    f = views()
    ours = UnimodalPCA("text", 5).fit(f)
    ref = PCA(5, svd_solver="full").fit(f["text"].astype(np.float64))
    assert np.allclose(ours.explained_variance_, ref.explained_variance_, rtol=1e-5)
    assert np.allclose(ours.explained_variance_ratio_, ref.explained_variance_ratio_, atol=1e-6)
    z = ours.transform(f)
    assert z.shape == (300, 5) and z.dtype == np.float32
    assert same_up_to_sign(z, ref.transform(f["text"]), atol=1e-4)


def test_unimodal_pca_dimension_is_capped_by_data() -> None:
    f = views(n=30)
    assert UnimodalPCA("image", 50).fit(f).n_components_ == 9  # d
    small = {m: x[:6] for m, x in f.items()}
    assert UnimodalPCA("text", 256).fit(small).n_components_ == 6  # n_train


def test_unimodal_pca_fits_on_present_rows_and_keeps_missing_rows_nan() -> None:
    f = views()
    g = {m: x.copy() for m, x in f.items()}
    g["text"][:40] = np.nan
    ours = UnimodalPCA("text", 3).fit(g)
    ref = PCA(3, svd_solver="full").fit(f["text"][40:].astype(np.float64))
    z = ours.transform(g)
    assert np.isnan(z[:40]).all() and np.isfinite(z[40:]).all()
    assert same_up_to_sign(z[40:], ref.transform(f["text"][40:]), atol=1e-4)


def test_fused_pca_is_pca_of_the_weighted_concatenation() -> None:
    f = views()
    w = {"image": 2.0, "text": 0.5}
    ours = FusedPCA(weights=w, n_components=4).fit(f)
    cat = np.hstack([f["image"] * 2.0, f["text"] * 0.5]).astype(np.float64)
    ref = PCA(4, svd_solver="full").fit(cat)
    assert same_up_to_sign(ours.transform(f), ref.transform(cat), atol=1e-4)
    assert np.allclose(ours.explained_variance_ratio_, ref.explained_variance_ratio_, atol=1e-6)


def test_fused_pca_weight_zero_ignores_a_modality_and_bad_weights_are_refused() -> None:
    f = views()
    ours = FusedPCA(weights={"text": 0.0}, n_components=3).fit(f)
    assert np.allclose(ours.components_[:, 9:], 0.0)
    with pytest.raises(ConfigError, match="not a modality"):
        FusedPCA(weights={"video": 1.0}).fit(f)
    with pytest.raises(ConfigError, match="non-negative"):
        FusedPCA(weights={"text": -1.0}).fit(f)


def test_fused_pca_imputes_missing_rows_with_the_mean() -> None:
    f = views()
    g = {m: x.copy() for m, x in f.items()}
    g["image"][:10] = np.nan
    z = FusedPCA(n_components=3).fit(g).transform(g)
    assert np.isfinite(z).all()


def test_shared_moments_give_the_same_fits() -> None:
    f = views()
    mom = TrainMoments.of(f).compute_all()
    a = UnimodalPCA("image", 4).fit(f, moments=mom).transform(f)
    b = UnimodalPCA("image", 4).fit(f).transform(f)
    assert np.allclose(a, b, atol=1e-5)
    assert mom.has("image", "text") and mom.has("text", "image")


def test_par_gram_matches_a_plain_product_over_several_row_blocks() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5000, 7)).astype(np.float32)
    y = rng.standard_normal((5000, 3)).astype(np.float32)
    assert np.allclose(par_gram(x, y), x.astype(np.float64).T @ y.astype(np.float64), atol=1e-2)


def _blas_threads() -> list[int]:
    return [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]


def test_blas_pin_is_restored_after_concurrent_nested_use() -> None:
    before = _blas_threads()
    barrier = threading.Barrier(2)

    def work(_: int) -> list[int]:
        with blas_single_thread():
            barrier.wait(timeout=10)
            with blas_single_thread():
                inside = _blas_threads()
            barrier.wait(timeout=10)
        return inside

    insides = parallel_map(work, [0, 1], workers=2)
    assert all(t == 1 for ins in insides for t in ins), insides
    assert _blas_threads() == before


def test_blas_loaded_after_the_first_pin_is_pinned_too() -> None:
    """faiss ships its own OpenBLAS; when it is imported after the grid first ran, it must be pinned too."""
    import subprocess
    import sys

    code = (
        "from mmae_core.evaluation.baselines import blas_single_thread\n"
        "from threadpoolctl import threadpool_info\n"
        "with blas_single_thread(): pass\n"
        "import faiss  # loads another BLAS\n"
        "with blas_single_thread():\n"
        "    print([d['num_threads'] for d in threadpool_info() if d['user_api'] == 'blas'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"})
    counts = __import__("ast").literal_eval(out.stdout.strip())  # a printed list of ints
    assert len(counts) >= 2 and all(t == 1 for t in counts), counts


def test_concurrent_pin_reaches_an_openmp_blas_in_every_thread() -> None:
    """faiss's OpenBLAS keeps its thread count per thread (OpenMP); the nested, concurrent pin of the
    evaluation grid must reach it in each worker, not only in the thread that entered first."""
    import subprocess
    import sys

    code = (
        "import faiss  # an OpenMP-threaded OpenBLAS, loaded before anything is pinned\n"
        "import sys\n"
        "sys.path.insert(0, 'tests')\n"
        "import test_baselines as t\n"
        "t.test_blas_pin_is_restored_after_concurrent_nested_use()\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"})
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_parallel_map_reports_progress_in_the_calling_thread_and_keeps_order() -> None:
    """The progress callback may be a Streamlit call, which does nothing from a worker thread."""
    import time

    caller = threading.get_ident()
    seen: list[tuple[int, int, bool]] = []
    out = parallel_map(lambda x: (time.sleep(0.01 * (x % 3)), x * x)[1], range(12), workers=2,
                       on_done=lambda d, n: seen.append((d, n, threading.get_ident() == caller)))
    assert out == [x * x for x in range(12)]
    assert [d for d, _, _ in seen] == list(range(1, 13)) and all(n == 12 and main for _, n, main in seen)
    one: list[int] = []
    assert parallel_map(lambda x: x + 1, [1, 2], workers=1, on_done=lambda d, n: one.append(d)) == [2, 3] and one == [1, 2]
    with pytest.raises(ZeroDivisionError):
        parallel_map(lambda x: 1 // x, [1, 0, 2], workers=2, on_done=lambda d, n: None)


def test_throttled_progress_says_how_far_at_most_every_interval_and_not_at_the_end() -> None:
    from mmae_core.evaluation.evaluate import throttled

    said: list[str] = []
    every_time = throttled(said.append, "{done} of {total}", every=0.0)
    for d in range(1, 5):
        every_time(d, 4)
    assert said == ["1 of 4", "2 of 4", "3 of 4"]  # the caller announces the end itself
    said.clear()
    rarely = throttled(said.append, "{done} of {total}", every=3600.0)
    for d in range(1, 100):
        rarely(d, 100)
    assert said == []
