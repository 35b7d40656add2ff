"""Session-level glue shared by the pages: which store, dataset, model and curator are current."""
from __future__ import annotations

import os

import streamlit as st

from store import Store

DEFAULT_DB = "mmae_studio.duckdb"


def db_path() -> str:
    return os.environ.get("MMAE_STUDIO_DB") or DEFAULT_DB


@st.cache_resource
def _store(path: str) -> Store:
    return Store(path)


def current_store() -> Store:
    return _store(db_path())


def sidebar(store: Store) -> None:
    with st.sidebar:
        st.caption(f"Store: `{db_path()}`")
        names = store.dataset_names()
        if names:
            ds = st.selectbox("Dataset", names, key="dataset")
            models = store.list_models(ds)
            st.selectbox("Model", list(models["name"]) if len(models) else ["(none yet)"], key="model")
        else:
            st.info("No dataset yet.")
        st.text_input("Curator", key="curator", value=st.session_state.get("curator", os.environ.get("USER", "")))
