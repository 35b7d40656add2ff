"""What a first real upload showed, in a real browser (Debian's Chromium) against ``streamlit run app.py``:
an import refusal is visible in the page; a reload and a new tab keep the dataset, the model and the
curator's name (the URL); a double click on "Start training" makes one job; and accepting a proposal
keeps the tags a curator set by hand unless asked, and says so."""
from __future__ import annotations

import re
from typing import Any

import pytest

from .conftest import CHROMIUM, Server, wait_idle
from .test_curator_flow import expect, fill, go, main, metric, run_flow, sidebar

from mmae_core.config import DEFAULT_PRESET

MODEL = f"{DEFAULT_PRESET}-e2-s42"  # what two epochs of the page's default preset are named

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (apt-get install -y chromium)"),
]

CURATOR = "Grace Hopper"


def test_refusals_reload_double_click_and_hand_set_tags(studio_server: Server, chromium_page: Any) -> None:
    run_flow(_flow, studio_server, chromium_page)


def _flow(page: Any, url: str, store: Any) -> None:
    page.goto(url)
    wait_idle(page)
    # -- 1. an import refusal is in the page, with the file and what to do ------------------------------
    go(page, "Data")
    main(page).locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}])
    wait_idle(page)
    main(page).get_by_role("button", name="Import", exact=True).click()
    wait_idle(page)
    refusal = main(page).locator('[data-testid="stAlertContentError"]').filter(has_text="notes.txt is not a supported file type")
    expect(refusal).to_be_visible()
    expect(refusal).to_contain_text("use .npz")
    expect(main(page).get_by_text("Nothing was imported.")).to_be_visible()
    assert store().dataset_names() == []

    # -- the demo, and the curator's name --------------------------------------------------------------
    go(page, "Home")
    main(page).get_by_role("button", name="Create the demo dataset").click()
    expect(main(page).get_by_text("Created the synthetic demo dataset 'demo'")).to_be_visible(timeout=90_000)
    wait_idle(page)
    fill(page, sidebar(page), "Curator", CURATOR)

    # -- 6. a double click on Start training makes one job ---------------------------------------------
    go(page, "Train")
    fill(page, main(page), "Epochs", "2")
    start = main(page).get_by_role("button", name="Start training")
    start.dblclick()
    expect(main(page).get_by_text(re.compile(r"Job \d+: train on demo finished in"))).to_be_visible(timeout=150_000)
    wait_idle(page)
    jobs = store().jobs("demo")
    assert len(jobs) == 1, jobs  # one click, one job
    assert list(store().list_models("demo")["name"]) == [MODEL]

    # -- 3. a reload and a new tab keep the dataset, the model and the curator --------------------------
    expect(page).to_have_url(re.compile(r"dataset=demo"))
    expect(page).to_have_url(re.compile(rf"model={MODEL}"))
    expect(page).to_have_url(re.compile(r"curator=Grace"))
    page.reload()
    wait_idle(page)
    expect(sidebar(page).get_by_label("Curator", exact=True)).to_have_value(CURATOR)
    expect(sidebar(page).get_by_role("combobox", name="Model")).to_have_value(MODEL)
    expect(main(page).get_by_text(re.compile(r"Job \d+: train on demo finished in"))).to_be_visible()  # the job is not gone
    tab = page.context.new_page()
    tab.goto(page.url)
    wait_idle(tab)
    expect(sidebar(tab).get_by_label("Curator", exact=True)).to_have_value(CURATOR)
    expect(sidebar(tab).get_by_role("combobox", name="Dataset")).to_have_value("demo")
    tab.close()

    # -- 5. accepting a proposal keeps hand-set tags, and says so --------------------------------------
    go(page, "Tags")
    form = main(page).locator('[data-testid="stForm"]')
    form.get_by_label("Number of proposed tags (k)", exact=True).fill("6")
    form.get_by_role("button", name="Propose tags").click()
    expect(main(page).get_by_text("Proposed 6 tags on the test split")).to_be_visible(timeout=60_000)
    wait_idle(page)
    table, assign = store().proposals("demo", MODEL)
    members = sorted(assign.loc[assign["cluster"] == 0, "item_id"].astype(str))
    store().set_items("demo", members[:2], "hand-made", "bob")  # another curator, by hand
    go(page, "Tags")
    expect(main(page).get_by_text("2 of its items already carry a tag set by hand")).to_be_visible()
    main(page).get_by_role("button", name="Accept", exact=True).click()
    expect(metric(page, "Accepted")).to_have_text("1")
    wait_idle(page)
    cat = store().catalog("demo").set_index("item_id")
    assert (cat.loc[members[:2], "tag"] == "hand-made").all()
    assert (cat.loc[members[2:], "status"] == "accepted").all()
    assert "kept 2 hand-set tags" in store().history("demo")["summary"].iloc[0]
