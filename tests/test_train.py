"""The trainer: progress, cancellation, reproducibility, encoding from any subset, errors."""
from __future__ import annotations

from dataclasses import replace
from itertools import combinations

import numpy as np
import pytest

from mmae_core.config import TrainConfig
from mmae_core.dataset import FeatureSet, Split
from mmae_core.errors import CancelledError, ConfigError, StudioError
from mmae_core.train import Progress, TrainedModel, encode, reconstruction_error, train

DIMS = {"image": 6, "audio": 20, "text": 12}
CFG = TrainConfig(epochs=4, batch_size=32, latent=8, hidden=(32, 16), seed=7)


def make_set(n: int = 300, seed: int = 0, missing: bool = True, name: str = "toy") -> FeatureSet:
    """Three views of one 4-d latent factor, with some rows missing, as a validated FeatureSet."""
    rng = np.random.default_rng(seed)
    factor = rng.normal(size=(n, 4))
    feats = {
        m: (np.tanh(factor @ rng.normal(size=(4, d))) + 0.1 * rng.normal(size=(n, d))).astype(np.float32)
        for m, d in DIMS.items()
    }
    if missing:
        feats["audio"][:30] = np.nan
        feats["text"][20:50] = np.nan
    ids = np.array([f"item-{i}" for i in range(n)], dtype=object)
    return FeatureSet(name, dict(DIMS), {"train": Split(ids, feats)}).validate()


@pytest.fixture(scope="module")
def fs() -> FeatureSet:
    return make_set()


@pytest.fixture(scope="module")
def tm(fs: FeatureSet) -> TrainedModel:
    return train(fs, CFG)


def test_progress_reports_every_epoch_with_per_modality_losses(fs: FeatureSet) -> None:
    seen: list[Progress] = []
    tm = train(fs, replace(CFG, epochs=3), on_progress=seen.append)
    assert [p.epoch for p in seen] == [1, 2, 3]
    assert all(p.epochs == 3 and p.steps_per_epoch == 10 and p.step == 10 * p.epoch for p in seen)
    for p in seen:
        assert set(p.losses) == {"image", "audio", "text", "total"}
        assert all(np.isfinite(v) and v > 0 for v in p.losses.values())
        assert p.losses["total"] == pytest.approx(p.losses["image"] + p.losses["audio"] + p.losses["text"])
    assert seen[-1].eta_s == 0.0 and seen[0].elapsed_s <= seen[-1].elapsed_s
    assert seen[-1].losses["total"] < seen[0].losses["total"]  # it learns
    assert [h["epoch"] for h in tm.history] == [1, 2, 3]
    assert tm.history[-1]["losses"] == seen[-1].losses
    assert tm.dataset_name == "toy" and tm.modalities == DIMS and tm.train_seconds > 0


def test_cancellation_between_steps(fs: FeatureSet) -> None:
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 15

    with pytest.raises(CancelledError, match="epoch 2 of 4"):
        train(fs, CFG, should_stop=stop)
    assert len(calls) == 16  # checked before every step, stopped at once


def test_same_seed_identical_latents_other_seed_differs(fs: FeatureSet, tm: TrainedModel) -> None:
    z1, per1 = encode(tm, fs.splits["train"].features)
    z2, per2 = encode(train(fs, CFG), fs.splits["train"].features)
    assert np.array_equal(z1, z2)
    assert all(np.array_equal(per1[m], per2[m], equal_nan=True) for m in DIMS)
    z3, _ = encode(train(fs, replace(CFG, seed=8)), fs.splits["train"].features)
    assert not np.allclose(z1, z3, atol=1e-3)


def test_options_dropout_alignment_and_early_stopping_train(fs: FeatureSet) -> None:
    cfg = replace(CFG, modality_dropout=0.5, align_weight=0.5, epochs=3)
    seen: list[Progress] = []
    tm = train(fs, cfg, on_progress=seen.append)
    assert "align" in seen[-1].losses and seen[-1].losses["align"] > 0
    assert seen[-1].losses["total"] == pytest.approx(
        sum(seen[-1].losses[m] for m in DIMS) + 0.5 * seen[-1].losses["align"]
    )
    z, _ = encode(tm, fs.splits["train"].features)
    assert np.isfinite(z).all()
    es = train(make_set(120), replace(CFG, epochs=30, early_stopping=1, val_fraction=0.25, lr=3e-2))
    assert len(es.history) < 30 and all("val_total" in h for h in es.history)
    best = min(range(len(es.history)), key=lambda i: es.history[i]["val_total"])
    assert best == len(es.history) - 2  # stopped one epoch after the best, whose weights it kept


def test_encode_from_every_subset_of_modalities(fs: FeatureSet, tm: TrainedModel) -> None:
    feats = fs.splits["train"].features
    present = {m: fs.splits["train"].present(m) for m in DIMS}
    full, per = encode(tm, feats, complete_missing=False)
    assert full.shape == (300, 8) and np.isfinite(full).all()
    for m in DIMS:
        assert per[m].shape == (300, 8)
        assert np.array_equal(np.isnan(per[m]).all(axis=1), ~present[m])
        assert np.isfinite(per[m][present[m]]).all()
    # fused = mean of the per-modality latents an item has
    stack = np.stack([per[m] for m in DIMS])
    np.testing.assert_allclose(full, np.nanmean(stack, axis=0), rtol=1e-5, atol=1e-5)
    for k in (1, 2):
        for subset in combinations(DIMS, k):
            z, zs = encode(tm, {m: feats[m] for m in subset}, batch_size=64, complete_missing=False)
            has = np.zeros(300, bool)
            for m in subset:
                has |= present[m]
            assert np.isfinite(z[has]).all() and np.isnan(z[~has]).all()
            for m in DIMS:
                if m in subset:
                    np.testing.assert_allclose(zs[m], per[m], rtol=1e-5, atol=1e-5)  # a modality's latent is its own
                else:
                    assert np.isnan(zs[m]).all()
            if k == 1:
                np.testing.assert_allclose(z[has], zs[subset[0]][has], rtol=1e-6)


def test_encode_rejects_unknown_or_misshapen_input(tm: TrainedModel) -> None:
    with pytest.raises(StudioError, match="video"):
        encode(tm, {"video": np.zeros((3, 4), np.float32)})
    with pytest.raises(StudioError, match=r"expects \(items, 6\)"):
        encode(tm, {"image": np.zeros((3, 7), np.float32)})
    with pytest.raises(StudioError, match="at least one"):
        encode(tm, {})


def test_reconstruction_error_flags_items_unlike_the_training_data(fs: FeatureSet, tm: TrainedModel) -> None:
    feats = fs.splits["train"].features
    err = reconstruction_error(tm, feats)
    for m in DIMS:
        assert err[m].shape == (300,)
        assert np.array_equal(np.isnan(err[m]), ~fs.splits["train"].present(m))
    rng = np.random.default_rng(5)
    odd = {m: (rng.normal(size=(50, d)) * 3).astype(np.float32) for m, d in DIMS.items()}
    odd_err = reconstruction_error(tm, odd)
    for m in DIMS:
        assert np.nanmedian(odd_err[m]) > 2 * np.nanmedian(err[m])


def test_huge_learning_rate_and_divergence_give_one_sentence(fs: FeatureSet) -> None:
    with pytest.raises(ConfigError, match="learning rate"):
        train(fs, replace(CFG, lr=1e6))
    # lr is capped below 10 and BatchNorm keeps activations bounded, so no valid lr blows a float32
    # run up; an absurd alignment weight does (λ·align overflows float32, then Adam's moments go NaN).
    with pytest.raises(StudioError, match=r"training diverged at epoch 1 .*lower the learning rate .*alignment weight") as info:
        train(fs, replace(CFG, align_weight=1e39))
    assert str(info.value).count(";") == 1 and str(info.value).endswith(".")


def test_needs_two_modalities_and_finite_values() -> None:
    one = make_set(60, missing=False)
    one = FeatureSet("one", {"image": 6}, {"train": Split(one.splits["train"].item_ids, {"image": one.splits["train"].features["image"]})})
    with pytest.raises(ConfigError, match="at least two"):
        train(one, CFG)
    bad = make_set(60, missing=False)
    bad.splits["train"].features["text"][3, 2] = np.inf  # not validated: the trainer still refuses it
    with pytest.raises(StudioError, match="text .*row 3"):
        train(bad, CFG)


def test_parallel_step_has_the_gradients_of_the_one_graph_objective() -> None:
    """The threaded step (modality groups) must optimize exactly MMAE.forward's objective."""
    import torch

    from mmae_core.model import MMAE
    from mmae_core.train import _Batch, _inv_count, _rows, _Stepper, dropout_mask

    rng = np.random.default_rng(3)
    n = 40
    x = {m: torch.from_numpy(rng.normal(size=(n, d)).astype(np.float32)) for m, d in DIMS.items()}
    present = rng.random((n, 3)) < 0.7
    present[~present.any(axis=1), 0] = True
    enc_mask = dropout_mask(present, 0.5, torch.Generator().manual_seed(0))
    names = list(DIMS)
    for j, m in enumerate(names):
        x[m][~present[:, j]] = 0.0
    cpu = torch.device("cpu")
    batch = _Batch(x, _rows(enc_mask, names, cpu), _rows(present, names, cpu), _inv_count(enc_mask, cpu))
    # a group whose first modality is in every row and a later one is not (image | text with gaps)
    complete_image = present.copy()
    complete_image[:, 0] = True
    x_gaps = {m: v.clone() for m, v in x.items()}
    x_gaps["image"] = torch.from_numpy(rng.normal(size=(n, DIMS["image"])).astype(np.float32))
    gaps = _Batch(x_gaps, _rows(complete_image, names, cpu), _rows(complete_image, names, cpu), _inv_count(complete_image, cpu))
    assert gaps.enc_rows["image"] is None and gaps.enc_rows["text"] is not None
    for batch, groups in [(batch, g) for g in ([[0, 1, 2]], [[1], [0, 2]], [[0], [1], [2]])] + [(gaps, [[1], [0, 2]])]:
        torch.manual_seed(0)
        ref = MMAE(DIMS, latent=8, hidden=(16, 12))
        par = MMAE(DIMS, latent=8, hidden=(16, 12))
        par.load_state_dict(ref.state_dict())
        out = ref(batch.x, batch.enc_rows, batch.dec_rows, batch.inv_count, align_weight=0.7)
        out.loss.backward()
        step = _Stepper(par, groups, lr=0.0, align_weight=0.7)
        parts = step(batch)
        torch.testing.assert_close(parts, out.parts, rtol=1e-5, atol=1e-6)
        for (name, p), q in zip(ref.named_parameters(), par.parameters()):
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
        for (name, p), q in zip(ref.named_buffers(), par.buffers()):  # BatchNorm running statistics
            torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)
        step.close()
        assert all(q.grad is None for q in par.parameters())
        for (name, p), q in zip(ref.named_parameters(), par.parameters()):  # lr 0: no weight moved
            assert torch.equal(p, q), name


def test_weight_decay_is_adamw_and_the_paper_preset_keeps_plain_adam(fs: FeatureSet) -> None:
    import torch

    from mmae_core.config import preset
    from mmae_core.model import MMAE
    from mmae_core.train import _Stepper

    assert preset("paper").weight_decay == 0.0 and preset("aligned").weight_decay > 0
    model = MMAE(DIMS, latent=8, hidden=(16,))
    for wd, kind in ((0.0, torch.optim.Adam), (0.3, torch.optim.AdamW)):
        step = _Stepper(model, [[0, 1, 2]], lr=1e-3, align_weight=0.0, weight_decay=wd)
        assert type(step.opts[0]) is kind and step.opts[0].param_groups[0]["weight_decay"] == wd
        step.close()
    # decay shrinks the weights: the same run with a strong decay ends with a smaller norm
    norms = {}
    for wd in (0.0, 5.0):
        tm = train(fs, replace(CFG, epochs=5, weight_decay=wd))
        norms[wd] = float(sum((p.detach() ** 2).sum() for p in tm.model.parameters()))
    assert norms[5.0] < 0.8 * norms[0.0]
    with pytest.raises(ConfigError, match=r"weight decay must be in \[0, 10\) \(got -0.1\)"):
        replace(CFG, weight_decay=-0.1).checked()


@pytest.mark.parametrize("hidden", [(16, 12), (10,), (16, 12, 8)])
@pytest.mark.parametrize("n", [40, 1])
def test_fused_step_has_the_gradients_of_the_one_graph_objective(hidden: tuple[int, ...], n: int) -> None:
    """The fused step (complete batches, parallel="ops") must optimize exactly MMAE.forward's
    objective, for any depth, and with a lone row (running statistics instead of batch ones)."""
    import torch

    from mmae_core.model import MMAE
    from mmae_core.step_fused import FusedStepper

    rng = np.random.default_rng(3)
    x = {m: torch.from_numpy(rng.normal(size=(n, d)).astype(np.float32)) for m, d in DIMS.items()}
    torch.manual_seed(0)
    ref, par = MMAE(DIMS, latent=8, hidden=hidden), MMAE(DIMS, latent=8, hidden=hidden)
    par.load_state_dict(ref.state_dict())
    every = {m: None for m in DIMS}
    out = ref(x, every, every, None)
    out.loss.backward()
    step = FusedStepper(par, lr=0.0)
    parts = step(torch.cat(list(x.values()), 1))
    torch.testing.assert_close(parts, out.parts, rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(ref.named_parameters(), par.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
    for (name, p), q in zip(ref.named_buffers(), par.buffers()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)
    step.close()
    for (name, p), q in zip(ref.named_parameters(), par.parameters()):  # own, contiguous storage; lr 0 moved nothing
        assert q.grad is None and q.is_contiguous() and torch.equal(p, q), name
    assert all(b.is_contiguous() for b in par.buffers())


@pytest.mark.parametrize("wd", [0.0, 0.3])
def test_flat_adam_is_torch_adam_bit_for_bit(wd: float) -> None:
    import torch

    from mmae_core.step_fused import FlatAdam

    g = torch.Generator().manual_seed(0)
    start = torch.randn(1000, generator=g)
    ref = torch.nn.Parameter(start.clone())
    opt = (torch.optim.AdamW if wd else torch.optim.Adam)([ref], lr=1e-3, weight_decay=wd, fused=True)
    mine, grad = start.clone(), torch.zeros(1000)
    adam = FlatAdam(mine, grad, lr=1e-3, weight_decay=wd)
    for _ in range(5):
        step_grad = torch.randn(1000, generator=g)
        ref.grad = step_grad.clone()
        opt.step()
        grad.copy_(step_grad)
        adam.step()
    assert torch.equal(ref.detach(), mine)


def test_parallel_ops_is_reproducible_and_uses_the_fused_step_only_where_it_applies() -> None:
    complete = make_set(200, missing=False, name="complete")
    ops = replace(CFG, parallel="ops")
    a, b = train(complete, ops), train(complete, ops)
    assert a.plan.startswith("fused step") and b.plan == a.plan
    za, _ = encode(a, complete.splits["train"].features)
    zb, _ = encode(b, complete.splits["train"].features)
    assert np.array_equal(za, zb)
    assert a.history[-1]["losses"]["total"] < a.history[0]["losses"]["total"]
    # the same data and seed with the default plan: other rounding, the same objective
    c = train(complete, CFG)
    assert not c.plan.startswith("fused")
    assert abs(c.history[-1]["losses"]["total"] - a.history[-1]["losses"]["total"]) < 0.05
    # gaps, modality dropout or alignment: the per-modality step, also under parallel="ops"
    per_modality = "image+audio+text on 1 thread(s), " + a.plan.split(", ")[1] + " each"
    for data, cfg in ((make_set(200), ops), (complete, replace(ops, modality_dropout=0.5)), (complete, replace(ops, align_weight=0.1))):
        assert train(data, cfg).plan == per_modality
    # early stopping holds out a validation part: the fused step trains on the rest
    es = train(complete, replace(ops, epochs=30, early_stopping=2, val_fraction=0.2))
    assert es.plan == a.plan and "val_total" in es.history[0]
    with pytest.raises(ConfigError, match="parallel must be modalities or ops"):
        replace(CFG, parallel="threads").checked()
