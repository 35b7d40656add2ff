"""The fault and bad-input matrix, as functions the tests and ``benchmarks/reliability.py`` share.

Each case runs the real code path a user takes (the ``python -m mmae_core`` command in a subprocess,
the Data/Train/Compare pages under ``AppTest``, or the store and job manager as the server runs them)
against a private copy of a small trained store, and returns ``Outcome`` rows: what the user saw,
whether the checksum over every table is the one taken before, how many committed rows are gone and
whether the process or store still works afterwards. The tests assert on these rows; the benchmark
prints them as the table docs/results.md quotes. No test functions live here.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
DATASET = "demo"
MODEL = "m1"
CURATOR = "ann"


# -- what a case reports -------------------------------------------------------------------------------
@dataclass
class Outcome:
    """One row of the matrix: a case seen through one surface (cli, page, store, job)."""

    case: str
    surface: str
    saw: str  # the sentence the user saw (or what they got, for cases that must succeed)
    exit_code: int | None = None  # the CLI's exit code; None for other surfaces
    unchanged: bool | None = None  # checksum over every table equal before and after (None: not expected)
    rows_lost: int = 0  # committed rows missing afterwards
    works_after: bool = True  # the process / store serves the next request
    note: str = ""

    @property
    def sentence_ok(self) -> bool:
        return one_sentence(self.saw) and "Traceback" not in self.saw and (self.exit_code in (None, 1))

    def row(self) -> dict[str, Any]:
        return {
            "case": self.case, "surface": self.surface,
            "what the user saw": self.saw if len(self.saw) <= 140 else self.saw[:137] + "...",
            "exit": "" if self.exit_code is None else self.exit_code,
            "store unchanged": {True: "yes", False: "NO", None: "n/a"}[self.unchanged],
            "rows lost": self.rows_lost, "works after": "yes" if self.works_after else "NO",
        }


def one_sentence(message: str) -> bool:
    """One line, ending in a period, with no second sentence starting inside it."""
    m = message.strip()
    return bool(m) and "\n" not in m and m.endswith(".") and not re.search(r"[.!?] [A-Z]", m)


# -- the store every case starts from --------------------------------------------------------------------
def build_template(folder: Path) -> Path:
    """A small trained store: demo (scale 0.02) with model ``m1`` (1 epoch), proposals, two decisions."""
    from mmae_core.config import preset
    from mmae_core.data.demo import make_demo
    from studio.pipeline import propose_tags, train_and_register
    from store import Store

    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "template.duckdb"
    store = Store(db)
    store.add_dataset(make_demo(DATASET, seed=42, scale=0.02))
    train_and_register(store, DATASET, preset("paper", epochs=1, latent=16), MODEL)
    propose_tags(store, DATASET, MODEL, 5)
    store.accept(DATASET, MODEL, 0, CURATOR)
    item = store.catalog(DATASET)["item_id"].iloc[-1]
    store.set_item(DATASET, str(item), "by hand", CURATOR)
    with store._db.session() as con:  # fold the WAL into the file so a copy is the whole store
        con.execute("CHECKPOINT")
    return db


def copy_store(template: Path, dst: Path) -> Path:
    from store import copy_store as _copy_store

    return _copy_store(template, dst)


def table_counts(db: Path) -> dict[str, int]:
    from store import Store
    from store.schema import table_names

    with Store(db).reader() as con:
        return {t: int(con.execute(f'SELECT count(*) FROM "{t}"').fetchall()[0][0]) for t in table_names(con)}


def checksum(db: Path) -> str:
    from store import Store

    return Store(db).checksum()


def rows_lost(before: dict[str, int], after: dict[str, int]) -> int:
    return sum(max(0, n - after.get(t, 0)) for t, n in before.items())


@dataclass
class Snapshot:
    db: Path
    sum: str
    counts: dict[str, int]

    @classmethod
    def take(cls, db: Path) -> "Snapshot":
        return cls(db, checksum(db), table_counts(db))

    def compare(self) -> tuple[bool, int]:
        after = Snapshot.take(self.db)
        return after.sum == self.sum, rows_lost(self.counts, after.counts)


# -- the CLI as a user runs it ------------------------------------------------------------------------------
def cli_env(db: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMAE_FAULT", "MMAE_DEBUG"))}
    env.update({"MMAE_STUDIO_DB": str(db), "PYTHONPATH": str(ROOT), **extra})
    return env


def cli(db: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300,
        preexec: Callable[[], None] | None = None) -> subprocess.CompletedProcess:
    """``python -m mmae_core ARGS`` with ``MMAE_STUDIO_DB=db``, from outside the project folder."""
    return subprocess.run([sys.executable, "-m", "mmae_core", *args], env=env or cli_env(db), cwd=db.parent,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=preexec)


def cli_error(proc: subprocess.CompletedProcess) -> str:
    """The one ``error: ...`` line of a failed command (its whole stderr must be progress + that line)."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(("error:", "internal error:", "Traceback"))]
    if len(lines) != 1:
        return proc.stderr.strip().replace("\n", " | ")
    return lines[0].removeprefix("error:").strip()


def cli_works(db: Path, subprocess_check: bool = False) -> bool:
    """The store still opens and holds the base dataset (through a new CLI process when asked;
    in-process otherwise, which is the same code and saves 1.5 s per case)."""
    if subprocess_check:
        proc = cli(db, "datasets", "--format", "json")
        return proc.returncode == 0 and DATASET in {d["name"] for d in json.loads(proc.stdout or "[]")}
    from store import Store

    return DATASET in Store(db).dataset_names()


def cli_case(case: str, db: Path, *args: str, env: dict[str, str] | None = None,
             preexec: Callable[[], None] | None = None, expect_unchanged: bool = True) -> Outcome:
    snap = Snapshot.take(db)
    proc = cli(db, *args, env=env, preexec=preexec)
    same, lost = snap.compare()
    saw = cli_error(proc) if proc.returncode != 0 else "(succeeded) " + proc.stderr.strip().splitlines()[-1]
    return Outcome(case, "cli", saw, proc.returncode, same if expect_unchanged else None, lost, cli_works(db))


def store_case(case: str, db: Path, action: Callable[[], Any]) -> Outcome:
    """Call the core/store directly (as the server does) and expect a ``StudioError``."""
    from mmae_core.errors import StudioError
    from store import Store

    snap = Snapshot.take(db)
    try:
        action()
        saw = "(no error)"
    except StudioError as err:
        saw = str(err)
    except Exception as err:  # noqa: BLE001 - a bug: reported as such in the row
        saw = f"BUG {type(err).__name__}: {err}"
    same, lost = snap.compare()
    return Outcome(case, "store", saw, None, same, lost, DATASET in Store(db).dataset_names())


# -- the pages under AppTest ---------------------------------------------------------------------------------
@contextmanager
def page_env(db: Path, data_root: Path) -> Iterator[None]:
    """Point the dashboard at ``db``/``data_root`` and make AppTest run through ``st.navigation`` (as
    ``tests/conftest.py``'s autouse fixture does, for use outside pytest too)."""
    from streamlit.runtime.pages_manager import PagesManager

    saved = {k: os.environ.get(k) for k in ("MMAE_STUDIO_DB", "MMAE_STUDIO_DATA_ROOT")}
    os.environ["MMAE_STUDIO_DB"], os.environ["MMAE_STUDIO_DATA_ROOT"] = str(db), str(data_root)
    data_root.mkdir(parents=True, exist_ok=True)
    original = PagesManager.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = init  # type: ignore[method-assign]
    try:
        yield
    finally:
        PagesManager.__init__ = original  # type: ignore[method-assign]
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def open_page(page: str, **state: Any) -> Any:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=180)
    at.session_state["curator"] = CURATOR
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    at.switch_page(f"pages/{page}.py")
    at.run()
    return at


def page_errors(at: Any) -> list[str]:
    return [e.value for e in at.error]


def page_saw(at: Any) -> str:
    if at.exception:
        return "BUG " + " | ".join(str(e.value)[:200] for e in at.exception)
    errs = page_errors(at)
    return errs[0] if len(errs) == 1 else " | ".join(errs) or "(no error shown)"


def page_works(at: Any, page: str) -> bool:
    """The same session keeps working: a rerun and a switch to the Catalog page run without a bug."""
    at.run()
    if at.exception:
        return False
    at.switch_page("pages/catalog.py")
    at.run()
    ok = not at.exception and not any("Internal error" in e for e in page_errors(at))
    at.switch_page(f"pages/{page}.py")
    return ok


def by_label(elements: Any, label: str) -> Any:
    return next(x for x in elements if x.label == label)


def page_imports(cases: list[tuple[str, str]], db: Path, data_root: Path, name: str = "incoming",
                 replace: bool = False) -> list[Outcome]:
    """Import each (case label, path typed under the data root) on the Data page, one after the other in
    one browser session, as a curator retrying would; one ``Outcome`` per attempt."""
    outs = []
    with page_env(db, data_root):
        at = open_page("data")
        at.radio(key="data_source").set_value("A folder on the server").run()
        for case, typed in cases:
            snap = Snapshot.take(db)
            at.text_input(key="data_path").input(typed).run()
            by_label(at.text_input, "Dataset name").input(name).run()
            if replace:
                at.checkbox(key="data_replace").check().run()
            by_label(at.button, "Import").click().run()
            saw = page_saw(at)
            at.run()  # the session goes on: the next rerun draws the page without a bug
            works = not at.exception
            same, lost = snap.compare()
            outs.append(Outcome(case, "page", saw, None, same, lost, works))
        outs[-1].works_after = outs[-1].works_after and page_works(at, "data")
    return outs


def page_import(case: str, db: Path, data_root: Path, typed: str, name: str = "incoming",
                replace: bool = False) -> Outcome:
    return page_imports([(case, typed)], db, data_root, name, replace)[0]


def page_upload(case: str, db: Path, data_root: Path, files: list[tuple[str, bytes]], name: str = "incoming") -> Outcome:
    snap = Snapshot.take(db)
    with page_env(db, data_root):
        at = open_page("data")
        at.file_uploader(key="data_upload").set_value([(n, b, "application/octet-stream") for n, b in files]).run()
        by_label(at.text_input, "Dataset name").input(name).run()
        by_label(at.button, "Import").click().run()
        saw = page_saw(at)
        works = page_works(at, "data")
    same, lost = snap.compare()
    return Outcome(case, "page", saw, None, same, lost, works)


# -- bad inputs (cases 1-8, 21): each writes a folder under the data root ------------------------------------
def _npy(arr: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


class Payload:
    """Unpickling this creates ``target``: the file's existence afterwards proves code ran."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (open, (str(self.target), "w"))


def _good(n: int, seed: int, dims: tuple[int, int] = (6, 4)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"image": rng.normal(size=(n, dims[0])).astype(np.float32), "text": rng.normal(size=(n, dims[1])).astype(np.float32)}


def _write_npy_folder(folder: Path, splits: dict[str, dict[str, np.ndarray]]) -> Path:
    for split, mods in splits.items():
        (folder / split).mkdir(parents=True, exist_ok=True)
        for m, x in mods.items():
            np.save(folder / split / f"{m}.npy", x)
    return folder


def make_bad_inputs(root: Path, pwned: Path) -> dict[str, tuple[str, str]]:
    """Folders/files under ``root`` for cases 1-8: {key: (case label, relative path)}."""
    import zipfile

    out: dict[str, tuple[str, str]] = {}

    def add(key: str, label: str, rel: str) -> None:
        out[key] = (label, rel)

    g = _good(20, 1)
    _write_npy_folder(root / "rows", {"train": {"image": g["image"], "text": g["text"][:15]}})
    add("rows", "1 row counts differ between modalities", "rows")
    _write_npy_folder(root / "dims", {"train": _good(20, 1), "test": _good(8, 2, dims=(7, 4))})
    add("dims", "2 dimension differs between splits", "dims")
    x = _good(20, 3)
    x["image"][4, 2] = np.nan
    _write_npy_folder(root / "nan", {"train": x})
    add("nan", "3 NaN inside a row", "nan")
    x = _good(20, 3)
    x["text"][7, 0] = np.inf
    _write_npy_folder(root / "inf", {"train": x})
    add("inf", "3 Inf inside a row", "inf")
    (root / "empty").mkdir()
    (root / "empty" / "train_image.npy").write_bytes(b"")
    np.save(root / "empty" / "train_text.npy", _good(5, 1)["text"][:5])
    add("empty", "4 empty file", "empty")
    full = _npy(_good(200, 4)["image"])
    (root / "cut_npy").mkdir()
    (root / "cut_npy" / "train_image.npy").write_bytes(full[: len(full) // 2])
    np.save(root / "cut_npy" / "train_text.npy", _good(200, 4)["text"])
    add("cut_npy", "4 truncated .npy", "cut_npy")
    pq_buf = io.BytesIO()
    pd.DataFrame({"item_id": [f"i{i}" for i in range(50)], **{f"f{j}": np.arange(50.0) for j in range(4)}}).to_parquet(pq_buf)
    (root / "cut_parquet" / "train").mkdir(parents=True)
    (root / "cut_parquet" / "train" / "image.parquet").write_bytes(pq_buf.getvalue()[:-40])
    pd.DataFrame({"item_id": [f"i{i}" for i in range(50)], "t0": np.arange(50.0)}).to_parquet(root / "cut_parquet" / "train" / "text.parquet")
    add("cut_parquet", "4 truncated .parquet", "cut_parquet")
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        for m, a in _good(100, 5).items():
            zf.writestr(f"train/{m}.npy", _npy(a))
    (root / "cut.zip").write_bytes(zbuf.getvalue()[: len(zbuf.getvalue()) * 2 // 3])
    add("cut_zip", "4 truncated .zip", "cut.zip")
    obj = np.empty((2, 2), dtype=object)
    obj[:] = 0.0
    obj[0, 0] = Payload(pwned)
    (root / "pickle_npy" / "train").mkdir(parents=True)
    (root / "pickle_npy" / "train" / "image.npy").write_bytes(_npy(obj, allow_pickle=True))
    np.save(root / "pickle_npy" / "train" / "text.npy", np.zeros((2, 3), np.float32))
    add("pickle_npy", "5 .npy holding a pickle", "pickle_npy")
    nbuf = io.BytesIO()
    np.savez(nbuf, image=obj, text=np.zeros((2, 3), np.float32))
    (root / "pickle_npz").mkdir()
    (root / "pickle_npz" / "train.npz").write_bytes(nbuf.getvalue())
    add("pickle_npz", "5 .npz holding a pickle", "pickle_npz")
    with zipfile.ZipFile(root / "slip.zip", "w") as zf:
        zf.writestr("train/image.npy", _npy(_good(10, 1)["image"][:10]))
        zf.writestr("../../escaped.npy", _npy(_good(10, 1)["text"][:10]))
    add("slip", "6 zip member escaping (../)", "slip.zip")
    with zipfile.ZipFile(root / "bomb.zip", "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("train/image.npy", _npy(_good(10, 1)["image"]))
        zf.writestr("train/text.npy", _npy(np.zeros((200_000, 10), np.float32)))  # 8 MB of zeros, ~1000:1
    add("bomb", "6 zip bomb (ratio)", "bomb.zip")
    (root / "text_col" / "train").mkdir(parents=True)
    ids = [f"i{i}" for i in range(10)]
    pd.DataFrame({"item_id": ids, "f0": np.arange(10.0), "f1": ["a"] * 10}).to_csv(root / "text_col" / "train" / "image.csv", index=False)
    pd.DataFrame({"item_id": ids, "t0": np.arange(10.0)}).to_csv(root / "text_col" / "train" / "text.csv", index=False)
    add("text_col", "7 non-numeric feature column (CSV)", "text_col")
    (root / "dup_id" / "train").mkdir(parents=True)
    dup = ids[:-1] + ["i0"]
    pd.DataFrame({"item_id": dup, "f0": np.arange(10.0)}).to_parquet(root / "dup_id" / "train" / "image.parquet")
    pd.DataFrame({"item_id": ids, "t0": np.arange(10.0)}).to_parquet(root / "dup_id" / "train" / "text.parquet")
    add("dup_id", "7 duplicate item_id (Parquet)", "dup_id")
    (root / "no_id" / "train").mkdir(parents=True)
    pd.DataFrame({"item_id": ids[:5] + [None] * 5, "f0": np.arange(10.0)}).to_parquet(root / "no_id" / "train" / "image.parquet")
    pd.DataFrame({"item_id": ids, "t0": np.arange(10.0)}).to_parquet(root / "no_id" / "train" / "text.parquet")
    add("no_id", "7 missing item_id (Parquet)", "no_id")
    _write_npy_folder(root / "labels", {"train": _good(20, 1)})
    np.save(root / "labels" / "train" / "labels.npy", np.arange(19))
    add("labels", "8 labels do not match the rows", "labels")
    _write_npy_folder(root / "items", {"train": _good(20, 1)})
    pd.DataFrame({"item_id": [f"x{i}" for i in range(18)], "title": ["t"] * 18}).to_csv(root / "items" / "train" / "items.csv", index=False)
    add("items", "8 items table does not match the rows", "items")
    return out


def good_folder(root: Path, name: str = "good") -> str:
    _write_npy_folder(root / name, {"train": _good(30, 7), "test": _good(10, 8)})
    return name


# -- crash points (case 16) -----------------------------------------------------------------------------------
def run_until_pause(db: Path, point: str, args: list[str], marker: Path, timeout: float = 240) -> tuple[int, float]:
    """Run the CLI with the pause point ``point`` armed, wait until it is reached, then ``kill -9`` it."""
    marker.unlink(missing_ok=True)
    env = cli_env(db, MMAE_FAULT_PAUSE=point, MMAE_FAULT_MARKER=str(marker))
    proc = subprocess.Popen([sys.executable, "-m", "mmae_core", *args], env=env, cwd=db.parent,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    try:
        while not marker.exists():
            if proc.poll() is not None:
                raise AssertionError(f"the CLI ended ({proc.returncode}) before reaching {point}: {proc.stderr.read()}")
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"the CLI did not reach the pause point {point} within {timeout} s")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    return proc.returncode, time.monotonic() - t0


def disk_limit(limit_bytes: int) -> Callable[[], None]:
    """A ``preexec_fn`` that makes every file of the child stop growing at ``limit_bytes`` (EFBIG),
    which is what a full disk looks like to the program (SIGXFSZ ignored, so writes fail instead)."""
    import resource

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return apply


# -- load: concurrent curators, decisions beside training and evaluation ---------------------------------------
@dataclass
class CuratorRun:
    decisions: int  # committed (an event id came back)
    refused: int  # refused with a sentence (e.g. renaming a tag another curator just renamed)
    in_trail: int  # of the committed ones, how many the audit trail holds
    replay_equal: bool  # the tags equal a serial replay of the audit trail on the starting store
    seconds: float
    bugs: list[str]


def curators(db: Path, threads: int, per_thread: int, seed: int = 0) -> CuratorRun:
    """``threads`` curators in threads of one process (as the server runs sessions), each making
    ``per_thread`` decisions (accept, rename, move an item, undo) through the Store API."""
    import random
    import threading

    from mmae_core.errors import StudioError
    from store import Store

    start = copy_store(db, db.with_name(db.stem + "-start.duckdb"))
    store = Store(db, linger=1.0)
    items = [str(i) for i in store.catalog(DATASET)["item_id"]]
    k = len(store.proposals(DATASET, MODEL)[0])
    first_event = int(store.history(DATASET)["id"].max())
    ids: list[int] = []
    refused = [0]
    bugs: list[str] = []
    lock = threading.Lock()

    def curator(t: int) -> None:
        rng = random.Random(seed * 1000 + t)
        mine: list[str] = []
        for j in range(per_thread):
            action = rng.choice(("accept", "rename", "move", "move", "undo"))
            try:
                if action == "accept":
                    res = store.accept(DATASET, MODEL, rng.randrange(k), f"c{t}", name=f"c{t}-tag{j}")
                    mine.append(res["tag"])
                elif action == "rename" and mine:
                    old = mine.pop(rng.randrange(len(mine)))
                    res = store.rename(DATASET, old, f"c{t}-renamed{j}", f"c{t}")
                    mine.append(f"c{t}-renamed{j}")
                elif action == "undo":
                    res = store.undo(DATASET, f"c{t}")
                else:
                    res = store.set_item(DATASET, rng.choice(items), f"c{t}-item{j}", f"c{t}")
                    mine.append(f"c{t}-item{j}")
                with lock:
                    ids.append(int(res["event"]))
            except StudioError:
                with lock:
                    refused[0] += 1
            except Exception as err:  # noqa: BLE001 - reported, the run goes on
                with lock:
                    bugs.append(f"{type(err).__name__}: {err}")

    t0 = time.perf_counter()
    workers = [threading.Thread(target=curator, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    seconds = time.perf_counter() - t0
    with store.reader() as con:
        trail = con.execute(
            "SELECT e.id, e.action, e.curator, e.payload FROM tag_events e JOIN datasets d ON d.id = e.dataset_id "
            "WHERE d.name = ? AND e.id > ? ORDER BY e.id", [DATASET, first_event]).fetchall()
    in_trail = len(set(ids) & {r[0] for r in trail})
    replay_equal = replay(start, trail) == tag_rows(db)
    return CuratorRun(len(ids), refused[0], in_trail, replay_equal, seconds, bugs)


def tag_rows(db: Path) -> list[tuple]:
    from store import Store

    with Store(db).reader() as con:
        return sorted(con.execute(
            "SELECT item_id, tag, source, model_id, set_id, cluster, curator FROM tags ORDER BY item_id").fetchall())


def replay(start: Path, trail: list[tuple]) -> list[tuple]:
    """Apply the audit trail's decisions one by one, in id order, to the starting store."""
    from store import Store

    store = Store(start, linger=1.0)
    for _, action, curator, payload in trail:
        p = json.loads(payload)
        if action == "accept":
            store.accept(DATASET, p["model"], p["cluster"], curator, name=p["tags"][0])
        elif action == "rename":
            store.rename(DATASET, p["old"], p["new"], curator)
        elif action == "set_item":
            store.set_item(DATASET, p["item_id"], p["tag"], curator)
        elif action == "undo":
            store.undo(DATASET, curator)
        elif action == "merge":
            store.merge(DATASET, p["sources"], p["into"], curator)
        elif action == "reject":
            store.reject(DATASET, p["model"], p["cluster"], curator)
    return tag_rows(start)


@dataclass
class Latency:
    decisions: int
    p50: float
    p95: float
    max: float
    train_epochs: int
    evaluations: int


def decisions_beside_training(db: Path, seconds: float, epochs: int = 200) -> Latency:
    """A training job (the job manager) and evaluations (a thread, as a Compare page) run while a
    curator makes a tag decision every 0.1 s; returns the decisions' latency."""
    import threading

    from mmae_core.config import EvalConfig, preset
    from studio.jobs import JobManager
    from studio.pipeline import evaluate_model
    from store import Store

    store = Store(db, linger=1.0)
    items = [str(i) for i in store.catalog(DATASET)["item_id"]]
    mgr = JobManager(store, throttle_s=1.0)
    job = mgr.start_training(DATASET, preset("paper", epochs=epochs, latent=16), "under-load")
    stop = threading.Event()
    evaluations = [0]

    def evaluate() -> None:
        while not stop.is_set():
            evaluate_model(store, DATASET, MODEL, EvalConfig(k_grid=(5, 10), n_init=1))
            evaluations[0] += 1

    ev = threading.Thread(target=evaluate, daemon=True)
    while mgr.get(job).progress.get("epoch", 0) < 1:  # wait until training really runs
        time.sleep(0.05)
    ev.start()
    lat: list[float] = []
    t_end = time.monotonic() + seconds
    j = 0
    while time.monotonic() < t_end:
        t0 = time.perf_counter()
        store.set_item(DATASET, items[j % len(items)], f"load-{j}", "latency")
        lat.append(time.perf_counter() - t0)
        j += 1
        time.sleep(0.1)
    done_epochs = int(mgr.get(job).progress.get("epoch", 0))
    mgr.cancel(job)
    stop.set()
    ev.join(300)
    mgr.wait(job, 300)
    a = np.asarray(lat)
    return Latency(len(a), float(np.median(a)), float(np.percentile(a, 95)), float(a.max()), done_epochs, evaluations[0])


# -- the adversarial pass (cases 22-31): each builder returns (Outcome, what its sentence must say) ------------
Expect = list[tuple[Outcome, str]]


def file_case(case: str, db: Path, files: list[Path], *args: str, env: dict[str, str] | None = None,
              preexec: Callable[[], None] | None = None) -> Outcome:
    """A CLI case on a store the checksum cannot read (foreign, damaged): 'unchanged' = every file's bytes."""
    before = {f: f.read_bytes() if f.exists() else None for f in files}
    proc = cli(db, *args, env=env, preexec=preexec)
    same = all((f.read_bytes() if f.exists() else None) == b for f, b in before.items())
    saw = cli_error(proc) if proc.returncode != 0 else "(succeeded) " + (proc.stderr.strip().splitlines() or [""])[-1]
    return Outcome(case, "cli", saw, proc.returncode, same, 0, True)


def symlink_escapes(template: Path, work: Path) -> Expect:
    """Case 22: links inside the data root to files outside it, imported from the Data page."""
    db = copy_store(template, work / "links.duckdb")
    root, outside = work / "data", work / "outside"
    outside.mkdir(parents=True)
    g = _good(20, 1)
    np.save(outside / "x.npy", g["text"])
    _write_npy_folder(root / "evil", {"train": {"image": g["image"]}})
    (root / "evil" / "train" / "text.npy").symlink_to(outside / "x.npy")
    (root / "csv" / "train").mkdir(parents=True)
    pd.DataFrame({"item_id": [f"i{i}" for i in range(5)], "f0": np.arange(5.0)}).to_csv(root / "csv" / "train" / "image.csv", index=False)
    secret = outside / "passwd"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n")
    (root / "csv" / "train" / "text.csv").symlink_to(secret)
    np.save(root / "train_image.npy", g["image"])
    (root / "train_text.npy").symlink_to(outside / "x.npy")
    cases = [("22 file symlinked out of the data root (.npy)", "evil"),
             ("22 CSV symlinked to a file outside (contents not echoed)", "csv"),
             ("22 '.' holding a top-level link out of the root", "."),
             ("22 that link typed directly", "train_text.npy")]
    outs = page_imports(cases, db, root)
    for o in outs:
        if "root:x" in o.saw or "nologin" in o.saw:
            o.note = "ECHOED THE FILE"
    return [(o, "outside the data root") for o in outs]


def special_outputs(template: Path, work: Path) -> Expect:
    """Cases 23, 24 and 31 (file modes): exports and checkpoints written over special files, links,
    folders and files of another mode."""
    import stat

    db = copy_store(template, work / "outputs.duckdb")
    exp = ["export", "--dataset", DATASET, "--format", "csv", "--out"]
    rows: Expect = []
    fifo = work / "pipe"
    os.mkfifo(fifo)
    o = cli_case("23 export --out a named pipe", db, *exp, str(fifo))
    o.note = "" if stat.S_ISFIFO(os.lstat(fifo).st_mode) else "PIPE REPLACED"
    rows.append((o, "special file"))
    dev = work / "full"
    try:
        os.mknod(dev, stat.S_IFCHR | 0o644, os.makedev(1, 7))
    except OSError:
        dev = None  # not root: the pipe above is the same check
    if dev is not None:
        o = cli_case("23 export --out a device node (/dev/full's)", db, *exp, str(dev))
        o.note = "" if stat.S_ISCHR(os.lstat(dev).st_mode) else "DEVICE REPLACED"
        rows.append((o, "special file"))
    target, link = work / "elsewhere.csv", work / "link.csv"
    target.write_text("kept\n")
    link.symlink_to(target)
    o = cli_case("23 export --out a symbolic link (not asked to follow)", db, *exp, str(link))
    o.note = "" if link.is_symlink() and target.read_text() == "kept\n" else "LINK OR TARGET CHANGED"
    rows.append((o, "symbolic link"))
    o = cli_case("23 export --out a symbolic link with --follow-symlinks", db, *exp, str(link), "--follow-symlinks")
    proc_ok = link.is_symlink() and target.read_text().startswith("item_id")
    o.note = "link kept, target written" if proc_ok else "LINK REPLACED OR TARGET NOT WRITTEN"
    rows.append((o, "wrote"))
    mask = os.umask(0)
    os.umask(mask)
    new = work / "fresh.csv"
    o = cli_case("31 export to a new file: mode as a plain open gives", db, *exp, str(new))
    o.saw += f" (mode {stat.S_IMODE(new.stat().st_mode):o}, umask {mask:03o})"
    o.note = "" if stat.S_IMODE(new.stat().st_mode) == 0o666 & ~mask else "WRONG MODE"
    rows.append((o, "mode"))
    old = work / "shared.csv"
    old.write_text("old\n")
    old.chmod(0o640)
    o = cli_case("31 export over a file of mode 640: mode kept", db, *exp, str(old))
    o.saw += f" (mode {stat.S_IMODE(old.stat().st_mode):o})"
    o.note = "" if stat.S_IMODE(old.stat().st_mode) == 0o640 else "MODE REPLACED"
    rows.append((o, "mode 640"))
    train = ["train", "--dataset", DATASET, "--epochs", "1", "--latent", "8", "--model-name", "m-out", "--out"]
    (work / "folder").mkdir()
    rows.append((cli_case("24 train --out a folder", db, *train, str(work / "folder")), "is a folder"))
    (work / "plain").write_text("x")
    rows.append((cli_case("24 train --out under a file (no parent folder)", db, *train, str(work / "plain" / "m.pt")), "is a file"))
    o = cli_case("24 train --out, rerun with a good path", db, *train, str(work / "new" / "m.pt"), expect_unchanged=False)
    o.note = "" if (work / "new" / "m.pt").stat().st_size > 0 else "NO CHECKPOINT"
    rows.append((o, "checkpoint written"))
    return rows


def _checkpoint_variant(good: bytes, path: Path, change: Callable[[dict], None]) -> Path:
    import torch

    payload = torch.load(io.BytesIO(good), weights_only=True)
    change(payload)
    buf = io.BytesIO()
    torch.save(payload, buf)
    path.write_bytes(buf.getvalue())
    return path


def hostile_checkpoints(template: Path, work: Path, limit_gb: float = 3.0) -> Expect:
    """Cases 25, 26 and 30 (std = 0): checkpoints that load but poison everything after, or declare
    a model far larger than their tensors. The CLI runs under an address-space limit of ``limit_gb``:
    building the declared model for real would need more."""
    import resource

    from store import Store

    db = copy_store(template, work / "ckpt.duckdb")
    good = Store(db).model_checkpoint(DATASET, MODEL)

    def nan_weight(p: dict) -> None:
        key = next(k for k, v in p["state_dict"].items() if v.is_floating_point() and v.ndim == 2)
        p["state_dict"][key][0, 0] = float("nan")

    def hidden(h: int) -> Callable[[dict], None]:
        def change(p: dict) -> None:
            p["config"]["hidden"] = [h, h]
        return change

    def zero_std(p: dict) -> None:
        m = next(iter(p["standardizer"]))
        p["standardizer"][m]["std"][0] = 0.0

    def limit() -> None:
        lim = int(limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))

    rows: Expect = []
    for label, name, change, expected in [
        ("25 checkpoint with a NaN weight", "nan.pt", nan_weight, "NaN"),
        ("26 checkpoint declaring hidden=[12000,12000]", "h12k.pt", hidden(12000), "hidden 12000x12000"),
        ("26 checkpoint declaring hidden=[60000,60000]", "h60k.pt", hidden(60000), "hidden 60000x60000"),
        ("30 checkpoint with a standard deviation of 0", "std0.pt", zero_std, "standard deviation"),
    ]:
        path = _checkpoint_variant(good, work / name, change)
        t0 = time.perf_counter()
        o = cli_case(label, db, "load-model", str(path), "--dataset", DATASET, "--model-name", "loaded", preexec=limit)
        o.note = f"{time.perf_counter() - t0:.1f} s, under a {limit_gb:g} GB address-space limit"
        rows.append((o, expected))
    return rows


def foreign_stores(template: Path, work: Path) -> Expect:
    """Cases 27, 30 (damaged WAL) and 31 (--db mistyped, read-only mount)."""
    import sqlite3

    import duckdb

    rows: Expect = []
    home = work / "home"
    home.mkdir()
    lite = work / "catalog.sqlite"
    con = sqlite3.connect(lite)
    con.execute("CREATE TABLE items (id TEXT)")
    con.commit()
    con.close()
    t0 = time.perf_counter()
    o = file_case("27 an SQLite file as the store", lite, [lite], "datasets", env=cli_env(lite, HOME=str(home)))
    o.note = f"{time.perf_counter() - t0:.1f} s; ~/.duckdb created: {(home / '.duckdb').exists()}"
    o.works_after = not (home / ".duckdb").exists()
    rows.append((o, "not a DuckDB database"))
    # a WAL cut and overwritten in its middle
    live = copy_store(template, work / "walsrc.duckdb")
    con = duckdb.connect(str(live))
    con.execute("CREATE TABLE scratch AS SELECT range AS x FROM range(5000)")
    damaged = work / "damaged.duckdb"
    shutil.copy2(live, damaged)
    wal = Path(str(live) + ".wal").read_bytes()
    con.close()
    dwal = Path(str(damaged) + ".wal")
    half = len(wal) // 2  # (damage at the very start makes DuckDB skip the log as empty; in the middle it is caught)
    dwal.write_bytes(wal[:half] + b"\x00garbage" * 50 + wal[half + 400:])
    rows.append((file_case("30 damaged write-ahead log", damaged, [damaged, dwal], "datasets"), "write-ahead log"))
    db = copy_store(template, work / "s.duckdb")
    for cmd in (["datasets"], ["models"], ["export", "--dataset", DATASET, "--format", "csv", "--out", str(work / "x.csv")]):
        typo = work / "typo" / "studio.duckdb"
        o = file_case(f"31 mistyped --db for {cmd[0]}", db, [], *cmd, "--db", str(typo))
        o.note = "" if not typo.parent.exists() else "FOLDER CREATED"
        rows.append((o, "no store at"))
    # a store on a read-only mount (a private mount namespace: the bind mount vanishes with the process)
    ro = work / "ro"
    ro.mkdir()
    copy_store(template, ro / "studio.duckdb")
    script = (f"mount --bind -o ro {ro} {ro} && exec {sys.executable} -m mmae_core datasets --format json "
              f"--db {ro / 'studio.duckdb'}")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], env=cli_env(ro / "studio.duckdb"),
                          capture_output=True, text=True, timeout=120)
    if "mount" in proc.stderr and proc.returncode != 0 and "error:" not in proc.stderr:
        saw = "(skipped: no mount namespace here)"
    elif proc.returncode == 0:
        saw = f"(succeeded) listed {[d['name'] for d in json.loads(proc.stdout)]}"
    else:
        saw = cli_error(proc)
    rows.append((Outcome("31 store on a read-only mount (datasets)", "cli", saw, proc.returncode, None, 0, True), "succeeded"))
    return rows


def hostile_data(template: Path, work: Path) -> Expect:
    """Cases 28, 29, 30 (.npy header, binary ids) and 31 (names, ids, JSON inf, --replace)."""
    db = copy_store(template, work / "data.duckdb")
    rows: Expect = []
    g = _good(20, 1)
    (work / "npz").mkdir()
    np.savez_compressed(work / "npz" / "train.npz", image=g["image"], text=np.zeros((400_000, 10), np.float32))
    rows.append((cli_case("28 .npz expanding ~1000x", db, "import", str(work / "npz" / "train.npz"), "--name", "incoming"), "zip bomb"))
    (work / "big_header" / "train").mkdir(parents=True)
    with open(work / "big_header" / "train" / "image.npy", "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (50_000_000, 6)})
        fh.write(g["image"].tobytes())
    np.save(work / "big_header" / "train" / "text.npy", g["text"])
    rows.append((cli_case("30 .npy header overstating its size", db, "import", str(work / "big_header"), "--name", "incoming"), "truncated"))
    _write_npy_folder(work / "bin_ids", {"train": g})
    np.save(work / "bin_ids" / "train" / "ids.npy", np.array([bytes([0xFF, i]) for i in range(20)], dtype="S2"))
    rows.append((cli_case("30 distinct binary (non-UTF-8) ids", db, "import", str(work / "bin_ids"), "--name", "incoming"), "not UTF-8"))
    (work / "ctl_ids" / "train").mkdir(parents=True)
    ids = [f"i{i}" for i in range(10)]
    ids[3] = "i3\x1b[31mred"
    pd.DataFrame({"item_id": ids, "f0": np.arange(10.0)}).to_parquet(work / "ctl_ids" / "train" / "image.parquet")
    pd.DataFrame({"item_id": ids, "t0": np.arange(10.0)}).to_parquet(work / "ctl_ids" / "train" / "text.parquet")
    o = cli_case("31 item id with a terminal escape", db, "import", str(work / "ctl_ids"), "--name", "incoming")
    o.note = "" if "\x1b" not in o.saw else "ECHOED RAW"
    rows.append((o, "control character"))
    good_folder(work, "good")
    rows.append((cli_case("31 dataset name containing '@replaced-'", db, "import", str(work / "good"), "--name", "x@replaced-1"),
                 "@replaced-"))
    o = cli_case("31 import --replace says where the backup went", db, "import", str(work / "good"), "--name", DATASET,
                 "--replace", expect_unchanged=False)
    listed = json.loads(cli(db, "datasets", "--backups", "--format", "json").stdout)
    backup = [d["name"] for d in listed if d["name"].startswith(DATASET + "@replaced-")]
    o.note = f"datasets --backups lists {backup}" if len(backup) == 1 and backup[0] in o.saw else "BACKUP NOT NAMED OR LISTED"
    rows.append((o, "kept as the dataset"))
    # exports: spaced formulas and infinities
    spaced = [" =1+1", "  @SUM(1)", "\u00a0=1+1", "\u3000+1", "\ufeff-1", "\t\u00a0@x", "\u00a0plain", "a =b", "1 + 1"]
    inert = [True] * 6 + [False] * 3
    folder = work / "spaced"
    n = len(spaced)
    _write_npy_folder(folder, {"train": _good(n, 1)})
    pd.DataFrame({"item_id": [f"i{i}" for i in range(n)], "title": spaced,
                  "score": [np.inf, -np.inf] + [1.0] * (n - 2)}).to_parquet(folder / "train" / "items.parquet")
    cli(db, "import", str(folder), "--name", "spaced")
    out = cli_case("29 formulas after leading blanks (CSV export)", db, "export", "--dataset", "spaced", "--format", "csv",
                   "--out", str(work / "spaced.csv"))
    shown = pd.read_csv(work / "spaced.csv", dtype=str, keep_default_na=False)["title"].tolist()
    ok = [s.startswith("'") == want and s.removeprefix("'") == orig for s, orig, want in zip(shown, spaced, inert)]
    out.saw = f"(succeeded) inert where a spreadsheet sees a formula: {sum(ok)}/{n} cells right"
    out.note = "" if all(ok) else "MISSED: " + repr([orig for orig, k in zip(spaced, ok) if not k])
    rows.append((out, f"{n}/{n}"))
    out = cli_case("31 JSON export of +-inf", db, "export", "--dataset", "spaced", "--format", "json",
                   "--out", str(work / "spaced.json"))
    rows.append((out, "written as null"))
    return rows


def adversarial(template: Path, work: Path) -> Expect:
    rows: Expect = []
    for part in (symlink_escapes, special_outputs, hostile_checkpoints, foreign_stores, hostile_data):
        sub = work / part.__name__
        sub.mkdir(parents=True)
        rows += part(template, sub)
    return rows


# -- shared with the benchmark: checkpoints, servers and cells the fault cases use --------------
class CodePayload:
    """Unpickling this runs ``touch marker`` (the classic pickle attack)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def bad_checkpoints(db: Path, folder: Path, marker: Path) -> dict[str, tuple[str, Path, str]]:
    """{key: (case label, file, what the sentence must name)}."""
    import pickle

    import torch

    from mmae_core.config import preset
    from mmae_core.model.checkpoint import save_checkpoint
    from mmae_core.model.train import train
    from store import Store
    from testkit.data import make_featureset

    good = Store(db).model_checkpoint(DATASET, MODEL)
    out = {}
    other = train(make_featureset("toy", n_train=40), preset("paper", epochs=1, latent=16))
    (folder / "other-dataset.pt").write_bytes(save_checkpoint(other))
    out["dataset"] = ("9 checkpoint of another dataset", folder / "other-dataset.pt", "dataset")
    payload = torch.load(io.BytesIO(good), weights_only=True)
    payload["config"]["latent"] = 32  # the weights were trained with 16
    buf = io.BytesIO()
    torch.save(payload, buf)
    (folder / "other-arch.pt").write_bytes(buf.getvalue())
    out["arch"] = ("9 checkpoint of another architecture", folder / "other-arch.pt", "latent 32")
    payload = torch.load(io.BytesIO(good), weights_only=True)
    payload["history"] = [CodePayload(marker)]
    buf = io.BytesIO()
    torch.save(payload, buf)
    (folder / "payload.pt").write_bytes(buf.getvalue())
    out["payload"] = ("10 checkpoint carrying a code pickle", folder / "payload.pt", "code")
    (folder / "bare.pt").write_bytes(pickle.dumps(CodePayload(marker)))
    out["bare"] = ("10 bare pickle as a checkpoint", folder / "bare.pt", "checkpoint")
    return out


def checksum_without_jobs(db: Path) -> str:
    from store import Store

    """Every table but ``jobs``: a failed job leaves its own record, and nothing else."""
    import hashlib

    from store.schema import table_names

    h = hashlib.sha256()
    with Store(db).reader() as con:
        for t in table_names(con):
            if t != "jobs":
                n, s = con.execute(f'SELECT count(*), coalesce(sum(hash(_r)::HUGEINT), 0) FROM "{t}" AS _r').fetchall()[0]
                h.update(f"{t}:{n}:{s};".encode())
    return h.hexdigest()


OOM_SERVER = textwrap.dedent("""
    import json, resource, sys, threading, time
    from store import Store
    from mmae_core.config import preset
    from studio.jobs import JobManager
    store = Store(sys.argv[1])
    # no background UMAP after training: its daemon thread would still be in native code when this
    # script exits, and the interpreter's teardown of such a thread aborts the process
    JobManager.default_maps = False
    mgr = JobManager(store, throttle_s=0.2)
    import mmae_core.model.train  # as the dashboard does after its first page (torch loaded before the limit)
    vm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize:"))
    limit = vm + int(float(sys.argv[2]) * 2**30)  # headroom for the small job, threads and the other session
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    reads, stop = [], threading.Event()

    def other_session():  # another curator's page keeps reading the catalog meanwhile
        while not stop.is_set():
            t = time.perf_counter()
            store.catalog("demo")
            reads.append(time.perf_counter() - t)
            time.sleep(0.05)

    th = threading.Thread(target=other_session)
    th.start()
    huge = mgr.wait(mgr.start_training("demo", preset("paper", epochs=1, latent=20_000_000), "huge"), 600)
    after = mgr.wait(mgr.start_training("demo", preset("paper", epochs=1, latent=16), "after-oom"), 600)
    stop.set()
    th.join()
    print(json.dumps({"huge": [huge.status, huge.message], "after": [after.status, after.message],
                      "reads": len(reads), "max_read_s": max(reads)}))
""")


def run_oom_server(db: Path, limit_gb: float = 2.0) -> dict:
    """A process running the job manager as the server does, with ``limit_gb`` of address space left
    (a model of latent 20,000,000 needs 10 GB for one layer, so it cannot fit)."""
    proc = subprocess.run([sys.executable, "-c", OOM_SERVER, str(db), str(limit_gb)], env=cli_env(db),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def address_limit(gb: float):
    import resource

    def apply() -> None:
        limit = int(gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


FORMULAS = ["=1+2", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tTAB", "\rCR", "\nLF", "plain", "a=b"]


CRASH_SERVER = textwrap.dedent("""
    import sys, time
    from store import Store
    from mmae_core.config import preset
    from studio.jobs import JobManager
    store = Store(sys.argv[1])
    mgr = JobManager(store, throttle_s=0.1)
    job = mgr.start_training("demo", preset("paper", epochs=500, latent=16), "endless")
    while mgr.get(job).progress.get("epoch", 0) < 2:
        time.sleep(0.1)
    print(job, flush=True)
    time.sleep(600)
""")
