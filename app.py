"""MMAE Studio dashboard: page config, navigation and the sidebar. Pages live in ``pages/``."""
from __future__ import annotations

import streamlit as st

from ui.state import current_store, sidebar

st.set_page_config(page_title="MMAE Studio", page_icon=":material/hub:", layout="wide")

pages = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
]
nav = st.navigation(pages)
sidebar(current_store())
nav.run()
