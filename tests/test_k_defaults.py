"""Default k and k grid sized from the data (until graph clustering picks k by itself)."""
from __future__ import annotations

from mmae_core.config import DEFAULT_K_GRID
from mmae_core.clustering.k_defaults import suggest_k


def test_labelled_data_centres_the_grid_on_its_label_count():
    s = suggest_k(1797, 10, {"image", "audio", "text"})
    assert s.k == 10 and s.grid == (5, 8, 10, 15, 20) and not s.luma_shaped


def test_unlabelled_data_uses_the_square_root_rule_and_stays_below_the_item_count():
    assert suggest_k(1797).k == 30
    small = suggest_k(5)
    assert small.k >= 2 and all(2 <= k < 5 for k in small.grid)


def test_luma_shaped_data_keeps_the_papers_grid():
    s = suggest_k(3000, 50, {"image", "audio", "text"})
    assert s.luma_shaped and s.k == 50 and s.grid == DEFAULT_K_GRID
    assert not suggest_k(3000, 50, {"image", "text"}).luma_shaped
