"""The features folder beside the store: one ``.npy`` file per split and modality, per dataset.

Why ``.npy`` files and not DuckDB blocks or Parquet (measured by ``benchmarks/feature_storage.py``,
figures in docs/scale.md): a training batch is a random gather of rows, and a ``.npy`` file is the
one form where row ``i`` is at a computed offset, so ``batches.NpyRows`` reads a batch through a
short-lived memory map with no decoding; DuckDB blocks and Parquet row groups must decode a whole
block to use one row of it.

Layout: ``<store file>.features/<folder>/<split>/<modality>.npy``; the dataset's row in DuckDB names
``<folder>`` (in ``datasets.attrs``), written in the same transaction that inserts the dataset.
Atomic like a transaction: the files are written into ``.tmp-<pid>-<random>`` first, fsynced, and
renamed to their final name inside the store transaction just before COMMIT. So:

* a failure or a full disk while writing leaves only the temp folder, which is removed at once;
* ``kill -9`` before the rename leaves a temp folder of a dead process; between the rename and the
  COMMIT, a folder that no dataset names. Both are garbage: ``collect`` removes them in the next
  transaction that adds or deletes a dataset (under the store's write lock, so never a folder that
  another process is still writing: a temp folder of a live process is kept);
* a deleted dataset's folder is removed after its COMMIT (a kill in between leaves garbage again).
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from mmae_core.data.lazy import NpyAppender, row_windows
from mmae_core.errors import StoreError

from .db import pid_alive

SUFFIX = ".features"
TMP = ".tmp-"
WRITE_BYTES = 32 * 2**20  # rows appended per write call (bounds memory; large writes keep the disk busy)
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def root(store_path: Path) -> Path:
    return Path(str(store_path) + SUFFIX)


def disk_full(store_path: Path, err: OSError) -> StoreError:
    return StoreError(
        f"The features of this import could not be written beside the store {store_path} because the disk is full "
        "(or a file-size limit was reached), so nothing was imported and the store is as it was; free some disk space and import again."
    )


def check_space(store_path: Path, needed: int) -> None:
    """Refuse an import whose features cannot fit on the store's disk, before anything is written.
    ``needed`` is the feature bytes; a 5% margin covers headers, the items rows and the WAL."""
    folder = root(store_path)
    probe = folder if folder.exists() else store_path.parent
    free = shutil.disk_usage(probe).free
    want = int(needed * 1.05) + 64 * 2**20
    if want > free:
        raise StoreError(
            f"This import needs about {want / 2**30:.2f} GiB of disk beside the store {store_path} but only "
            f"{free / 2**30:.2f} GiB is free, so nothing was imported; free some space or put the store on a larger disk."
        )


@contextlib.contextmanager
def staging(store_path: Path) -> Iterator[Path]:
    """A folder beside the store where a streamed import converts its Parquet and zip members
    (``mmae_core.data.stream``) before they are stored; removed on exit, whatever happened.

    It is a temp folder like ``write_temp``'s (``.tmp-<pid>-...``), on the features folder's disk,
    so ``write_temp`` links its files instead of copying them, and a ``kill -9`` leaves garbage that
    ``collect`` removes. A full disk while converting becomes the same one sentence as while storing."""
    base = root(store_path)
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f"{TMP}{os.getpid()}-{secrets.token_hex(6)}"
    tmp.mkdir()
    try:
        yield tmp
    except OSError as err:
        if err.errno in _FULL:
            raise disk_full(store_path, err) from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


PENDING = "pending"


@contextlib.contextmanager
def pending_marker(store_path: Path, token: int) -> Iterator[None]:
    """While latents are written ahead of their model under ``token`` (``store.models``), a temp
    folder ``.tmp-<pid>-pending<token>`` says whose they are, so another process's registration
    (``live_pending``) leaves them alone while this process lives; removed on exit."""
    base = root(store_path)
    base.mkdir(parents=True, exist_ok=True)
    mark = base / f"{TMP}{os.getpid()}-{PENDING}{-token}"
    mark.mkdir()
    try:
        yield
    finally:
        shutil.rmtree(mark, ignore_errors=True)


def live_pending(store_path: Path) -> set[int]:
    """The tokens of latents whose writer is still alive (see ``pending_marker``)."""
    base = root(store_path)
    live: set[int] = set()
    for entry in base.glob(f"{TMP}*-{PENDING}*") if base.is_dir() else []:
        pid, _, rest = entry.name[len(TMP):].partition("-")
        if pid.isdigit() and rest[len(PENDING):].isdigit() and pid_alive(int(pid)):
            live.add(-int(rest[len(PENDING):]))
    return live


def _link(src: Path, dst: Path) -> bool:
    """Hard-link a staged file into the temp folder (same disk, same bytes: no second copy)."""
    try:
        os.link(src, dst)
    except OSError:
        return False
    return True


def copy_bytes(x: object) -> int:
    """The bytes ``write_temp`` will copy for ``x`` (a staged file is linked, so 0)."""
    return 0 if getattr(x, "staged", False) else len(x) * int(x.shape[1]) * 4  # type: ignore[arg-type, attr-defined]


def _append_npy(path: Path, x: object, dim: int) -> None:
    """Write ``x`` (an array or ``NpyWindows``) as a float32 ``.npy`` through ordinary appends, never
    a writable map of the whole file (which would count the file in resident memory)."""
    rows = max(1, WRITE_BYTES // (4 * max(1, dim)))
    with NpyAppender(path, len(x), dim) as out:
        for _, w in row_windows(x, rows):
            out.append(w)


def write_temp(store_path: Path, splits: Iterable[tuple[str, dict[str, object]]], on_written=None) -> Path:
    """Write every split's features into a new temp folder; returns it. On any failure the folder
    is removed and a full disk becomes one sentence. ``on_written(split, modality, rows)`` is called
    after each file (progress)."""
    base = root(store_path)
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f"{TMP}{os.getpid()}-{secrets.token_hex(6)}"
    tmp.mkdir()
    try:
        for split, feats in splits:
            (tmp / split).mkdir()
            for m, x in feats.items():
                target = tmp / split / f"{m}.npy"
                if not (getattr(x, "staged", False) and _link(x.path, target)):
                    _append_npy(target, x, int(x.shape[1]))
                if on_written is not None:
                    on_written(split, m, len(x))
        _fsync_dir(tmp)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError) and err.errno in _FULL:
            raise disk_full(store_path, err) from None
        raise
    return tmp


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_name(tmp: Path) -> str:
    """The final folder name for a temp folder (renamed by ``publish``)."""
    return tmp.name[len(TMP):].split("-", 1)[1]


def publish(tmp: Path) -> str:
    """Rename the temp folder to its final name (inside the transaction, just before COMMIT)."""
    name = commit_name(tmp)
    os.replace(tmp, tmp.parent / name)
    _fsync_dir(tmp.parent)
    return name


def unpublish(store_path: Path, name: str) -> None:
    """Undo ``publish`` after a failed COMMIT: the folder is removed (its temp form is gone)."""
    shutil.rmtree(root(store_path) / name, ignore_errors=True)


def folder(store_path: Path, name: str) -> Path:
    return root(store_path) / name


def remove(store_path: Path, name: str) -> None:
    shutil.rmtree(root(store_path) / name, ignore_errors=True)


def collect(store_path: Path, referenced: set[str]) -> list[str]:
    """Remove the folders no dataset names and the temp folders of dead processes; returns their names.
    Call it inside a write transaction (see the module docstring)."""
    base = root(store_path)
    if not base.is_dir():
        return []
    gone = []
    for entry in base.iterdir():
        name = entry.name
        if name.startswith(TMP):
            try:
                pid = int(name[len(TMP):].split("-", 1)[0])
            except ValueError:
                pid = -1
            if pid > 0 and pid_alive(pid):
                continue
        elif name in referenced:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        gone.append(name)
    return gone


def copy_store(src: Path, dst: Path) -> Path:
    """Copy a closed store: its DuckDB file, its WAL and its features folder (the three are one store;
    the file alone lacks the features of every dataset imported into the folder)."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)
    wal, dst_wal = Path(str(src) + ".wal"), Path(str(dst) + ".wal")
    if wal.exists():
        shutil.copy2(wal, dst_wal)
    elif dst_wal.exists():
        dst_wal.unlink()
    if root(dst).exists():
        shutil.rmtree(root(dst))
    if root(src).is_dir():
        shutil.copytree(root(src), root(dst), ignore=shutil.ignore_patterns(f"{TMP}*"))
    return dst
