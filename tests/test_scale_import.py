"""Streaming import at small sizes: a folder's .npy files read in windows give exactly what a whole
read gives, the same refusals, and the training budget's arithmetic."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmae_core.config import TrainConfig
from mmae_core.data import lazy
from mmae_core.data.features import load_path
from mmae_core.data.lazy import NpyWindows
from mmae_core.errors import ConfigError, DataError
from store import Store
from studio.pipeline import LARGE_BATCH, budgeted


def _folder(root: Path, n: int = 3000, bad_row: int | None = None) -> Path:
    rng = np.random.default_rng(0)
    for split, m in (("train", n), ("test", n // 5)):
        (root / split).mkdir(parents=True)
        for mod, d in (("audio", 40), ("image", 30)):
            x = rng.normal(size=(m, d)).astype(np.float32)
            if split == "train" and mod == "audio":
                x[7] = np.nan  # a missing modality: allowed
                if bad_row is not None:
                    x[bad_row, 3] = np.inf
            np.save(root / split / f"{mod}.npy", x)
    return root


def test_streamed_folder_is_stored_exactly_like_a_whole_read(tmp_path, monkeypatch):
    monkeypatch.setattr(lazy, "WINDOW_BYTES", 4096)  # many windows even at this size
    src = _folder(tmp_path / "data")
    streamed = load_path(src, "s", stream=True)
    assert isinstance(streamed.splits["train"].features["audio"], NpyWindows)
    whole = load_path(src, "w")
    assert streamed.summary().equals(whole.summary())
    store = Store(tmp_path / "s.duckdb")
    seen = []
    store.add_dataset(streamed, on_written=lambda s, m, r: seen.append((s, m, r)))
    assert ("train", "audio", 3000) in seen and len(seen) == 4
    back = store.load_dataset("s")
    for split in whole.splits:
        for m in whole.modalities:
            np.testing.assert_array_equal(back.splits[split].features[m], whole.splits[split].features[m])


def test_a_bad_value_in_a_late_window_gets_the_whole_read_sentence_and_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(lazy, "WINDOW_BYTES", 4096)
    src = _folder(tmp_path / "data", bad_row=2900)
    with pytest.raises(DataError) as whole:
        load_path(src, "w")
    with pytest.raises(DataError) as streamed:
        load_path(src, "s", stream=True)
    assert str(streamed.value) == str(whole.value) and "row 2900" in str(whole.value)


def test_budget_rounds_samples_up_to_whole_epochs_and_widens_the_batch_only_when_large():
    cfg = TrainConfig()
    assert budgeted(cfg, 950_000, 2_000_000, batch_given=False).epochs == 3
    assert budgeted(cfg, 950_000, 2_000_000, batch_given=False).batch_size == LARGE_BATCH
    assert budgeted(cfg, 950_000, None, batch_given=True).batch_size == cfg.batch_size
    assert budgeted(cfg, 29_000, None, batch_given=False) == cfg  # the demo trains as before
    with pytest.raises(ConfigError):
        budgeted(cfg, 10, 0)


def test_a_large_split_with_no_epochs_asked_gets_the_sample_budget():
    from studio.pipeline import LARGE_SAMPLES, LARGE_TRAIN, default_samples

    assert default_samples(LARGE_TRAIN, None, epochs_given=False) == LARGE_SAMPLES
    assert default_samples(LARGE_TRAIN - 1, None, epochs_given=False) is None  # the demo: the preset's epochs
    assert default_samples(950_000, None, epochs_given=True) is None  # --epochs is obeyed
    assert default_samples(950_000, 500_000, epochs_given=False) == 500_000


def test_the_reliability_preset_trains_fewer_epochs_on_a_small_split_and_the_others_keep_their_own():
    from mmae_core.config import DEFAULT_PRESET, MIN_SIZED_EPOCHS, preset, sized_epochs
    from studio.pipeline import sized, sized_note

    by_size, paper = preset("reliability"), preset("paper")
    assert by_size.epochs_by_size and not paper.epochs_by_size
    ours = preset(DEFAULT_PRESET)  # with its input noise, the default does not overfit small sets
    assert sized_epochs(ours, 1_500) == ours.epochs == 100 and sized_note(ours, 1_500) is None
    assert sized_epochs(by_size, 300) == MIN_SIZED_EPOCHS == 20
    assert sized_epochs(by_size, 1_500) == 20 and sized_epochs(by_size, 4_200) == 56
    assert sized_epochs(by_size, 7_500) == sized_epochs(by_size, 90_000) == by_size.epochs == 100
    assert sized_epochs(paper, 1_500) == 100  # the paper's method, as published
    said: list[str] = []
    assert sized(by_size, 1_500, None, epochs_given=False, log=said.append).epochs == 20
    assert said == ["20 epochs for 1,500 train items: the preset's 100 cost clusters on small real sets; --epochs sets them"]
    assert sized(by_size, 1_500, None, epochs_given=True) == by_size  # --epochs is obeyed
    assert sized(by_size, 1_500, 50_000, epochs_given=False) == by_size  # so is a budget
