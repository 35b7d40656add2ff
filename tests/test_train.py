"""The trainer: progress, cancellation, reproducibility, encoding from any subset, errors."""
from __future__ import annotations

from dataclasses import replace
from itertools import combinations

import numpy as np
import pytest

from mmae_core.config import TrainConfig
from mmae_core.data.dataset import FeatureSet, Split
from mmae_core.errors import CancelledError, ConfigError, StudioError
from mmae_core.model.train import Progress, TrainedModel, encode, reconstruction_error, train

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


def test_weight_decay_is_adamw_and_the_paper_preset_keeps_plain_adam(fs: FeatureSet) -> None:
    import torch

    from mmae_core.config import preset
    from mmae_core.model.mmae import MMAE
    from mmae_core.model.train import make_optimizer

    assert preset("paper").weight_decay == 0.0 and preset("aligned").weight_decay > 0
    model = MMAE(DIMS, latent=8, hidden=(16,))
    for wd, kind in ((0.0, torch.optim.Adam), (0.3, torch.optim.AdamW)):
        opt, name = make_optimizer(list(model.parameters()), lr=1e-3, weight_decay=wd)
        assert type(opt) is kind and opt.param_groups[0]["weight_decay"] == wd and kind.__name__ in name
    # decay shrinks the weights: the same run with a strong decay ends with a smaller norm
    norms = {}
    for wd in (0.0, 5.0):
        tm = train(fs, replace(CFG, epochs=5, weight_decay=wd))
        norms[wd] = float(sum((p.detach() ** 2).sum() for p in tm.model.parameters()))
    assert norms[5.0] < 0.8 * norms[0.0]
    with pytest.raises(ConfigError, match=r"weight decay must be in \[0, 10\) \(got -0.1\)"):
        replace(CFG, weight_decay=-0.1)


def test_one_step_is_autograd_and_torch_optim_on_the_one_model() -> None:
    """The trainer's first step moves the weights exactly as MMAE.forward's loss, backward() and
    torch.optim.Adam do by hand: there is no second definition of the step to drift from it."""
    import torch

    from mmae_core.model.mmae import MMAE

    data = make_set(64, missing=False)
    cfg = replace(CFG, epochs=1, batch_size=64)  # one batch: the whole (shuffled) split
    tm = train(data, cfg)
    # by hand: the same seeded weights, the same standardized rows (order does not change BatchNorm's
    # batch statistics or the mean loss up to rounding), one Adam step
    from mmae_core.model.standardize import Standardizer

    x = data.splits["train"].features
    std = Standardizer.fit(x)
    xs = {m: torch.from_numpy(v) for m, v in std.transform(x).items()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        ref = MMAE(DIMS, cfg.latent, cfg.hidden)
    opt = torch.optim.Adam(ref.parameters(), lr=cfg.lr)
    every = {m: None for m in DIMS}
    ref.train()
    ref(xs, every, every).loss.backward()
    opt.step()
    compared = 0
    for (name, p), q in zip(ref.named_parameters(), tm.model.parameters()):
        # an encoder's last bias shifts every z alike, which the decoders' first BatchNorm removes: its
        # true gradient is 0 and Adam's first step follows the sign of rounding noise; skip those
        meaningful = p.grad.abs() > 1e-6
        torch.testing.assert_close(q[meaningful], p[meaningful], rtol=1e-4, atol=1e-5, msg=name)
        compared += int(meaningful.sum())
    assert compared > 0.9 * sum(p.numel() for p in ref.parameters())


def test_no_second_step_no_native_code_no_private_torch_api() -> None:
    """The core has one model definition trained by autograd: no C/C++ sources, no hand-written
    backward, no private torch API that a torch upgrade could break without warning."""
    import re
    from pathlib import Path

    core = Path(__file__).resolve().parent.parent / "mmae_core"
    assert not [p for p in core.rglob("*") if p.suffix in {".c", ".cc", ".cpp", ".h", ".hpp", ".cu"}]
    private = re.compile(r"torch\._[a-z]|torch\.ops\.aten|native_batch_norm|\.backward\(.*need_input|def \w*backward\(")
    offenders = [f"{p.name}:{i}" for p in core.rglob("*.py") for i, line in enumerate(p.read_text().splitlines(), 1) if private.search(line)]
    assert offenders == []


def test_a_disk_backed_split_trains_to_the_same_latents_as_memory(tmp_path) -> None:
    from mmae_core.model.batches import ArrayRows, write_npy_rows
    from mmae_core.model.train import train_rows

    data = make_set(200)
    feats = data.splits["train"].features
    disk = write_npy_rows(ArrayRows(feats), tmp_path / "feats")
    cfg = replace(CFG, modality_dropout=0.3, align_weight=0.1, early_stopping=2, val_fraction=0.2)
    a = train_rows(ArrayRows(feats), cfg)
    b = train_rows(disk, cfg)
    assert [h["losses"] for h in a.history] == [h["losses"] for h in b.history]
    za, pa = encode(a, feats)
    zb, pb = encode(b, disk)
    assert np.array_equal(za, zb, equal_nan=True)
    assert all(np.array_equal(pa[m], pb[m], equal_nan=True) for m in DIMS)


@pytest.mark.parametrize("option", [{"contrastive_weight": 1.0}, {"cross_weight": 1.0}, {"fusion": "reliability"},
                                    {"input_noise": 0.5}])
def test_each_new_objective_option_changes_training_and_reports_its_term(fs: FeatureSet, tm: TrainedModel, option: dict) -> None:
    seen: list[Progress] = []
    other = train(fs, replace(CFG, **option), on_progress=seen.append)
    assert not np.allclose(encode(other, fs.splits["train"].features)[0], encode(tm, fs.splits["train"].features)[0], equal_nan=True)
    term = {"contrastive_weight": "contrastive", "cross_weight": "cross"}.get(next(iter(option)))
    if term:
        assert seen[-1].losses[term] > 0
        assert seen[-1].losses["total"] == pytest.approx(sum(seen[-1].losses[m] for m in DIMS) + seen[-1].losses[term], rel=1e-5)
    else:
        assert set(seen[-1].losses) == {*DIMS, "total"}
    if "fusion" in option:
        assert not np.allclose(other.model.fusion_logit.detach().numpy(), 0.0)  # the weights were learned


def test_only_views_narrower_than_the_noise_full_width_get_less_noise(fs: FeatureSet) -> None:
    """The views have 6, 12 and 20 features: a full width of 1 or 6 quiets none of them (same run), 20
    quiets two (another run)."""
    def latents(width: int) -> np.ndarray:
        return encode(train(fs, replace(CFG, input_noise=0.5, noise_full_width=width)), fs.splits["train"].features)[0]

    every_view_full = latents(1)
    assert np.array_equal(latents(6), every_view_full, equal_nan=True)
    assert not np.allclose(latents(20), every_view_full, equal_nan=True)


def test_the_default_preset_is_reproducible_and_survives_a_checkpoint(fs: FeatureSet) -> None:
    from mmae_core.config import DEFAULT_PRESET, preset
    from mmae_core.model.checkpoint import load_checkpoint, save_checkpoint

    cfg = preset(DEFAULT_PRESET, epochs=3, batch_size=32, latent=8, hidden=(32, 16), seed=11)
    assert DEFAULT_PRESET != "paper"
    a, b = train(fs, cfg), train(fs, cfg)
    za, pa = encode(a, fs.splits["train"].features)
    zb, pb = encode(b, fs.splits["train"].features)
    assert np.array_equal(za, zb, equal_nan=True) and all(np.array_equal(pa[m], pb[m], equal_nan=True) for m in DIMS)
    assert [h["losses"] for h in a.history] == [h["losses"] for h in b.history]
    c = load_checkpoint(save_checkpoint(a))
    assert c.config == a.config
    assert np.array_equal(encode(c, fs.splits["train"].features)[0], za, equal_nan=True)
    with pytest.raises(ConfigError, match="temperature"):
        replace(cfg, temperature=0.0)
    with pytest.raises(ConfigError, match="fusion must be mean or reliability"):
        replace(cfg, fusion="max")
    with pytest.raises(ConfigError, match="input noise must be in"):
        replace(cfg, input_noise=-0.1)
    with pytest.raises(ConfigError, match="noise full width must be at least 1"):
        replace(cfg, noise_full_width=0)


def test_importing_the_core_lets_openmp_threads_sleep_unless_told_otherwise() -> None:
    """Spinning OpenMP threads made a step 67x slower on a busy machine: the core asks for sleeping
    ones before torch loads, and leaves a policy the environment already chose."""
    import os
    import subprocess
    import sys

    code = "import mmae_core, os, torch; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "PASSIVE", out.stderr
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"}, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ACTIVE", out.stderr
