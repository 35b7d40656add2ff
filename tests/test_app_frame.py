"""The dashboard's frame: navigation, sidebar, Home, and every page's first paint (empty and trained store)."""
from __future__ import annotations

import pytest

from tests.conftest import DEMO_DATASET

PAGES = ["home", "data", "train", "compare", "explore", "tags", "catalog", "search"]


def texts(at, kind: str) -> list[str]:
    return [str(e.value) for e in getattr(at, kind)]


def no_bug(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not any("Internal error" in t for t in texts(at, "error")), texts(at, "error")


@pytest.mark.parametrize("page_name", PAGES)
def test_every_page_renders_on_an_empty_store_and_says_what_to_do(empty_store, app, page_name):
    at = app(page_name)
    no_bug(at)
    assert not texts(at, "error")
    if page_name == "home":
        assert any(b.label == "Create the demo dataset" for b in at.button)
    else:
        said = " ".join(texts(at, "info") + texts(at, "warning") + [c.value for c in at.caption])
        assert "dataset" in said.lower()


@pytest.mark.parametrize("page_name", PAGES)
def test_every_page_renders_with_a_trained_demo(demo_store, app, page_name):
    at = app(page_name)
    no_bug(at)
    assert at.sidebar.selectbox[0].value == DEMO_DATASET
    assert at.sidebar.selectbox[1].value == demo_store.model
    assert at.session_state["dataset"] == DEMO_DATASET and at.session_state["model"] == demo_store.model


def test_home_creates_the_demo_with_one_click(empty_store, app, monkeypatch):
    monkeypatch.setenv("MMAE_STUDIO_DEMO_SCALE", "0.02")
    at = app()
    next(b for b in at.button if b.label == "Create the demo dataset").click().run()
    no_bug(at)
    store = empty_store.store()
    assert store.dataset_names() == ["demo"]
    listing = store.list_datasets()
    assert bool(listing["synthetic"].iloc[0])  # clearly marked as synthetic
    assert any("synthetic demo" in s for s in texts(at, "success"))
    assert at.sidebar.selectbox[0].value == "demo"
    assert "synthetic demo" in at.main.subheader[0].value  # "Next steps for demo (synthetic demo)"


def test_sidebar_choices_and_curator_are_remembered_across_pages(demo_store, app):
    at = app("home")
    at.sidebar.text_input[0].input("Ada Lovelace").run()
    assert at.session_state["curator"] == "Ada Lovelace"
    at.switch_page("pages/compare.py").run()
    no_bug(at)
    assert at.sidebar.text_input[0].value == "Ada Lovelace"
    assert at.session_state["curator"] == "Ada Lovelace"
    assert at.sidebar.selectbox[0].value == DEMO_DATASET
    assert any(str(demo_store.db) in c.value for c in at.sidebar.caption)


def test_signed_in_user_is_the_curator(demo_store, app):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import APP

    at = AppTest.from_file(str(APP), default_timeout=60)
    at.user = {"is_logged_in": True, "name": "Grace Hopper", "email": "grace@example.org"}
    at.run()
    no_bug(at)
    assert at.session_state["curator"] == "Grace Hopper"
    assert not at.sidebar.text_input  # no name field when login says who it is
    assert any("Grace Hopper" in c.value for c in at.sidebar.caption)


def test_a_store_that_cannot_open_is_one_sentence(tmp_path, monkeypatch, app):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    monkeypatch.setenv("MMAE_STUDIO_DB", str(folder))
    at = app()
    assert not at.exception
    assert len(at.error) == 1 and "is a folder" in at.error[0].value


def test_dataset_model_and_curator_survive_a_reload_through_the_url(demo_store, app):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import APP, APP_TIMEOUT
    from tests.test_app_train import small_set

    store = demo_store.store()
    store.add_dataset(small_set("second", {"image": 5, "text": 3}))
    at = app("data")
    at.sidebar.selectbox[0].set_value("second").run()
    at.sidebar.text_input[0].input("Ann Curator").run()
    assert at.query_params["dataset"] == "second" and at.query_params["curator"] == "Ann Curator"
    assert "model" not in at.query_params  # 'second' has no model yet
    at.sidebar.selectbox[0].set_value("demo").run()
    assert at.query_params["model"] == demo_store.model
    at.sidebar.selectbox[0].set_value("second").run()
    # a reload (or the link in a new tab) is a new session that starts from the URL alone
    reload = AppTest.from_file(str(APP), default_timeout=APP_TIMEOUT)
    for k, v in at.query_params.items():
        reload.query_params[k] = v
    reload.run()
    no_bug(reload)
    assert reload.session_state["dataset"] == "second" and reload.sidebar.selectbox[0].value == "second"
    assert reload.session_state["curator"] == "Ann Curator" and reload.sidebar.text_input[0].value == "Ann Curator"
    # a link to a dataset that is gone falls back to the first one, in the page and in the URL
    stale = AppTest.from_file(str(APP), default_timeout=APP_TIMEOUT)
    stale.query_params["dataset"] = "deleted-since"
    stale.run()
    no_bug(stale)
    assert stale.session_state["dataset"] == "demo" and stale.query_params["dataset"] == "demo"
