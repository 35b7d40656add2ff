import streamlit as st

from ui.state import current_store

st.title("MMAE Studio")
store = current_store()
names = store.dataset_names()
if not names:
    st.write("The store is empty. Create the demo dataset from the command line: `python -m mmae_core demo`.")
else:
    st.dataframe(store.list_datasets(), hide_index=True)
