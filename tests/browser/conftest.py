"""Fixtures for the real-browser tests: a ``streamlit run app.py`` server on a free localhost port
over a fresh store, and Debian's Chromium driven by Playwright's sync API.

Why our own fixtures instead of pytest-playwright's ``page``: that plugin launches the browser it
downloaded itself, and this machine must use the system ``/usr/bin/chromium`` (no browser downloads).
The helpers (server, browser, waiting) live in ``testkit.browser``, shared with
``benchmarks/ui_latency.py``; they are re-exported here for the tests of this folder.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit.browser import (  # noqa: F401  - re-exported for the tests of this folder
    CHROMIUM, CHROMIUM_ARGS, IDLE_SELECTOR, ROOT, STATUS_WIDGET, Server, launch_chromium, pick_option, start_server,
    stop_server, wait_idle,
)


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture
def studio_server(tmp_path: Path) -> Iterator[Server]:
    """A dashboard on an empty store whose Home button creates a small demo (scale 0.05)."""
    server = start_server(tmp_path / "studio.duckdb", tmp_path / "streamlit.log",
                          env={"MMAE_STUDIO_DEMO_SCALE": "0.05"})
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def chromium_page(studio_server: Server) -> Iterator[Any]:
    """A Playwright page in Debian's Chromium (skips when that browser is not installed)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(30_000)
        try:
            yield page
        finally:
            context.close()
            browser.close()
