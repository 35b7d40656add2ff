"""The MMAE module: shapes, fusion over present modalities, loss that skips missing rows, dropout."""
from __future__ import annotations

import numpy as np
import torch

from mmae_core.model.mmae import MMAE
from mmae_core.model.train import dropout_mask

DIMS = {"image": 6, "audio": 20, "text": 12}


def _batch(n: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(n, d, generator=g) for m, d in DIMS.items()}


def _model(seed: int = 0, latent: int = 8) -> MMAE:
    torch.manual_seed(seed)
    return MMAE(DIMS, latent=latent, hidden=(16, 12))


def test_forward_shapes() -> None:
    model = _model()
    x = _batch(16)
    none = {m: None for m in DIMS}
    out = model(x, none, none, align_weight=0.5)
    assert out.z.shape == (16, 8)
    assert {m: tuple(h.shape) for m, h in out.zs.items()} == {m: (16, 8) for m in DIMS}
    assert out.loss.shape == () and out.parts.shape == (len(DIMS) + 2,)
    assert out.parts[-1] == out.loss.detach()
    assert not out.parts.requires_grad
    rec = model.decode(out.z)
    assert {m: tuple(r.shape) for m, r in rec.items()} == {m: (16, d) for m, d in DIMS.items()}
    # encoder: Linear(d,16) BN ReLU Linear(16,12) BN ReLU Linear(12,8); decoder mirrored
    enc = [tuple(p.shape) for p in model.enc[1].parameters() if p.ndim == 2]
    dec = [tuple(p.shape) for p in model.dec[1].parameters() if p.ndim == 2]
    assert enc == [(16, 20), (12, 16), (8, 12)]
    assert dec == [(12, 8), (16, 12), (20, 16)]


def test_fusion_is_mean_of_present_encodings() -> None:
    model = _model().eval()  # eval: BatchNorm uses running stats, so each row is encoded on its own
    x = _batch(10)
    has = {"image": np.arange(10) % 2 == 0, "audio": np.arange(10) < 7, "text": np.ones(10, bool)}
    rows = {m: torch.from_numpy(np.flatnonzero(h)) for m, h in has.items()}
    count = sum(h.astype(np.float32) for h in has.values())
    inv = torch.from_numpy(1.0 / count)[:, None]
    with torch.no_grad():
        z, zs = model.fuse(x, rows, inv)
        full = {m: enc(x[m]) for m, enc in zip(model.names, model.enc)}
    for i in range(10):
        want = torch.stack([full[m][i] for m in DIMS if has[m][i]]).mean(0)
        torch.testing.assert_close(z[i], want, rtol=1e-5, atol=1e-6)
    for m in DIMS:
        torch.testing.assert_close(zs[m], full[m][rows[m]], rtol=1e-5, atol=1e-6)


def test_loss_skips_missing_rows_in_training_mode() -> None:
    """Garbage in missing rows must not change anything: not the loss, not BatchNorm statistics."""
    x = _batch(12)
    has_audio = torch.from_numpy(np.flatnonzero(np.arange(12) >= 4))  # rows 0-3 lack audio
    enc = {"image": None, "audio": has_audio, "text": None}
    inv = torch.tensor([[1 / 2]] * 4 + [[1 / 3]] * 8)
    model = _model().train()
    a = model(x, enc, enc, inv, align_weight=1.0)
    model = _model().train()
    x2 = {m: v.clone() for m, v in x.items()}
    x2["audio"][:4] = 1e6
    b = model(x2, enc, enc, inv, align_weight=1.0)
    torch.testing.assert_close(a.parts, b.parts, rtol=0, atol=0)
    # and the audio loss is the MSE over the 8 rows that have audio
    with torch.no_grad():
        rec = model.dec[1](a.z[4:])
    torch.testing.assert_close(a.parts[1], torch.nn.functional.mse_loss(rec, x["audio"][4:]), rtol=1e-5, atol=1e-6)


def test_single_row_batch_norm_does_not_raise() -> None:
    model = _model().train()
    x = _batch(5)
    one = torch.tensor([2])
    rows = {"image": None, "audio": one, "text": None}
    inv = torch.tensor([[1 / 2]] * 5)
    inv[2] = 1 / 3
    out = model(x, rows, rows, inv)
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_dropout_keeps_at_least_one_and_drops_at_least_one() -> None:
    rng = np.random.default_rng(0)
    present = rng.random((4000, 3)) < 0.7
    present[~present.any(axis=1), 0] = True
    gen = torch.Generator().manual_seed(1)
    keep = dropout_mask(present, 0.6, gen)
    k, p = keep.sum(axis=1), present.sum(axis=1)
    assert (k >= 1).all()
    assert not (keep & ~present).any()  # never invents a modality
    assert (keep[p == 1] == present[p == 1]).all()  # a lone modality is never dropped
    hit = k < p
    assert np.all(k[hit] >= 1)
    rate = hit[p >= 2].mean()
    assert 0.55 < rate < 0.65, rate  # the probability is honoured
    # every non-empty proper subset of three modalities occurs
    full = p == 3
    kinds = {tuple(r) for r in keep[full & hit].astype(int)}
    assert len(kinds) == 6
    assert (dropout_mask(present, 0.0, gen) == present).all()
