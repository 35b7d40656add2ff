"""Three curators tag the same dataset at the same moment through one running dashboard, in a real
browser (Debian's Chromium: one browser, three contexts, so three Streamlit sessions with their own
websocket and session state): two sessions at once lose nothing and see each other's decisions on a
rerun, and under the load of three browser sessions every decision reaches the store.

Each session types its own curator name, opens Tags, accepts two proposals of its own and moves one
item of its second proposal to a new tag. The three sessions wait for each other before every
decision (an ``asyncio.Barrier``), so the clicks reach the server together and the three writes
contend for the store's one writer. Afterwards the store must hold all nine decisions with the right
curator, every accepted proposal's items under its tag (less the moved item) and every moved item
under its new tag; and session A, rerun, must show the other curators' decisions.

Why the async API: Playwright's sync API is bound to the thread that started it, and three sessions
that act at the same moment are simplest as three coroutines over one browser.
"""
from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .conftest import CHROMIUM, CHROMIUM_ARGS, IDLE_SELECTOR, STATUS_WIDGET, start_server, stop_server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (apt-get install -y chromium)"),
]

K = 10
# Generous: other test files run on the same 2 cores, and the first page run of a fresh server
# imports torch.
TIMEOUT_MS = 120_000
BARRIER_TIMEOUT_S = 180.0


@dataclass
class Curator:
    """One browser session: who it is, which proposals it accepts, the tag its moved item gets."""

    name: str
    clusters: tuple[int, int]
    move_tag: str
    moved_label: str = ""  # the Item selectbox's text for the moved item, read from the page
    moved_flash: str = ""  # the outcome sentence the move showed
    seconds: dict[str, float] = field(default_factory=dict)


CURATORS = [
    Curator("curator-a", (0, 1), "moved by curator-a"),
    Curator("curator-b", (2, 3), "moved by curator-b"),
    Curator("curator-c", (4, 5), "moved by curator-c"),
]


@pytest.fixture
def proposed_server(demo_store: Any, tmp_path: Path) -> Any:
    """A dashboard over a private copy of the demo store with K proposals on the test split."""
    from studio.pipeline import propose_tags
    from store import Store

    s = Store(demo_store.db, linger=0.0)
    table = propose_tags(s, demo_store.dataset, demo_store.model, K, split="test", seed=42)
    assert len(table) == K
    del s
    server = start_server(demo_store.db, tmp_path / "streamlit.log")
    try:
        yield server, demo_store
    finally:
        stop_server(server)


# -- async helpers (the sync ones in conftest cannot be awaited) -------------------------------------
def expect(locator: Any) -> Any:
    from playwright.async_api import expect as _expect

    return _expect(locator)


def main(page: Any) -> Any:
    return page.locator('[data-testid="stMain"]')


def sidebar(page: Any) -> Any:
    return page.locator('[data-testid="stSidebar"]')


def metric(page: Any, label: str) -> Any:
    return main(page).locator('[data-testid="stMetric"]').filter(has_text=label).locator('[data-testid="stMetricValue"]')


def flash(page: Any, text: str) -> Any:
    """The outcome sentence of this session's last decision (``ui.state.flash``) containing ``text``."""
    return main(page).locator('[data-testid="stAlert"]').filter(has_text=text)


async def wait_idle(page: Any, timeout_ms: float = TIMEOUT_MS, settle_ms: int = 250) -> None:
    """The script run the last action started has finished (see ``conftest.wait_idle``)."""
    await page.wait_for_timeout(settle_ms)
    await page.wait_for_selector(IDLE_SELECTOR, state="attached", timeout=timeout_ms)
    await expect(page.locator(STATUS_WIDGET)).to_be_hidden(timeout=timeout_ms)


async def fill(page: Any, scope: Any, label: str, value: str) -> None:
    box = scope.get_by_label(label, exact=True)
    await box.fill(value)
    await box.press("Enter")
    await wait_idle(page)
    await expect(box).to_have_value(value, timeout=TIMEOUT_MS)


async def pick_option(page: Any, box: Any, text: str) -> None:
    """Choose the option containing ``text`` in a Streamlit selectbox (see ``conftest.pick_option``)."""
    if (await box.input_value()).startswith(text):
        return
    last: Exception | None = None
    for _ in range(3):
        try:
            await box.click()
            await box.fill(text)
            await page.get_by_role("option").filter(has_text=text).first.click(timeout=10_000)
            await wait_idle(page)
            await expect(box).to_have_value(re.compile("^" + re.escape(text)), timeout=30_000)
            return
        except Exception as err:  # noqa: BLE001 - retried, re-raised below
            last = err
            await page.keyboard.press("Escape")
            await page.wait_for_timeout(300)
    raise AssertionError(f"could not choose {text!r}: {last}")


async def options_of(page: Any, box: Any) -> list[str]:
    """The option texts of a selectbox (opened, read, closed); the opening is retried as in ``pick_option``."""
    opts = page.get_by_role("option")
    last: Exception | None = None
    for _ in range(3):
        try:
            await box.click()
            await expect(opts.first).to_be_visible(timeout=10_000)
            texts = [t.strip() for t in await opts.all_inner_texts()]
            await page.keyboard.press("Escape")
            return texts
        except Exception as err:  # noqa: BLE001 - retried, re-raised below
            last = err
            await page.keyboard.press("Escape")
            await wait_idle(page)
    raise AssertionError(f"could not open the selectbox: {last}")


async def together(barrier: asyncio.Barrier) -> None:
    await asyncio.wait_for(barrier.wait(), BARRIER_TIMEOUT_S)


# -- one curator's session ---------------------------------------------------------------------------
async def curate(browser: Any, url: str, who: Curator, barrier: asyncio.Barrier) -> Any:
    """Open the dashboard, name the curator, accept two proposals and move one item; returns the page
    (still open, for the rerun check)."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    t0 = time.monotonic()
    try:
        await page.goto(url)
        await expect(main(page).get_by_role("heading", name="MMAE Studio").first).to_be_visible(timeout=TIMEOUT_MS)
        await wait_idle(page)
        await fill(page, sidebar(page), "Curator", who.name)

        await sidebar(page).locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Tags", exact=True).click()
        await expect(main(page).get_by_role("heading", name="Tags").first).to_be_visible(timeout=TIMEOUT_MS)
        await wait_idle(page)
        await expect(metric(page, "Proposed tags")).to_have_text(str(K), timeout=TIMEOUT_MS)
        who.seconds["ready"] = time.monotonic() - t0

        review = main(page).get_by_role("combobox", name="Review a proposal", exact=True)
        accept = main(page).get_by_role("button", name="Accept", exact=True)
        for c in who.clusters:
            await pick_option(page, review, f"{c:02d} · ")
            await expect(accept).to_be_enabled(timeout=TIMEOUT_MS)
            await together(barrier)  # the three accepts leave at the same moment
            await accept.click()
            # The session's own outcome sentence, then the reviewed proposal's status line.
            await expect(flash(page, f"Accepted cluster {c} of model '")).to_be_visible(timeout=TIMEOUT_MS)
            await wait_idle(page)
            await expect(main(page).get_by_text("status accepted")).to_be_visible(timeout=TIMEOUT_MS)

        # Move the first item of the second proposal (just accepted) to a new tag of its own.
        item = main(page).get_by_role("combobox", name="Item", exact=True)
        who.moved_label = await item.input_value()
        await fill(page, main(page), "New tag name", who.move_tag)
        move = main(page).get_by_role("button", name="Move the item", exact=True)
        await expect(move).to_be_enabled(timeout=TIMEOUT_MS)
        await together(barrier)
        await move.click()
        done = flash(page, f"as '{who.move_tag}'")
        await expect(done).to_be_visible(timeout=TIMEOUT_MS)
        who.moved_flash = await done.inner_text()
        await wait_idle(page)
        await expect(main(page).locator('[data-testid="stException"]')).to_have_count(0, timeout=TIMEOUT_MS)
        who.seconds["done"] = time.monotonic() - t0
        return page
    except BaseException:
        await barrier.abort()  # the others must not wait for this one
        alerts = await main(page).locator('[data-testid="stAlert"]').all_inner_texts()
        print(f"{who.name}: the page's messages when it failed: {alerts}")
        raise


async def run_sessions(url: str) -> dict[str, Any]:
    """Run the three sessions at once, then rerun session A and read what it shows."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            barrier = asyncio.Barrier(len(CURATORS))
            pages = await asyncio.gather(*(curate(browser, url, who, barrier) for who in CURATORS))

            # -- session A reruns (a widget change, same session) and sees B's and C's decisions --
            page = pages[0]
            review = main(page).get_by_role("combobox", name="Review a proposal", exact=True)
            other = CURATORS[1].clusters[0]
            await pick_option(page, review, f"{other:02d} · ")
            await expect(main(page).get_by_text("status accepted")).to_be_visible(timeout=TIMEOUT_MS)
            accepted = await metric(page, "Accepted").inner_text()
            pending = await metric(page, "Pending").inner_text()
            await main(page).get_by_role("tab", name=re.compile("Audit trail")).click()  # the curator filter's tab
            await wait_idle(page)
            who = await options_of(page, main(page).get_by_role("combobox", name="Curator", exact=True))
            return {"accepted": accepted, "pending": pending, "curators": who}
        finally:
            await browser.close()


def test_three_curators_at_once(proposed_server: Any) -> None:
    from store import Store

    server, files = proposed_server
    dataset, model = files.dataset, files.model
    before, assign = Store(files.db, lock_timeout=60.0, linger=0.0).proposals(dataset, model)
    t0 = time.monotonic()
    try:
        seen = asyncio.run(run_sessions(server.url))
    except BaseException:
        print("---- streamlit log ----\n" + server.log_tail(80))
        raise
    print(f"three sessions in {time.monotonic() - t0:.1f} s:",
          {c.name: {k: round(v, 1) for k, v in c.seconds.items()} for c in CURATORS})

    # -- session A's rerun shows everyone's decisions -----------------------------------------------
    n_accepted = sum(len(c.clusters) for c in CURATORS)
    assert seen["accepted"] == str(n_accepted), seen
    assert seen["pending"] == str(K - n_accepted), seen
    assert {c.name for c in CURATORS} <= set(seen["curators"]), seen

    # -- the store holds every decision, with the right curator -------------------------------------
    s = Store(files.db, lock_timeout=60.0, linger=0.0)
    hist = s.history(dataset)
    assert len(hist) == 3 * len(CURATORS), hist
    assert not hist["undone"].any(), hist
    table, _ = s.proposals(dataset, model)
    assert table.attrs["set_id"] == before.attrs["set_id"], "the proposals must not have been replaced"
    by_cluster = table.set_index("cluster")
    members = {int(c): set(g["item_id"].astype(str)) for c, g in assign.groupby("cluster")}
    cat = s.catalog(dataset).assign(item_id=lambda d: d["item_id"].astype(str)).set_index("item_id")
    tagged = cat[cat["tag"].notna()]
    expected_tagged: set[str] = set()
    for who in CURATORS:
        mine = hist[hist["curator"] == who.name]
        assert sorted(mine["action"]) == ["accept", "accept", "set_item"], (who.name, hist)
        for c in who.clusters:
            row = by_cluster.loc[c]
            assert row["status"] == "accepted", (c, table)
            assert mine["summary"].str.startswith(f"accepted cluster {c} of model '{model}' as ").sum() == 1, mine
        # The moved item: the first member of the second proposal, now under the curator's new tag,
        # moved after its proposal was accepted (the summary names the tag it left).
        moved = [i for i in members[who.clusters[1]]
                 if who.moved_label == i or who.moved_label.startswith(f"{i} — ")]
        assert len(moved) == 1, (who.moved_label, moved)
        moved_id = moved[0]
        assert who.moved_flash.startswith(f"Tagged item '{moved_id}' as '{who.move_tag}'"), who.moved_flash
        set_item = mine[mine["action"] == "set_item"]["summary"].iloc[0]
        assert set_item == (f"tagged item '{moved_id}' as '{who.move_tag}' "
                            f"(was '{by_cluster.loc[who.clusters[1], 'tag']}')"), set_item
        assert cat.loc[moved_id, "tag"] == who.move_tag and cat.loc[moved_id, "curator"] == who.name
        assert set(tagged.index[tagged["tag"] == who.move_tag]) == {moved_id}
        for c in who.clusters:
            tag = by_cluster.loc[c, "tag"]
            items = members[c] - {moved_id}
            got = tagged.loc[sorted(items)]
            assert (got["tag"] == tag).all() and (got["curator"] == who.name).all(), (who.name, c, got)
            assert (got["status"] == "accepted").all(), got
            expected_tagged |= members[c]
    # Nothing else got tagged, nothing accepted got lost.
    assert set(tagged.index) == expected_tagged, set(tagged.index) ^ expected_tagged
    untouched = [c for c in range(K) if c not in {x for who in CURATORS for x in who.clusters}]
    assert set(by_cluster.loc[untouched, "status"]) == {"proposed"}, table
