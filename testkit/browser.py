"""Helpers for driving the dashboard in a real browser, shared by the browser tests and
``benchmarks/ui_latency.py``: a ``streamlit run app.py`` server on a free localhost port over a given
store, and Debian's Chromium (``/usr/bin/chromium``) driven by Playwright's sync API.

Why our own launcher instead of pytest-playwright's ``page``: that plugin launches a browser it
downloaded itself, and these machines use the system Chromium (no browser downloads).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
SERVER_START_TIMEOUT = 90.0
# A page counts as painted when its script is not running and Streamlit's "Running…" badge is gone.
IDLE_SELECTOR = '[data-testid="stApp"][data-test-script-state="notRunning"]'
STATUS_WIDGET = '[data-testid="stStatusWidget"]'


@dataclass
class Server:
    """A running dashboard: its URL, the store file it serves, its process and where its log goes."""

    url: str
    db: Path
    proc: subprocess.Popen
    log: Path

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(db: Path, log: Path, env: dict[str, str] | None = None,
                 timeout: float = SERVER_START_TIMEOUT) -> Server:
    """Start the dashboard in its own process group (so stopping it also stops anything it spawned)
    and wait for Streamlit's health endpoint; the server's output goes to ``log``."""
    port = free_port()
    full_env = {**os.environ, "MMAE_STUDIO_DB": str(db), "MMAE_STUDIO_DATA_ROOT": str(db.parent / "data"),
                "PYTHONUNBUFFERED": "1", **(env or {})}
    (db.parent / "data").mkdir(parents=True, exist_ok=True)
    out = open(log, "wb")  # noqa: SIM115 - the child writes to it for its whole life
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--client.toolbarMode", "viewer"],
        cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )
    out.close()
    server = Server(f"http://127.0.0.1:{port}", db, proc, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode} before answering:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(0.25)
    stop_server(server)
    raise RuntimeError(f"streamlit did not answer on {server.url} within {timeout:.0f} s:\n{server.log_tail()}")


def stop_server(server: Server, grace: float = 10.0) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers."""
    if server.proc.poll() is not None:
        return
    try:
        os.killpg(server.proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        server.proc.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(server.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        server.proc.wait(5)


def launch_chromium(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)


def wait_idle(page: Any, timeout_ms: float = 60_000, settle_ms: int = 250) -> None:
    """Wait until the script run that the last action triggered has finished.

    A click reaches the server a moment after Playwright returns, so first give the run a moment to
    start, then wait for the app to report ``notRunning`` and for the status badge to go."""
    from playwright.sync_api import expect

    page.wait_for_timeout(settle_ms)
    page.wait_for_selector(IDLE_SELECTOR, state="attached", timeout=timeout_ms)
    expect(page.locator(STATUS_WIDGET)).to_be_hidden(timeout=timeout_ms)


def pick_option(page: Any, box: Any, text: str, timeout_ms: float = 60_000) -> None:
    """Choose the option containing ``text`` in a Streamlit selectbox (``box`` is its combobox).

    Typing filters the list first: BaseWeb renders only the visible part of a long list, and a click
    that lands while the page is redrawing may not open it, so the opening is retried."""
    if box.input_value().startswith(text):
        return
    last: Exception | None = None
    for _ in range(3):
        try:
            box.click()
            box.fill(text)
            page.get_by_role("option").filter(has_text=text).first.click(timeout=5_000)
            wait_idle(page, timeout_ms)
            return
        except Exception as err:  # noqa: BLE001 - retried, re-raised below
            last = err
            page.keyboard.press("Escape")
            page.wait_for_timeout(300)
    raise AssertionError(f"could not choose {text!r}: {last}")
