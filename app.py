"""MMAE Studio dashboard: page config, navigation and the sidebar (``streamlit run app.py``).

Pages live in ``pages/`` and stay thin over ``mmae_core`` and ``store``. This file is the safety net
of the promise "never a traceback": a ``StudioError`` that escapes a page is shown as its sentence,
anything else as one sentence naming an internal error (set ``MMAE_DEBUG=1`` to see the traceback).
"""
from __future__ import annotations

import logging
import os

import mmae_core  # noqa: F401  - first: OpenMP's wait policy must be set before torch loads (see mmae_core/__init__.py)
import streamlit as st

from mmae_core.errors import StudioError
from ui.state import current_store, preload_heavy_modules, show_flash, sidebar
from ui.widgets import internal_error_sentence, warm_summaries

st.set_page_config(page_title="MMAE Studio", page_icon=":material/hub:", layout="wide")

PAGES = {
    "Workflow": [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/data.py", title="Data", icon=":material/database:"),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/compare.py", title="Compare", icon=":material/leaderboard:"),
    ],
    "Curate": [
        st.Page("pages/explore.py", title="Explore", icon=":material/scatter_plot:"),
        st.Page("pages/tags.py", title="Tags", icon=":material/sell:"),
        st.Page("pages/catalog.py", title="Catalog", icon=":material/table_view:"),
        st.Page("pages/search.py", title="Search", icon=":material/search:"),
    ],
}

nav = st.navigation(PAGES)
store = current_store()
warm_summaries(str(store.path))
sidebar(store)
show_flash()
try:
    nav.run()
except StudioError as err:
    st.error(str(err))
except Exception as err:  # noqa: BLE001 - a bug of ours: one sentence in the page, the traceback in the log
    if os.environ.get("MMAE_DEBUG"):
        raise
    logging.getLogger("mmae_studio").exception("internal error on a page")
    st.error(internal_error_sentence(err))
finally:
    preload_heavy_modules()  # a no-op after the first run of the process
