"""The MMAE module: shapes, fusion over present modalities, loss that skips missing rows, dropout."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mmae_core.config import TrainConfig
from mmae_core.model.mmae import MMAE, noise_std
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
    assert out.loss.shape == () and out.parts.shape == (len(DIMS) + 4,)
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


def test_the_paper_objective_is_the_sum_of_reconstructions_and_has_no_new_weights() -> None:
    """The options default off: the paper preset's loss is exactly Σ_m MSE(x_m, D_m(mean of z_m)), its
    extra parts are 0, and the mean model has no fusion parameter (its checkpoints are unchanged)."""
    from mmae_core.config import PRESETS, TrainConfig

    cfg = PRESETS["paper"]
    assert (cfg.contrastive_weight, cfg.cross_weight, cfg.fusion, cfg.align_weight) == (0.0, 0.0, "mean", 0.0)
    assert cfg == TrainConfig()
    model = _model().train()
    assert not any("fusion" in k for k in model.state_dict())
    x = _batch(16)
    every = {m: None for m in DIMS}
    out = model(x, every, every)
    z = torch.stack([enc(x[m]) for m, enc in zip(model.names, model.enc)]).mean(0)
    want = sum(torch.nn.functional.mse_loss(dec(z), x[m]) for m, dec in zip(model.names, model.dec))
    torch.testing.assert_close(out.loss, want, rtol=1e-6, atol=1e-7)
    assert out.parts[len(DIMS):-1].abs().sum() == 0


def test_input_noise_reaches_the_encoders_only_and_the_targets_stay_clean() -> None:
    """A denoising step: the encoders see x plus seeded noise of the given std, every reconstruction
    is scored on the clean x, and the draws come from torch's global generator (so a seed repeats them)."""
    model = _model().train()
    x = _batch(16)
    every = {m: None for m in DIMS}
    torch.manual_seed(5)
    out = model(x, every, every, input_noise=0.5, noise_full_width=16)
    torch.manual_seed(5)
    # from 16 features up a view gets the full 0.5; the image (6) and text (12) views 6/16 and 12/16 of it
    seen = {m: v + 0.5 * min(1.0, v.shape[1] / 16) * torch.randn_like(v) for m, v in x.items()}
    z = torch.stack([enc(seen[m]) for m, enc in zip(model.names, model.enc)]).mean(0)
    want = sum(torch.nn.functional.mse_loss(dec(z), x[m]) for m, dec in zip(model.names, model.dec))
    torch.testing.assert_close(out.loss, want, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out.z, z, rtol=1e-6, atol=1e-7)
    clean = model(x, every, every)
    assert not torch.allclose(clean.z, out.z)


def test_a_view_narrower_than_the_full_noise_width_gets_proportionally_less_noise() -> None:
    full = TrainConfig().noise_full_width
    assert full == 32
    assert noise_std(32, 0.6, full) == noise_std(240, 0.6, full) == 0.6  # every real view but one, and the demo's
    assert noise_std(16, 1.0, full) == 0.5 and noise_std(6, 1.0, full) == pytest.approx(0.1875)  # UCI morphology
    assert noise_std(6, 0.0, full) == 0.0 and noise_std(6, 1.0) == 1.0  # a full width of 1: every view the same


def test_infonce_is_the_symmetric_cross_entropy_of_cosine_over_temperature() -> None:
    model = _model().train()
    x = _batch(16)
    every = {m: None for m in DIMS}
    out = model(x, every, every, contrastive_weight=1.0, temperature=0.5)
    hs = {m: torch.nn.functional.normalize(h, dim=1) for m, h in out.zs.items()}
    t = torch.arange(16)
    pairs = [("image", "audio"), ("image", "text"), ("audio", "text")]
    want = sum(0.5 * (torch.nn.functional.cross_entropy(hs[a] @ hs[b].T / 0.5, t)
                      + torch.nn.functional.cross_entropy(hs[b] @ hs[a].T / 0.5, t)) for a, b in pairs) / 3
    torch.testing.assert_close(out.parts[len(DIMS) + 1], want.detach(), rtol=1e-5, atol=1e-6)
    # only rows that encoded both modalities are paired: a missing row's garbage changes nothing
    has_audio = torch.from_numpy(np.flatnonzero(np.arange(16) >= 4))
    rows = {"image": None, "audio": has_audio, "text": None}
    inv = torch.tensor([[1 / 2]] * 4 + [[1 / 3]] * 12)
    a = _model().train()(x, rows, rows, inv, contrastive_weight=1.0)
    x2 = {m: v.clone() for m, v in x.items()}
    x2["audio"][:4] = 1e6
    b = _model().train()(x2, rows, rows, inv, contrastive_weight=1.0)
    torch.testing.assert_close(a.parts, b.parts, rtol=0, atol=0)


def test_cross_reconstruction_decodes_each_modality_from_the_others_mean() -> None:
    model = _model().train()
    x = _batch(16)
    every = {m: None for m in DIMS}
    out = model(x, every, every, cross_weight=1.0)
    want = 0.0
    for j, m in enumerate(model.names):
        others = torch.stack([out.zs[o] for o in model.names if o != m]).mean(0)
        want = want + torch.nn.functional.mse_loss(model.dec[j](others), x[m])
    torch.testing.assert_close(out.parts[len(DIMS) + 2], want.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.loss, out.parts[: len(DIMS)].sum() + want, rtol=1e-5, atol=1e-6)


def test_reliability_fusion_weighs_modalities_by_learned_weights_and_starts_as_the_mean() -> None:
    torch.manual_seed(0)
    model = MMAE(DIMS, latent=8, hidden=(16, 12), fusion="reliability").eval()
    x = _batch(10)
    every = {m: None for m in DIMS}
    with torch.no_grad():
        z0, hs = model.fuse(x, every)
        torch.testing.assert_close(z0, torch.stack(list(hs.values())).mean(0), rtol=1e-5, atol=1e-6)
        model.fusion_logit.copy_(torch.tensor([0.0, 1.0, -1.0]))
        z1, _ = model.fuse(x, every)
    w = torch.tensor([1.0, np.e, np.exp(-1.0)])
    want = sum(w[j] * hs[m] for j, m in enumerate(model.names)) / w.sum()
    torch.testing.assert_close(z1, want, rtol=1e-5, atol=1e-6)
    assert model.fusion_logit.requires_grad
