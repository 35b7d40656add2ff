"""Helpers every page uses: run an action and show its error as one sentence, say what is missing and
stop, resolve a server path under the data root, summarise a dataset once per process.

Why here and not in each page: the promise "bad input gets one sentence, never a traceback, and the
store stays as it was" is kept in one place (``run_action``), and the pages stay thin.
"""
from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from mmae_core.config import EvalConfig
from mmae_core.data.dataset import FeatureSet
from mmae_core.errors import DataError, NotFoundError, StudioError, resource_error

from . import state

log = logging.getLogger("mmae_studio")


# -- actions ------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What ``run_action`` gives back: ``ok`` (also the truth value), the result, or the message shown."""

    ok: bool
    value: Any = None
    message: str | None = None

    def __bool__(self) -> bool:
        return self.ok


def internal_error_sentence(err: BaseException) -> str:
    known = resource_error(err)  # out of memory or disk is the machine, not a bug: say that
    if known is not None:
        return str(known)
    first = (str(err).strip().splitlines() or [""])[0][:200]
    detail = f": {first}" if first else ""
    return f"Internal error ({type(err).__name__}{detail}); nothing more was done, please report it (the server log has the details)."


def run_action(fn: Callable[[], Any], success_msg: str | Callable[[Any], str] | None = None,
               *, where: Any = None) -> Outcome:
    """Call a store/core function; show a ``StudioError`` as ``st.error(str(e))`` (one sentence).

    Our functions write in one transaction, so a failure has left the store as it was. Anything that
    is not a ``StudioError`` is a bug: it is logged with its traceback and shown as one sentence too.
    ``where`` is the container to write the message in (default: the page).
    """
    target = where if where is not None else st
    out = attempt(fn)
    if not out:
        target.error(out.message)
        return out
    value = out.value
    if success_msg is not None:
        target.success(success_msg(value) if callable(success_msg) else success_msg)
    return Outcome(True, value)


def attempt(fn: Callable[[], Any]) -> Outcome:
    """Call ``fn``; any failure becomes an ``Outcome`` whose message is its one sentence (drawn by
    nobody: the caller decides where). A bug is logged with its traceback."""
    try:
        return Outcome(True, fn())
    except StudioError as err:
        return Outcome(False, None, str(err))
    except Exception as err:  # noqa: BLE001 - never a traceback in the page
        known = resource_error(err)
        if known is not None:  # out of memory or disk: the machine, not a bug
            return Outcome(False, None, str(known))
        log.exception("internal error in a dashboard action")
        return Outcome(False, None, internal_error_sentence(err))


def refusals(*steps: Callable[[], Any]) -> tuple[list[Any], list[str]]:
    """Run every step, even after one failed; (their values, None where failed; every refusal).

    Why every step: an import was refused one problem at a time, inside a collapsed box; a curator
    fixing a wrong name and a bad file should see both at once.
    """
    values, problems = [], []
    for step in steps:
        out = attempt(step)
        values.append(out.value)
        if not out:
            problems.append(out.message)
    return values, problems


# -- what is missing ------------------------------------------------------------------------------
def download_button(label: str, data: Any, *, container: Any = st, **kwargs: Any) -> None:
    """``st.download_button`` that never reruns the page: a download needs no rerun, and a rerun that
    starts while a deferred file (``data`` a callable) is being built clears Streamlit's outgoing queue,
    answer included, so the browser waits three minutes for a download that never comes (Streamlit 1.67)."""
    container.download_button(label, data, on_click="ignore", **kwargs)


def link(page: str, label: str, icon: str | None = None) -> None:
    """A link to another page (plain text when the page is run on its own, outside the navigation)."""
    try:
        st.page_link(page, label=label, icon=icon)
    except Exception:  # noqa: BLE001 - not registered (page run alone): still say where to go
        st.caption(f"→ {label}")


def need_dataset(store: Any) -> str:
    """The current dataset, or a note on how to get one and ``st.stop()``."""
    ds = state.current_dataset()
    if ds is not None:
        return ds
    try:
        names = store.dataset_names()
    except StudioError as err:
        st.error(str(err))
        st.stop()
    if names:  # the page was opened before the sidebar chose one (a page run on its own)
        state.choose_dataset(names[0])
        return names[0]
    st.info("There is no dataset yet. Create the demo dataset on Home, or import your own feature files on Data.")
    link("pages/home.py", "Home: create the demo dataset", ":material/home:")
    link("pages/data.py", "Data: import feature files", ":material/database:")
    st.stop()
    raise AssertionError("unreachable")


def need_model(store: Any, dataset: str) -> str:
    """The current model of ``dataset``, or a note on how to train one and ``st.stop()``."""
    model = state.current_model()
    try:
        listing = store.list_models(dataset)
    except StudioError as err:
        st.error(str(err))
        st.stop()
    names = list(listing["name"]) if len(listing) else []
    if model in names:
        return model
    if names:
        state.choose_model(names[-1])
        return names[-1]
    st.info(f"Dataset {dataset} has no trained model yet. Train one on the Train page (a few epochs are enough for a first look), or load a checkpoint there.")
    link("pages/train.py", "Train: train a model", ":material/model_training:")
    st.stop()
    raise AssertionError("unreachable")


# -- server paths ---------------------------------------------------------------------------------
def resolve_server_path(text: str, root: Path) -> Path:
    """A path typed by a curator, relative to ``root`` or absolute, that must stay inside ``root``.

    Symlinks are resolved first, so a link that points out of the data root is refused too.
    """
    text = (text or "").strip()
    root = Path(root).resolve()
    if not text:
        raise DataError(f"No folder was given; type a folder or file path under the data root {root}.")
    p = Path(text).expanduser()
    if not p.is_absolute():
        p = root / p
    p = p.resolve()
    if p != root and root not in p.parents:
        raise DataError(
            f"{text} is outside the data root {root}; copy the data under it, or ask the operator to set MMAE_STUDIO_DATA_ROOT."
        )
    if not p.exists():
        raise DataError(f"{text} does not exist under the data root {root}; check the spelling.")
    return p


def root_entries(root: Path, limit: int = 200) -> list[str]:
    """The folders and files directly under the data root, to pick from instead of typing."""
    try:
        entries = sorted(p for p in Path(root).iterdir() if not p.name.startswith("."))
    except OSError:
        return []
    return [p.name + ("/" if p.is_dir() else "") for p in entries[:limit]]


# -- uploads --------------------------------------------------------------------------------------
def upload_limit_bytes() -> int:
    """The dashboard's upload limit: Streamlit's ``server.maxUploadSize`` (MB, set in .streamlit/config.toml).

    Streamlit's uploader enforces it in the browser too; the page checks again so an upload that got
    past it (another client, a changed setting) is still refused in one sentence before it is read.
    """
    return int(float(st.get_option("server.maxUploadSize")) * 2**20)


def uploaded_files(files: Iterable[Any] | Any | None) -> list[tuple[str, bytes]]:
    """(name, bytes) pairs from what ``st.file_uploader`` returned (one file, a list, or None)."""
    if files is None:
        return []
    if not isinstance(files, (list, tuple)):
        files = [files]
    return [(f.name, f.getvalue()) for f in files]


def default_name(files: list[tuple[str, bytes]] | None = None, path: Path | None = None) -> str:
    """A dataset name proposed from the upload or folder (the curator can change it)."""
    if path is not None:
        return path.stem if path.is_file() else path.name
    if files and len(files) == 1:
        stem = Path(files[0][0]).stem
        return stem if stem not in ("train", "test", "ood") else "my-dataset"
    return "my-dataset"


# -- dataset summaries ----------------------------------------------------------------------------
@dataclass
class DatasetSummary:
    """What the Data, Train and Compare pages show about a dataset, small enough to keep per process."""

    name: str
    modalities: dict[str, int]
    splits: dict[str, int]
    table: pd.DataFrame  # split, modality, items, dim, missing, labels
    label_counts: pd.DataFrame  # split, label, items
    missing: dict[str, int]
    synthetic: bool
    source: str
    labelled: bool
    ignored: list[str] = field(default_factory=list)


def summarize(fs: FeatureSet) -> DatasetSummary:
    from studio.pipeline import missing_summary

    rows = []
    for sname, sp in fs.splits.items():
        if sp.labels is None:
            continue
        vc = pd.Series(sp.labels, dtype=object).fillna("(none)").value_counts()
        rows.extend({"split": sname, "label": str(k), "items": int(v)} for k, v in vc.items())
    return DatasetSummary(
        name=fs.name,
        modalities=dict(fs.modalities),
        splits={s: sp.n for s, sp in fs.splits.items()},
        table=fs.summary(),
        label_counts=pd.DataFrame(rows, columns=["split", "label", "items"]),
        missing=missing_summary(fs),
        synthetic=bool(fs.synthetic),
        source=str(fs.source or ""),
        labelled=fs.labelled,
        ignored=[str(x) for x in fs.attrs.get("ignored", [])] if isinstance(fs.attrs, dict) else [],
    )


class SummaryCache:
    """Dataset summaries per (store file, dataset, creation time), computed at most once per process.

    Summarising means loading every feature (about 10 s for the full demo), so a key being computed by
    one thread (the start-up warm-up, another session) is waited for, not computed twice. Nothing here
    calls Streamlit: the warm-up thread uses it too.
    """

    def __init__(self) -> None:
        self._done: dict[tuple[str, str, str], DatasetSummary] = {}
        self._locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def key(self, store: Any, name: str) -> tuple[str, str, str]:
        listing = store.list_datasets()
        row = listing[listing["name"] == name]
        if not len(row):
            raise NotFoundError(f"There is no dataset named '{name}' in the store; pick an existing one.")
        return (str(store.path), name, str(row["created_at"].iloc[0]))

    def ready(self, store: Any, name: str) -> DatasetSummary | None:
        return self._done.get(self.key(store, name))

    def put(self, store: Any, fs: FeatureSet) -> DatasetSummary:
        s = summarize(fs)
        self._done[self.key(store, fs.name)] = s
        return s

    def get(self, store: Any, name: str) -> DatasetSummary:
        key = self.key(store, name)
        if key in self._done:
            return self._done[key]
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._done:
                self._done[key] = summarize(store.load_dataset(name))
        return self._done[key]


@st.cache_resource(show_spinner=False)
def summaries() -> SummaryCache:
    return SummaryCache()


def remember_summary(store: Any, fs: FeatureSet) -> DatasetSummary:
    """Keep the summary of a dataset just written (so the next page does not load it again)."""
    return summaries().put(store, fs)


def dataset_summary(store: Any, name: str) -> DatasetSummary:
    """The summary of a stored dataset, computed once per process and version of the dataset."""
    cache = summaries()
    hit = cache.ready(store, name)
    if hit is not None:
        return hit
    with st.spinner(f"Reading dataset {name} to summarise it (once per server start)…"):
        return cache.get(store, name)


@st.cache_resource(show_spinner=False)
def warm_summaries(path: str) -> bool:
    """Summarise every dataset of the store in a background thread when the server starts, so the
    Data, Train and Compare pages do not make the first curator wait for it."""
    store = state.current_store()
    cache = summaries()

    def work() -> None:
        try:
            for name in store.dataset_names():
                cache.get(store, name)
        except Exception:  # noqa: BLE001 - only a speed-up; a page computes (and reports) it itself
            log.debug("summary warm-up stopped", exc_info=True)

    threading.Thread(target=work, name="mmae-summaries", daemon=True).start()
    return True


# -- small formatting -----------------------------------------------------------------------------
def fmt_seconds(s: float | None) -> str:
    if s is None or (isinstance(s, float) and not math.isfinite(s)):
        return "–"
    s = max(0.0, float(s))
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


# -- Compare ----------------------------------------------------------------------------------------
def k_suggestion(summary: DatasetSummary, split: str) -> Any:
    """``mmae_core.clustering.k_defaults.suggest_k`` for one split of a summarised dataset."""
    from mmae_core.clustering.k_defaults import suggest_k

    counts = summary.label_counts
    n_labels = int(counts.loc[counts["split"] == split, "label"].nunique()) if len(counts) else None
    return suggest_k(summary.splits.get(split, 0), n_labels or None, set(summary.modalities))


LABELLED_METRICS = {"ari": "ARI", "nmi": "NMI", "silhouette": "Silhouette"}
UNLABELLED_METRICS = {"silhouette": "Silhouette", "calinski_harabasz": "Calinski-Harabasz", "davies_bouldin": "Davies-Bouldin"}
LOWER_IS_BETTER = {"davies_bouldin"}


def eval_params(cfg: EvalConfig) -> dict:
    """The parameters exactly as ``evaluate_model`` saves them with a run."""
    return {"k_grid": list(cfg.k_grid), "seed": cfg.seed, "n_init": cfg.n_init, "fused_weights": cfg.fused_weights}


def find_run(runs: pd.DataFrame, model: str | None, split: str, params: dict) -> pd.Series | None:
    """The newest stored run with the same model, split and parameters (the cache by content)."""
    want = json.loads(json.dumps(params))
    for _, r in runs.sort_values("id", ascending=False).iterrows():
        r_model = None if r["model"] is None or (isinstance(r["model"], float) and math.isnan(r["model"])) else r["model"]
        if r_model == model and r["split"] == split and json.loads(r["params"]) == want:
            return r
    return None


def beaten_sentences(table: pd.DataFrame, metrics: dict[str, str]) -> list[str]:
    """Plain sentences naming every k where a baseline beats the MMAE (nobody should have to squint)."""
    out = []
    ours = table[table["method"] == "mmae"]
    if not len(ours):
        return out
    for metric, label in metrics.items():
        if metric == "silhouette" and "ari" in metrics:
            continue  # with labels, ARI/NMI decide; each silhouette is on its own representation
        lower = metric in LOWER_IS_BETTER
        by_method: dict[str, list[tuple[int, float]]] = {}
        for k, group in table.groupby("k"):
            m = group[group["method"] == "mmae"][metric]
            if not len(m) or pd.isna(m.iloc[0]):
                continue
            mv = float(m.iloc[0])
            for _, row in group[group["method"] != "mmae"].iterrows():
                v = row[metric]
                if pd.notna(v) and ((v < mv) if lower else (v > mv)):
                    by_method.setdefault(row["method"], []).append((int(k), abs(float(v) - mv)))
        parts = [
            f"{method} at k = {', '.join(str(k) for k, _ in hits)} (by up to {max(g for _, g in hits):.3f})"
            for method, hits in sorted(by_method.items(), key=lambda kv: -max(g for _, g in kv[1]))
        ]
        if parts:
            listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
            out.append(f"On {label}, {listed} {'beats' if len(parts) == 1 else 'beat'} the MMAE.")
    return out
