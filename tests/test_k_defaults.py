"""Default k and k grid: found by the method (auto), the paper's grid for LUMA-shaped data, and a
sized k and grid to offer when auto is turned off."""
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


def test_auto_is_the_default_except_for_the_papers_grid_on_luma_shaped_data():
    s = suggest_k(1797, 10, {"image", "audio", "text"})
    assert s.mode == "auto" and s.k_text == "auto" and s.grid_text == "auto"
    luma = suggest_k(3000, 50, {"image", "audio", "text"})
    assert luma.k_text == "auto" and luma.grid_text == "30, 40, 42, 50, 60"
    sized = suggest_k(1797, 10, mode="sized")
    assert sized.k_text == "10" and sized.grid_text == "5, 8, 10, 15, 20"
