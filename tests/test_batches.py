"""The batch source: seeded, standardized batches from memory or disk, the same either way."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from mmae_core.model.batches import ArrayRows, BatchSource, NpyRows, scan, write_npy_rows
from mmae_core.errors import DataError
from mmae_core.model.standardize import Standardizer

DIMS = {"image": 5, "audio": 9, "text": 7}


def features(n: int = 5000, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    f = {m: (rng.normal(size=(n, d)) * (1 + j) + j).astype(np.float32) for j, (m, d) in enumerate(DIMS.items())}
    f["audio"][::7] = np.nan  # missing rows
    return f


def batches(source, seed: int, p_drop: float = 0.4) -> list:
    present, std = scan(source, list(DIMS))
    src = BatchSource(source, list(DIMS), std, present, batch_size=128, modality_dropout=p_drop)
    return list(src.epoch(torch.Generator().manual_seed(seed)))


def test_the_same_seed_gives_the_same_batches_from_memory_and_from_disk(tmp_path) -> None:
    f = features()
    mem, disk = ArrayRows(f), write_npy_rows(ArrayRows(f), tmp_path / "x")
    a, b = batches(mem, 3), batches(disk, 3)
    assert len(a) == len(b) == (5000 + 127) // 128
    for x, y in zip(a, b):
        assert all(torch.equal(x.x[m], y.x[m]) for m in DIMS)
        assert np.array_equal(x.present, y.present) and np.array_equal(x.kept, y.kept)
    c = batches(mem, 4)
    assert not torch.equal(a[0].x["image"], c[0].x["image"])  # another seed, another order


def test_batches_are_standardized_and_mark_missing_and_dropped_modalities() -> None:
    f = features()
    got = batches(ArrayRows(f), 0)
    x = torch.cat([b.x["text"] for b in got]).numpy()
    assert abs(x.mean()) < 0.05 and abs(x.std() - 1) < 0.05
    present = np.concatenate([b.present for b in got])
    kept = np.concatenate([b.kept for b in got])
    assert present[:, 1].sum() == 5000 - len(range(0, 5000, 7))
    assert (kept <= present).all() and (kept.sum(axis=1) >= 1).all() and (kept != present).any()
    assert all(b.enc_rows["audio"] is not None for b in got)  # every batch misses some audio rows


def test_streaming_statistics_match_a_two_pass_fit_and_ignore_missing_rows() -> None:
    f = features(7000)
    std = Standardizer.fit(f)
    for m, x in f.items():
        rows = x[~np.isnan(x).all(axis=1)].astype(np.float64)
        np.testing.assert_allclose(std.mean[m], rows.mean(axis=0), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(std.std[m], rows.std(axis=0), rtol=1e-6)


def test_features_changed_on_disk_are_refused_with_one_sentence(tmp_path) -> None:
    disk = write_npy_rows(ArrayRows(features(500)), tmp_path / "x")
    disk.take("image", np.arange(10))
    np.save(tmp_path / "x" / "image.npy", np.zeros((500, 5), dtype=np.float32))
    os.utime(tmp_path / "x" / "image.npy", ns=(1, 1))
    with pytest.raises(DataError, match=r"^the image features in .* changed on disk after training started; .*retrain\.$"):
        disk.take("image", np.arange(10))
    other = write_npy_rows(ArrayRows(features(500)), tmp_path / "y")
    (tmp_path / "y" / "text.npy").unlink()
    with pytest.raises(DataError, match="text features .* changed on disk"):
        list(other.chunks())


def test_a_disk_source_refuses_files_that_are_not_aligned_float32_rows(tmp_path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((10, 3), dtype=np.float32))
    np.save(tmp_path / "b.npy", np.zeros((11, 3), dtype=np.float32))
    np.save(tmp_path / "c.npy", np.zeros((10, 3), dtype=np.float64))
    with pytest.raises(DataError, match=r"different row counts \(a: 10, b: 11\)"):
        NpyRows({"a": tmp_path / "a.npy", "b": tmp_path / "b.npy"})
    with pytest.raises(DataError, match="c.npy must hold a 2-D float32 array"):
        NpyRows({"a": tmp_path / "a.npy", "c": tmp_path / "c.npy"})


def test_reading_a_batch_from_disk_keeps_memory_at_about_a_batch(tmp_path) -> None:
    """A batch maps, gathers and unmaps: resident memory does not grow with the file's size."""
    import resource

    n, d = 60_000, 1024  # 245 MB on disk
    x = np.lib.format.open_memmap(tmp_path / "audio.npy", mode="w+", dtype=np.float32, shape=(n, d))
    for s in range(0, n, 4096):
        x[s : s + 4096] = 1.0
    x.flush()
    del x
    np.save(tmp_path / "image.npy", np.ones((n, 2), dtype=np.float32))
    disk = NpyRows.folder(tmp_path, ["image", "audio"])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rng = np.random.default_rng(0)
    for _ in range(400):  # 400 random batches touch most pages of the file
        disk.take("audio", rng.integers(0, n, 512))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 60, grown_mb
