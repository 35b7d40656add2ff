"""UI latency of the running dashboard, measured in a real browser (Debian's Chromium via Playwright).

The targets: each page's first paint after training on the demo under 2 s, and a tag decision
in the store and in the page under 0.5 s. Both are measured through ``streamlit run app.py``:

- first paint: from ``page.goto`` (a new session, as a curator opening a link) until the page's title
  is visible, the script run has finished and Streamlit's "Running…" badge is gone; median of
  ``--visits`` visits per page (the first visit of a process also pays imports and caches, which is
  why the median, not the mean, is reported; the maximum is shown too).
- tag decision: on the Tags page, from the click on "Accept" until the page shows the new count of
  accepted tags; the store is then checked to hold the decision (from this process, as the CLI
  would). Median of ``--decisions``. The decisions are undone at the end, so a store given with
  ``--db`` is left as it was.

Without ``--db`` the full demo, a 5-epoch model and 50 proposed tags are built with the CLI into a
temporary store first (several minutes on 2 cores). Run: ``.venv/bin/python benchmarks/ui_latency.py``.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testkit.browser import (  # noqa: E402
    CHROMIUM, IDLE_SELECTOR, STATUS_WIDGET, launch_chromium, pick_option, start_server, stop_server, wait_idle,
)

PAGES = {"Home": "", "Data": "data", "Train": "train", "Compare": "compare", "Explore": "explore",
         "Tags": "tags", "Catalog": "catalog", "Search": "search"}
HEADINGS = {"Home": "MMAE Studio"}
CURATOR = "ui-latency-benchmark"
DATASET = "demo"


def cli(db: Path, *args: str) -> None:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mmae_core", *args, "--db", str(db)], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    print(f"  python -m mmae_core {' '.join(args)}: {time.perf_counter() - t:.1f} s", flush=True)


def build_store(db: Path, epochs: int) -> None:
    print(f"Building the full demo and a {epochs}-epoch model in {db} …", flush=True)
    cli(db, "demo")
    cli(db, "train", "--dataset", DATASET, "--epochs", str(epochs))
    cli(db, "propose", "--dataset", DATASET, "--k", "50", "--split", "test")


def first_paint(page, url: str, title: str, timeout_ms: float = 120_000) -> float:
    from playwright.sync_api import expect

    heading = page.locator('[data-testid="stMain"]').get_by_role("heading", name=HEADINGS.get(title, title), exact=True)
    t0 = time.perf_counter()
    page.goto(url)
    expect(heading.first).to_be_visible(timeout=timeout_ms)
    page.wait_for_selector(IDLE_SELECTOR, state="attached", timeout=timeout_ms)
    expect(page.locator(STATUS_WIDGET)).to_be_hidden(timeout=timeout_ms)
    return time.perf_counter() - t0


def decision_latencies(page, base: str, db: Path, n: int) -> list[tuple[float, float]]:
    """(page s, store s) for ``n`` accepts of pending proposals, then undo them all."""
    from playwright.sync_api import expect

    from store import Store

    def store() -> Store:
        return Store(db, lock_timeout=60.0, linger=0.0)

    s = store()
    model = s.latest_model(DATASET)
    table, _ = s.proposals(DATASET, model)
    pending = [int(c) for c in table.loc[table["status"] == "proposed", "cluster"]][:n]
    if len(pending) < n:
        raise SystemExit(f"only {len(pending)} pending proposals in {db}; propose tags again first.")
    del s
    main = page.locator('[data-testid="stMain"]')
    side = page.locator('[data-testid="stSidebar"]')
    page.goto(f"{base}/tags")
    expect(main.get_by_role("heading", name="Tags", exact=True)).to_be_visible(timeout=120_000)
    wait_idle(page, 120_000)
    box = side.get_by_label("Curator", exact=True)
    box.fill(CURATOR)
    box.press("Enter")
    wait_idle(page, 120_000)
    accepted = main.locator('[data-testid="stMetric"]').filter(has_text="Accepted").locator('[data-testid="stMetricValue"]')
    out = []
    try:
        for c in pending:
            pick_option(page, main.get_by_role("combobox", name="Review a proposal", exact=True), f"{c:02d} · ", 120_000)
            before = int(accepted.inner_text())
            t0 = time.perf_counter()
            main.get_by_role("button", name="Accept", exact=True).click()
            expect(accepted).to_have_text(str(before + 1), timeout=60_000)
            t_page = time.perf_counter() - t0
            tab, _ = store().proposals(DATASET, model)
            t_store = time.perf_counter() - t0
            status = tab.set_index("cluster").loc[c, "status"]
            assert status == "accepted", f"cluster {c} is {status} in the store after the page showed it accepted"
            out.append((t_page, t_store))
            wait_idle(page, 120_000)
    finally:
        s = store()
        for _ in out:
            s.undo(DATASET, CURATOR)
    return out


def print_paints(paints: dict[str, list[float]], visits: int) -> None:
    print(f"\nFirst paint (s), {visits} visits per page, each a new session; target < 2 s")
    print(f"{'page':<10}{'median':>8}{'max':>8}  visits")
    for title, ts in paints.items():
        print(f"{title:<10}{statistics.median(ts):>8.2f}{max(ts):>8.2f}  " + ", ".join(f"{t:.2f}" for t in ts), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, help="an existing store with the demo, a model and proposals (reused as is)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--visits", type=int, default=3)
    ap.add_argument("--decisions", type=int, default=5)
    args = ap.parse_args()
    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM} is not installed (apt-get install -y chromium).")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="ui-latency-") as tmp:
        db = args.db.resolve() if args.db else Path(tmp) / "studio.duckdb"
        if args.db is None:
            build_store(db, args.epochs)
        server = start_server(db, Path(tmp) / "streamlit.log")
        try:
            with sync_playwright() as p:
                browser = launch_chromium(p)
                ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
                page = ctx.new_page()
                page.set_default_timeout(120_000)
                paints: dict[str, list[float]] = {}
                for visit in range(args.visits):
                    for title, path in PAGES.items():
                        paints.setdefault(title, []).append(first_paint(page, f"{server.url}/{path}", title))
                print_paints(paints, args.visits)
                decisions = decision_latencies(page, server.url, db, args.decisions)
                browser.close()
        except BaseException:
            print(server.log_tail(60), file=sys.stderr)
            raise
        finally:
            stop_server(server)

    pg = [d[0] for d in decisions]
    st = [d[1] for d in decisions]
    print(f"\nTag decision (accept), {len(decisions)} decisions; target < 0.5 s")
    print(f"  click -> new status in the page: median {statistics.median(pg):.3f} s (max {max(pg):.3f}); "
          + ", ".join(f"{t:.3f}" for t in pg))
    print(f"  click -> confirmed in the store from another process: median {statistics.median(st):.3f} s (max {max(st):.3f})")


if __name__ == "__main__":
    main()
