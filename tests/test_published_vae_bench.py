"""The published-VAE rows of benchmarks/compare_methods.py (benchmarks/published_vae.py): a real MoPoE
from MultiVae trained on real mfeat views, seeded; and one plain reason when the extra is absent."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from published_vae import LATENT, fit_encode, multivae_models  # noqa: E402

from mmae_core.data.realdata import make_real  # noqa: E402
from mmae_core.model.standardize import Standardizer  # noqa: E402


def test_absent_extra_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in sys.modules if n == "multivae" or n.startswith("multivae.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "multivae", None)  # what an absent package looks like to import
    models, why = multivae_models()
    assert models is None and "\n" not in why and "requirements-extra.txt" in why


def test_mopoe_trains_on_real_views_and_is_seeded() -> None:
    if multivae_models()[0] is None:
        pytest.skip(multivae_models()[1])
    fs = make_real("mfeat")
    tr, te = fs.splits["train"], fs.splits["test"]
    std = Standardizer.fit(tr.features)
    train = {m: x[:256] for m, x in std.transform(tr.features).items()}
    test = {m: x[:64] for m, x in std.transform(te.features).items()}
    a = fit_encode("mopoe", train, test, epochs=2, seed=3)
    b = fit_encode("mopoe", train, test, epochs=2, seed=3)
    c = fit_encode("mopoe", train, test, epochs=2, seed=4)
    assert a.shape == (64, LATENT) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)  # same seed, same data, same latents (CPU)
    assert not np.allclose(a, c)
    with pytest.raises(ValueError, match="unknown VAE"):
        fit_encode("nope", train, test, epochs=1, seed=3)
