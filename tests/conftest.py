"""Shared fixtures for the dashboard tests (and any test that wants a store with a trained model).

Training even a tiny model costs seconds, so one small demo store is built ONCE per test session
(``demo_template``) and each test gets its own copy of the file (``demo_store``): tests can write to
it freely and never see each other's changes.

Fixtures:
- ``demo_template`` (session): ``StudioFiles`` of the read-only template (do not write to it).
- ``demo_store``: a private copy of the template; ``MMAE_STUDIO_DB`` and ``MMAE_STUDIO_DATA_ROOT``
  point at it for the test, so ``AppTest.from_file(APP)`` opens it.
- ``empty_store``: the same environment with a store path that does not exist yet.
- ``_navigation_layout`` (autouse): makes every ``AppTest`` run go through ``app.py`` (see its docstring).
- ``app``: a factory ``app(page=None, **session_state)`` that returns an ``AppTest`` of ``app.py`` that has
  run once (and switched to ``pages/<page>.py`` and run again when ``page`` is given).

The template: ``make_demo("demo", seed=42, scale=0.04)`` (850 train, 150 test, 154 ood items, 50
classes) with one model ``paper-e2-s42`` (paper preset, 2 epochs, latent 128) with latents for every split.
"""
from __future__ import annotations

import mmae_core  # noqa: F401  - first: sets OpenMP's wait policy before anything loads torch

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app.py"
DEMO_DATASET = "demo"
DEMO_MODEL = "paper-e2-s42"
DEMO_SCALE = 0.04
APP_TIMEOUT = 60.0


@dataclass
class StudioFiles:
    """Where a test's store and server-side data root are, and what the store holds."""

    db: Path
    data_root: Path
    dataset: str | None = None
    model: str | None = None

    def store(self, **kw: Any) -> Any:
        """A ``Store`` on this file (in-process it shares the dashboard's connection, so no lock fight)."""
        from store import Store

        return Store(self.db, **kw)


def _copy_db(src: Path, dst: Path) -> None:
    from store import copy_store as _copy_store

    _copy_store(src, dst)


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> StudioFiles:
    from mmae_core.config import preset
    from mmae_core.data.demo import make_demo
    from studio.pipeline import train_and_register
    from store import Store

    folder = tmp_path_factory.mktemp("demo-template")
    db = folder / "template.duckdb"
    store = Store(db, linger=0.0)
    store.add_dataset(make_demo(DEMO_DATASET, seed=42, scale=DEMO_SCALE))
    out = train_and_register(store, DEMO_DATASET, preset("paper", epochs=2))
    assert out.model_name == DEMO_MODEL
    (folder / "data").mkdir()
    return StudioFiles(db=db, data_root=folder / "data", dataset=DEMO_DATASET, model=DEMO_MODEL)


def _env(monkeypatch: pytest.MonkeyPatch, files: StudioFiles) -> StudioFiles:
    files.data_root.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("MMAE_STUDIO_DB", str(files.db))
    monkeypatch.setenv("MMAE_STUDIO_DATA_ROOT", str(files.data_root))
    monkeypatch.setenv("MMAE_DEBUG", "1")  # a bug in a page surfaces as ``at.exception``, not a sentence
    return files


@pytest.fixture
def demo_store(demo_template: StudioFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StudioFiles:
    db = tmp_path / "studio.duckdb"
    _copy_db(demo_template.db, db)
    return _env(monkeypatch, StudioFiles(db, tmp_path / "data", demo_template.dataset, demo_template.model))


@pytest.fixture
def empty_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StudioFiles:
    return _env(monkeypatch, StudioFiles(tmp_path / "studio.duckdb", tmp_path / "data"))


@pytest.fixture(autouse=True)
def _navigation_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``AppTest`` run every script run through ``app.py``'s ``st.navigation``, as a server does.

    Streamlit treats a ``pages/`` folder beside the entry script as the old multipage layout until
    ``st.navigation`` has run once; a server remembers that for the process, but ``AppTest`` forgets it
    before every run and would then execute ``pages/x.py`` alone on each rerun (no sidebar, and the
    rerun that ``ui.state.ensure_navigation`` does to recover would eat a button click).
    """
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)


@pytest.fixture
def app() -> Callable[..., Any]:
    """``app(page=None, timeout=APP_TIMEOUT, **session_state)`` -> an AppTest that has run."""
    from streamlit.testing.v1 import AppTest

    def make(page: str | None = None, timeout: float = APP_TIMEOUT, **state: Any) -> AppTest:
        at = AppTest.from_file(str(APP), default_timeout=timeout)
        for k, v in state.items():
            at.session_state[k] = v
        at.run()
        if page is not None:
            at.switch_page(f"pages/{page}.py" if not page.endswith(".py") else page)
            at.run()
        return at

    return make


# -- the reliability tests (tests/test_reliability_*.py) ---------------------------------------------
@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reliability matrix's small trained store, built once per session; tests copy it (``db``)."""
    from testkit import faults as rc

    return rc.build_template(tmp_path_factory.mktemp("reliability-template"))


@pytest.fixture
def db(template: Path, tmp_path: Path) -> Path:
    """A private copy of ``template`` (tests/test_cli.py and test_search_cli.py have their own ``db``)."""
    from testkit import faults as rc

    return rc.copy_store(template, tmp_path / "studio.duckdb")
