"""Streamlit glue for the archive views: novelty on Explore, conflicting modalities on Tags.

The scores come from ``studio.archive`` (the same functions as the CLI's ``novelty`` and
``conflicts``). They depend on the model and on the curator's tags and proposals, so the cache key is
the store file, dataset, model, splits and the *tag state* (how many decisions the audit trail holds
and the latest proposal set): a decision or a new proposal set recomputes them, revisiting does not.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import streamlit as st

from studio.archive import NOVELTY_BANDS, conflict_items, novelty_band, novelty_of_features, novelty_scores
from mmae_core.data.features import load_files
from store import Store

NO_SCORE = "(no score)"


def tag_state(store: Store, dataset: str, model: str) -> tuple[int, int | None]:
    """What the reference groups depend on: the audit trail's length and the latest proposal set."""
    table = store.proposal_table(dataset, model)
    return len(store.history(dataset)), table.attrs.get("set_id") if len(table) else None


@st.cache_data(show_spinner=False, max_entries=16)
def _novelty(_store: Store, path: str, dataset: str, model: str, splits: tuple[str, ...], key: tuple) -> tuple[pd.DataFrame, dict]:
    df = novelty_scores(_store, dataset, model, list(splits))
    return df, dict(df.attrs)


def novelty(store: Store, dataset: str, model: str, splits: list[str]) -> tuple[pd.DataFrame, dict]:
    """(item_id, split, score, recon, distance, nearest) most novel first, and its attrs (source, quantiles)."""
    return _novelty(store, str(store.path), dataset, model, tuple(splits), tag_state(store, dataset, model))


@st.cache_data(show_spinner=False, max_entries=4)
def _upload_novelty(_store: Store, path: str, dataset: str, model: str, digest: str, _files: tuple, key: tuple,
                    limit: int) -> tuple[pd.DataFrame, dict]:
    fs = load_files(list(_files), "new material", max_upload_bytes=limit, require_train=False)
    df = novelty_of_features(_store, dataset, model, fs)
    attrs = dict(df.attrs)  # a merge drops them
    metas = [sp.meta.assign(item_id=sp.item_ids.astype(str)) for sp in fs.splits.values() if sp.meta is not None]
    if metas:
        meta = pd.concat(metas, ignore_index=True).drop_duplicates("item_id")
        df = df.merge(meta, on="item_id", how="left", suffixes=("", " (meta)"))
    return df, attrs


def upload_novelty(store: Store, dataset: str, model: str, files: list[tuple[str, bytes]], limit: int) -> tuple[pd.DataFrame, dict]:
    """New material that is not in the store, ranked like a split (``studio.archive.novelty_of_features``),
    with the upload's own metadata; cached by the files' content and the tag state."""
    digest = hashlib.sha256(b"".join(name.encode() + b"\0" + hashlib.sha256(data).digest() for name, data in files)).hexdigest()
    return _upload_novelty(store, str(store.path), dataset, model, digest, tuple(files), tag_state(store, dataset, model), limit)


@st.cache_data(show_spinner=False, max_entries=16)
def _conflicts(_store: Store, path: str, dataset: str, model: str, split: str, key: tuple) -> tuple[pd.DataFrame, dict]:
    df = conflict_items(_store, dataset, model, split)
    return df, dict(df.attrs)


def conflicts(store: Store, dataset: str, model: str, split: str) -> tuple[pd.DataFrame, dict]:
    return _conflicts(store, str(store.path), dataset, model, split, tag_state(store, dataset, model))


def calibrated(store: Store, dataset: str, model: str, ranked: pd.DataFrame, attrs: dict, reference: str,
               false_alarm: float) -> tuple[pd.DataFrame, dict]:
    """``ranked`` with ``percentile`` (against the ``reference`` split's own scores) and ``review``
    (above the threshold that flags a share ``false_alarm`` of the reference items); ``attrs`` gains
    ``threshold``, ``reference`` and ``false_alarm`` (``mmae_core.archive.novelty.triage``)."""
    from mmae_core.archive.novelty import calibrate, review_threshold, triage

    ref_table, _ = novelty(store, dataset, model, [reference])
    cal = calibrate(ref_table["score"].to_numpy(), reference)
    out = pd.concat([ranked.reset_index(drop=True), triage(ranked["score"].to_numpy(), cal, false_alarm)], axis=1)
    return out, {**attrs, "threshold": review_threshold(cal, false_alarm), "reference": reference,
                 "reference_items": cal.n, "false_alarm": float(false_alarm)}


def novelty_colours(ids: np.ndarray, table: pd.DataFrame, attrs: dict) -> np.ndarray:
    """The novelty band of every map row (by item id), for colouring the map."""
    score = pd.Series(table["score"].to_numpy(), index=table["item_id"].astype(str))
    got = score.reindex(np.asarray(ids).astype(str)).to_numpy(dtype=np.float64)
    bands = novelty_band(got, attrs)
    return np.array([b if b is not None else NO_SCORE for b in bands], dtype=object)


__all__ = ["NOVELTY_BANDS", "NO_SCORE", "calibrated", "conflicts", "novelty", "novelty_colours", "tag_state"]
