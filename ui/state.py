"""Session-level glue shared by every page: which store, data root, dataset, model and curator are current.

The store and the job manager are per *process* (``st.cache_resource``): every session and tab shares
one connection pool and one set of background jobs. The current dataset, model and curator are per
*session* and live in ``st.session_state`` under the plain keys ``dataset``, ``model`` and ``curator``,
mirrored into the URL's query parameters so a reload, a new tab or a shared link keeps them
(pages read them through ``current_dataset()``, ``current_model()`` and ``curator()``). The sidebar's
widgets have their own keys and copy into those on change, because Streamlit forbids writing a
widget's key after it is drawn: a page that wants to switch the current dataset (after an import, say)
calls ``choose_dataset`` and reruns, and the sidebar follows.
"""
from __future__ import annotations

import ast
import builtins
import os
import sys
import threading
from pathlib import Path
from typing import Any

import streamlit as st

from mmae_core.errors import StudioError
from studio.jobs import JobManager, manager_for
from store import Store, default_path

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = "data"

DATASET, MODEL, CURATOR = "dataset", "model", "curator"
_SB_DATASET, _SB_MODEL, _SB_CURATOR = "_sidebar_dataset", "_sidebar_model", "_sidebar_curator"
_FLASH = "_flash_messages"


# -- a CPython 3.11 race ------------------------------------------------------------------------
def serialize_ast_compiles() -> None:
    """Let only one thread at a time turn source into Python AST objects, or AST objects into code.

    CPython 3.11 keeps the AST converter's recursion counter per interpreter, not per call, so two
    threads doing it at once can fail with "SystemError: AST constructor recursion depth mismatch"
    (python/cpython#106905 and follow-ups). The dashboard does it in many threads: Streamlit compiles
    page scripts through ``ast.parse``, numpy reads every ``.npy`` block of the store with
    ``ast.literal_eval``, and torch parses source when imported; the test suite hit the error. One
    re-entrant lock around those compiles removes the race (each is short); ordinary compiles to
    bytecode, such as imports, are not affected. Installed once per process when this module loads.

    A CPython bug, not Streamlit's: the fix (python/cpython#106906) is in 3.12 and later, and its 3.11
    backport (#112849) was closed unmerged. Hence the version guard; delete this function when the
    project leaves Python 3.11.
    """
    if sys.version_info[:2] != (3, 11) or getattr(builtins.compile, "_mmae_serialized", False):
        return
    original = builtins.compile
    lock = threading.RLock()

    def compile(source: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: A001 - replaces the builtin
        flags = args[2] if len(args) > 2 else kwargs.get("flags", 0)
        if isinstance(source, ast.AST) or (flags or 0) & ast.PyCF_ONLY_AST:
            with lock:
                return original(source, *args, **kwargs)
        return original(source, *args, **kwargs)

    compile._mmae_serialized = True  # type: ignore[attr-defined]
    compile.__doc__ = original.__doc__
    builtins.compile = compile


serialize_ast_compiles()


# -- where things are -------------------------------------------------------------------------
def db_path() -> Path:
    """The store the CLI would open from the same folder (``store.default_path``): one rule, so the
    dashboard and a batch script never open different files. ``scripts/run.sh`` starts the
    dashboard in the project folder."""
    return default_path()


def data_root() -> Path:
    """The only server folder a curator may import from (``$MMAE_STUDIO_DATA_ROOT``, else ``data/``)."""
    env = os.environ.get("MMAE_STUDIO_DATA_ROOT")
    return (Path(env).expanduser() if env else PROJECT_DIR / DEFAULT_DATA_DIR).resolve()


@st.cache_resource(show_spinner=False)
def _open_store(path: str) -> Store:
    return Store(path, linger=1.0)


def ensure_navigation() -> None:
    """Rerun through ``app.py`` when Streamlit ran a page file on its own.

    Until ``st.navigation`` has run once in the process, Streamlit treats a ``pages/`` folder beside the
    entry script as the old multipage layout: a deep link opened first after the server starts (and every
    ``AppTest`` rerun) then executes ``pages/x.py`` alone, without the sidebar and the page config. The
    page hash is the same in both layouts, so one rerun in the ``st.navigation`` layout shows the same page
    inside the frame. Called by ``current_store``, which every page uses first.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def current_store() -> Store:
    """The process's store; if it cannot be opened the page says why in a sentence and stops."""
    ensure_navigation()
    try:
        return _open_store(str(db_path()))
    except StudioError as err:
        st.error(str(err))
        st.stop()
        raise  # unreachable: st.stop raises


@st.cache_resource(show_spinner=False)
def _job_manager(path: str) -> JobManager:
    return manager_for(_open_store(path))


def job_manager() -> JobManager:
    """The process-wide background-job manager of the current store."""
    current_store()
    return _job_manager(str(db_path()))


# -- the session's choices --------------------------------------------------------------------
def curator() -> str:
    """The curator's name: the logged-in user's where login is configured, else the sidebar field."""
    name = _login_name()
    if name:
        return name
    return str(st.session_state.get(CURATOR, "") or "").strip()


def _login_name() -> str | None:
    try:
        info = st.user.to_dict()
    except Exception:  # no user info in this context (bare runs): fall back to the name field
        return None
    if not info.get("is_logged_in"):
        return None
    for key in ("name", "preferred_username", "email"):
        if info.get(key):
            return str(info[key])
    return None


def current_dataset() -> str | None:
    return st.session_state.get(DATASET) or None


def current_model() -> str | None:
    return st.session_state.get(MODEL) or None


def choose_dataset(name: str | None, model: str | None = None) -> None:
    """Make ``name`` (and ``model``, else its latest) current; the sidebar shows it from the next run."""
    st.session_state[DATASET] = name
    st.session_state[MODEL] = model


def choose_model(name: str | None) -> None:
    st.session_state[MODEL] = name


def keep(key: str, default: Any, context: Any = None) -> str:
    """Make widget ``key`` keep its value across page visits (Streamlit drops the state of a widget
    its page did not draw); returns ``key``. Draw the widget with ``key=`` and no default of its own.

    ``context`` (a dataset and split, say) scopes the value: when it changes, the widget starts again
    from ``default``, so a k grid sized for one dataset is not kept for another.
    """
    shadow = f"_kept_{key}"
    saved = st.session_state.get(shadow)
    same = saved is not None and saved[0] == context
    if key not in st.session_state:
        st.session_state[key] = saved[1] if same else default
    elif saved is not None and not same:
        st.session_state[key] = default
    st.session_state[shadow] = (context, st.session_state[key])
    return key


def flash(message: str, kind: str = "success") -> None:
    """A message to show at the top of the next run (survives the ``st.rerun`` after an action)."""
    st.session_state.setdefault(_FLASH, []).append((kind, message))


def show_flash() -> None:
    for kind, message in st.session_state.pop(_FLASH, []):
        getattr(st, kind if kind in ("success", "info", "warning", "error") else "info")(message)


# -- the sidebar ------------------------------------------------------------------------------
def _copy(src: str, dst: str) -> None:
    st.session_state[dst] = st.session_state.get(src)
    if dst == DATASET:
        st.session_state[MODEL] = None  # a new dataset starts on its latest model


def _sync_choices(store: Store) -> tuple[list[str], list[str]]:
    """Make the session's dataset/model valid for what is in the store now (another session or the CLI
    may have deleted or added some); returns the dataset and model names."""
    names = store.dataset_names()
    ds = st.session_state.get(DATASET)
    if ds not in names:
        ds = names[0] if names else None
        st.session_state[DATASET] = ds
        st.session_state[MODEL] = None
    models: list[str] = []
    if ds is not None:
        listing = store.list_models(ds)
        models = list(listing["name"]) if len(listing) else []
    if st.session_state.get(MODEL) not in models:
        st.session_state[MODEL] = models[-1] if models else None
    return names, models


# -- the URL: what survives a reload, a new tab and a shared link --------------------------------
URL_PARAMS = {DATASET: "dataset", MODEL: "model", CURATOR: "curator"}
_URL_READ = "_url_read"


def adopt_url() -> None:
    """Once per session, take the dataset, model and curator from the page's query parameters.

    Why the URL: a browser reload starts a new session, which lost the dataset, the model (a running
    training job then looked gone) and the curator's name. ``st.query_params`` survives a reload,
    goes along when the link is copied into a new tab or sent to a colleague, and works in every
    browser and in ``AppTest``. Browser storage would need a custom component (Streamlit 1.67 can
    read cookies through ``st.context.cookies`` but not write them), so the curator's name rides in
    the URL too, unless Streamlit's login names the curator (``st.user``), which then wins.
    Invalid values (a deleted dataset, say) are dropped by ``_sync_choices`` as usual.
    """
    if st.session_state.get(_URL_READ):
        return
    st.session_state[_URL_READ] = True
    for key, param in URL_PARAMS.items():
        value = st.query_params.get(param)
        if value and not st.session_state.get(key):
            st.session_state[key] = str(value).strip() if key == CURATOR else str(value)


def publish_url() -> None:
    """Write the session's dataset, model and curator into the URL (a page switch clears it)."""
    for key, param in URL_PARAMS.items():
        value = st.session_state.get(key)
        value = str(value).strip() if value else ""
        if key == CURATOR and _login_name():
            value = ""  # the login names the curator; no name in shared links
        if value and st.query_params.get(param) != value:
            st.query_params[param] = value
        elif not value and param in st.query_params:
            del st.query_params[param]


def sidebar(store: Store) -> None:
    """Current dataset, model, curator and the store path; remembered across pages for the session
    and, through the URL, across reloads and tabs (``adopt_url``)."""
    adopt_url()
    try:
        names, models = _sync_choices(store)
    except StudioError as err:
        st.sidebar.error(str(err))
        names, models = [], []
    with st.sidebar:
        if names:
            st.session_state[_SB_DATASET] = st.session_state[DATASET]
            st.selectbox("Dataset", names, key=_SB_DATASET, on_change=_copy, args=(_SB_DATASET, DATASET),
                         help="The dataset every page works on.")
            if models:
                st.session_state[_SB_MODEL] = st.session_state[MODEL]
                st.selectbox("Model", models[::-1], key=_SB_MODEL, on_change=_copy, args=(_SB_MODEL, MODEL),
                             help="The trained model the pages use (newest first by default).")
            else:
                st.caption("Model: none yet; train one on the Train page.")
        else:
            st.caption("No dataset yet: create the demo on Home or import one on Data.")
        login = _login_name()
        if login:
            st.session_state[CURATOR] = login  # pages that read the key directly see the signed-in name
            st.caption(f"Curator: **{login}** (signed in)")
        else:
            st.session_state[_SB_CURATOR] = st.session_state.get(CURATOR, "")
            st.text_input("Curator", key=_SB_CURATOR, on_change=_copy, args=(_SB_CURATOR, CURATOR),
                          placeholder="your name", help="Saved with every tag decision you make.")
        _job_badge()
        st.caption(f"Store: `{db_path()}`")
    publish_url()


def _job_badge() -> None:
    try:
        active = job_manager().active()
    except StudioError:
        return
    for j in active[:3]:  # the Train page shows the live epoch; the sidebar only redraws on a full rerun
        st.caption(f":material/model_training: Training job {j.id} on {j.dataset} is {j.status}.")


def preload_heavy_modules() -> None:
    """Import torch, the trainer and the baselines in the script thread, after the first page painted.

    Not in a background thread: importing torch calls ``ast.parse`` many times, and CPython 3.11's
    ``ast.parse`` is not safe against another thread parsing at the same moment (Streamlit compiles
    page scripts with it), which fails with "AST constructor recursion depth mismatch". Doing it here,
    once per process, also means a training job's thread never has to import torch itself.
    """
    import mmae_core.evaluation.evaluate  # noqa: F401
    import mmae_core.model.train  # noqa: F401
