"""The Explore map of an archive-sized split in Chromium: above 30,000 points it is an image with a
box drawn over it (``ui/map_overlay.py``), and a box dragged in the browser selects the items under
it on the server."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from testkit.browser import CHROMIUM, launch_chromium, start_server, stop_server, wait_idle
from testkit.data import synthetic_archive


def test_a_box_dragged_on_the_large_map_selects_the_items_under_it(tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    synthetic_archive(tmp_path / "studio.duckdb", 40_000, big=1_000, k=10)  # 36,000 train items: the raster map
    server = start_server(tmp_path / "studio.duckdb", tmp_path / "streamlit.log")
    try:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(60_000)
            page.goto(f"{server.url}/explore")
            wait_idle(page)
            page.locator("[data-testid=stSelectbox]").filter(has_text="Split").locator("input").first.click()
            page.get_by_role("option", name="train").click()
            wait_idle(page)
            page.get_by_text(re.compile(r"36,000 points, drawn as an image")).wait_for()
            shown = page.get_by_text(re.compile(r"Selection: [\d,]+ items"))
            before = shown.inner_text() if shown.count() else None
            box = page.locator("img").last.bounding_box()
            x, y = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3
            page.mouse.move(x, y)
            page.mouse.down()
            page.mouse.move(x + box["width"] * 0.3, y + box["height"] * 0.3, steps=8)
            page.mouse.up()
            wait_idle(page)
            found = page.get_by_text(re.compile(r"Selection: [1-9][\d,]* items"))
            found.wait_for()
            text = found.inner_text()
            n = int(re.search(r"Selection: ([\d,]+) items", text).group(1).replace(",", ""))
            assert 0 < n < 36_000 and text != before  # the box's items, resolved on the server
            browser.close()
    finally:
        stop_server(server)
