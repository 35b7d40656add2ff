"""Connections to the DuckDB file: short-lived, shared within a process, patient with other processes.

DuckDB lets one *process* open a file for writing and that lock also shuts out readers in other
processes. A dashboard and a CLI batch job must share the store, so nothing here keeps the file open
between units of work: each unit opens a cursor, and the file is released when the last cursor of this
process closes (optionally after a short ``linger``, which saves the ~40 ms of reopening on a busy page).

Within one process all units share one DuckDB instance per file (a cursor per unit, so per thread).
Writes are serialised by a per-file lock so our own threads never hit DuckDB's optimistic-concurrency
conflicts; a conflict that still happens (another ``Store`` on a path spelled differently, a write
outside this module) is retried a few times. A lock held by another process is waited for up to
``lock_timeout`` seconds, then reported in one sentence naming that process.
"""
from __future__ import annotations

import atexit
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import duckdb

from mmae_core.errors import StoreError

T = TypeVar("T")
OnWait = Callable[[str], None]

_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<exe>.*?) \(PID (?P<pid>\d+)\)")
_CONFLICT_RETRIES = 6


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__).rstrip(".")


_DISK_FULL = re.compile(r"No space left|File too large|Disk quota|Could not write|could not write|Could not truncate", re.I)


def write_failure(path: Path, err: BaseException) -> StoreError | None:
    """One sentence for a write the disk refused (full, quota, file-size limit), else None.

    DuckDB reports these as IO or transaction errors that name the WAL file; the user needs to know
    that the disk is the problem and that the transaction was rolled back, not DuckDB's wording.
    """
    msg = str(err)
    if not _DISK_FULL.search(msg):
        return None
    reason = "the disk is full" if re.search(r"No space left|Disk quota", msg, re.I) else "the disk or a file-size limit refused it"
    return StoreError(
        f"The store {path} could not be written because {reason}, so nothing of this action was saved; "
        "free some disk space and try again."
    )


def lock_holder(message: str) -> str:
    """'PID 123, /usr/bin/python3' from DuckDB's lock error, or a vaguer phrase when it has no PID."""
    m = _LOCK_HOLDER.search(message)
    if not m:
        return "another process"
    return f"another process (PID {m.group('pid')}, {m.group('exe')})"


# Every connection: never fetch or load an extension on DuckDB's own initiative. A foreign file (an
# SQLite database given as the store) otherwise makes DuckDB download and load native code, 5.7 s
# measured, and create ~/.duckdb/extensions; the store needs no extension at all.
CONNECT_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
DUCKDB_MAGIC = b"DUCK"  # bytes 8-11 of every DuckDB database file


def check_is_duckdb(path: Path) -> None:
    """Refuse an existing, non-empty file that is not a DuckDB database before DuckDB looks at it
    (DuckDB would try to attach it through an extension when it recognises another format)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except FileNotFoundError:
        return
    except OSError as err:
        raise StoreError(f"The store {path} cannot be read ({err.strerror}); check the path and its permissions.") from None
    if head and head[8:12] != DUCKDB_MAGIC:
        kind = " (it is an SQLite database)" if head.startswith(b"SQLite format") else ""
        raise StoreError(f"{path} is not a DuckDB database{kind}; choose another store path or move that file away.")


def _open_error(path: Path, err: duckdb.Error) -> StoreError:
    msg = str(err)
    if "replaying WAL" in msg or "Corrupt WAL" in msg:
        wal = path.with_name(path.name + ".wal")
        return StoreError(
            f"The store {path} cannot be opened because its write-ahead log {wal} is damaged; keep a copy of both files, "
            f"then move {wal.name} aside to open the store as of its last checkpoint (changes made since are lost) "
            "or restore the store from a backup."
        )
    if "not a valid DuckDB database file" in msg:
        return StoreError(f"{path} is not a DuckDB database; choose another store path or move that file away.")
    if "version number" in msg.lower() or "newer version" in msg.lower():
        return StoreError(
            f"{path} was written by a newer DuckDB than the installed {duckdb.__version__}; upgrade the duckdb package to open it."
        )
    return StoreError(f"The store {path} cannot be opened ({_first_line(err)}); check the path and its permissions.")


# -- taking turns between processes ------------------------------------------------------------
# DuckDB has no queue for its file lock: a busy dashboard that reopens the file for every decision
# (and keeps it a second longer) would win every race against a CLI job polling for it. So a process
# that waits says so in ``<store>.want`` (its PID); a holder seeing it releases the file as soon as
# its current unit of work ends, and does not reopen it until the waiter has had its turn.
STALE_WANT_S = 60.0
YIELD_MAX_S = 5.0


def want_path(path: Path) -> Path:
    return path.with_name(path.name + ".want")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one that exists but is not ours counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def other_waiter(path: Path) -> int | None:
    """The PID of another live process waiting for ``path``, if any (stale notes are ignored)."""
    note = want_path(path)
    try:
        text = note.read_text().strip()
        age = time.time() - note.stat().st_mtime
    except (OSError, ValueError):
        return None
    try:
        pid = int(text or 0)
    except ValueError:
        return None
    if pid <= 0 or pid == os.getpid() or age > STALE_WANT_S or not pid_alive(pid):
        return None
    return pid


def _say_we_wait(path: Path) -> None:
    try:
        want_path(path).write_text(str(os.getpid()))
    except OSError:
        pass  # a read-only folder: we still wait, only without asking for a turn


def _done_waiting(path: Path) -> None:
    note = want_path(path)
    try:
        if note.read_text().strip() == str(os.getpid()):
            note.unlink()
    except OSError:
        pass


def open_file(path: Path, lock_timeout: float, on_wait: OnWait | None, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open ``path`` (read-write unless ``read_only``), waiting up to ``lock_timeout`` s while another
    process holds it."""
    check_is_duckdb(path)
    deadline = time.monotonic() + max(0.0, lock_timeout)
    # another process asked for a turn: let it have the file first (bounded, it may have died)
    yield_until = min(deadline, time.monotonic() + YIELD_MAX_S)
    while other_waiter(path) is not None and time.monotonic() < yield_until:
        time.sleep(0.05)
    delay = 0.05
    told = False
    try:
        while True:
            try:
                return duckdb.connect(str(path), read_only=read_only, config=CONNECT_CONFIG)
            except duckdb.Error as err:
                msg = str(err)
                if "Could not set lock" not in msg and "Conflicting lock" not in msg:
                    raise _open_error(path, err) from None
                holder = lock_holder(msg)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StoreError(
                        f"The store {path} is locked by {holder}; wait for that program to finish or stop it, then try again."
                    ) from None
                if not told:
                    told = True
                    _say_we_wait(path)
                    if on_wait is not None:
                        on_wait(f"The store {path} is in use by {holder}; waiting up to {lock_timeout:g} s for it to be released.")
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 0.25)
    finally:
        if told:
            _done_waiting(path)


LINGER_POLL_S = 0.05


class _Linger(threading.Timer):
    """Closes an idle file after ``interval`` s, or as soon as another process asks for it.

    Why not a plain ``Timer``: a waiting process writes ``<store>.want`` while the file lingers, and
    would otherwise wait out the whole linger (a second on the dashboard) before its turn.
    """

    def __init__(self, interval: float, shared: "_SharedFile") -> None:
        super().__init__(interval, shared._close_if_idle)
        self.path = shared.path

    def run(self) -> None:
        end = time.monotonic() + self.interval
        while not self.finished.wait(min(LINGER_POLL_S, max(0.0, end - time.monotonic()))):
            if time.monotonic() >= end or other_waiter(self.path) is not None:
                self.function()
                break
        self.finished.set()


class _SharedFile:
    """Per-file state shared by every ``Database`` of this process that points at the same path."""

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        self.mutex = threading.Lock()  # guards root/users/timer
        self.write_lock = threading.RLock()  # one write transaction at a time in this process
        self.root: duckdb.DuckDBPyConnection | None = None
        self.users = 0
        self.timer: threading.Timer | None = None  # a _Linger while the idle file is kept open
        self.local = threading.local()  # the thread's open unit of work, so nested calls join it

    def acquire(self, lock_timeout: float, on_wait: OnWait | None) -> duckdb.DuckDBPyConnection:
        with self.mutex:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            if self.root is None:
                self.root = open_file(self.path, lock_timeout, on_wait, self.read_only)
            self.users += 1
            try:
                return self.root.cursor()
            except BaseException:
                self.users -= 1
                self._close_if_idle_locked()
                raise

    def release(self, cur: duckdb.DuckDBPyConnection, linger: float) -> None:
        try:
            cur.close()
        finally:
            with self.mutex:
                self.users -= 1
                if self.users == 0:
                    if linger > 0 and other_waiter(self.path) is None:
                        self.timer = _Linger(linger, self)
                        self.timer.daemon = True
                        self.timer.start()
                    else:
                        self._close_if_idle_locked()

    def _close_if_idle(self) -> None:
        with self.mutex:
            self.timer = None
            self._close_if_idle_locked()

    def _close_if_idle_locked(self) -> None:
        if self.users == 0 and self.root is not None:
            root, self.root = self.root, None
            root.close()


_FILES: dict[str, _SharedFile] = {}
_FILES_LOCK = threading.Lock()


def _shared(path: Path, read_only: bool = False) -> _SharedFile:
    key = f"{path}|{'ro' if read_only else 'rw'}"
    with _FILES_LOCK:
        sf = _FILES.get(key)
        if sf is None:
            sf = _FILES[key] = _SharedFile(path, read_only)
        return sf


@atexit.register
def _close_all() -> None:
    for sf in list(_FILES.values()):
        with sf.mutex:
            if sf.timer is not None:
                sf.timer.cancel()
                sf.timer = None
            if sf.root is not None and sf.users == 0:
                sf.root.close()
                sf.root = None


class Database:
    """Units of work on one DuckDB file: ``reader()`` for reads, ``transaction()``/``write()`` for writes."""

    def __init__(self, path: Path, lock_timeout: float = 10.0, on_wait: OnWait | None = None, linger: float = 0.0,
                 read_only: bool = False) -> None:
        self.path = path
        self.lock_timeout = float(lock_timeout)
        self.on_wait = on_wait
        self.linger = float(linger)
        self.read_only = read_only
        self._file = _shared(path, read_only)

    # -- the thread's current unit of work -------------------------------------------------
    def _current(self) -> tuple[duckdb.DuckDBPyConnection, str] | None:
        return getattr(self._file.local, "unit", None)

    def _set_current(self, unit: tuple[duckdb.DuckDBPyConnection, str] | None) -> None:
        self._file.local.unit = unit

    @contextmanager
    def session(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor with the write lock held and no transaction open (for CHECKPOINT and migrations)."""
        if self._current() is not None:
            raise RuntimeError("a store session cannot be opened inside another unit of work")
        cur = self._file.acquire(self.lock_timeout, self.on_wait)
        try:
            with self._file.write_lock:
                yield cur
        finally:
            self._file.release(cur, self.linger)

    @contextmanager
    def reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A consistent snapshot for reads; inside a transaction of this thread, that transaction."""
        current = self._current()
        if current is not None:
            yield current[0]
            return
        cur = self._file.acquire(self.lock_timeout, self.on_wait)
        try:
            cur.execute("BEGIN TRANSACTION")
            self._set_current((cur, "r"))
            try:
                yield cur
            finally:
                self._set_current(None)
                try:
                    cur.execute("ROLLBACK")
                except duckdb.Error:
                    pass
        finally:
            self._file.release(cur, self.linger)

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """BEGIN … COMMIT, or ROLLBACK on any exception; nested calls in the same thread join the outer one."""
        current = self._current()
        if current is not None:
            if current[1] != "w":
                raise RuntimeError("cannot write inside store.reader(); use store.transaction() instead")
            yield current[0]
            return
        # The cursor is taken before the write lock: writers queued behind another writer keep this
        # process's DuckDB instance open, so a burst of decisions does not reopen the file each time.
        cur = self._file.acquire(self.lock_timeout, self.on_wait)
        try:
            with self._file.write_lock:
                cur.execute("BEGIN TRANSACTION")
                self._set_current((cur, "w"))
                try:
                    yield cur
                except BaseException:
                    self._rollback(cur)
                    raise
                try:
                    cur.execute("COMMIT")
                except duckdb.Error:
                    self._rollback(cur)
                    raise
        except duckdb.ConstraintException as err:
            raise StoreError(
                f"The store refused the change because it breaks a rule ({_first_line(err)}); nothing was saved."
            ) from err
        except (duckdb.Error, OSError) as err:
            full = write_failure(self.path, err)
            if full is None:
                raise
            raise full from err
        finally:
            self._set_current(None)
            self._file.release(cur, self.linger)

    @staticmethod
    def _rollback(cur: duckdb.DuckDBPyConnection) -> None:
        try:
            cur.execute("ROLLBACK")
        except duckdb.Error:
            pass  # DuckDB already aborted the transaction

    def write(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run ``fn`` as one transaction, retrying it whole on a DuckDB write-write conflict."""
        current = self._current()
        if current is not None:
            with self.transaction() as con:
                return fn(con)
        for attempt in range(_CONFLICT_RETRIES):
            try:
                with self.transaction() as con:
                    return fn(con)
            except duckdb.TransactionException as err:
                if "conflict" not in str(err).lower():
                    raise
                if attempt == _CONFLICT_RETRIES - 1:
                    raise StoreError(
                        "The store stayed busy with conflicting changes after several retries; try the action again."
                    ) from err
                time.sleep(0.02 * (attempt + 1))
        raise AssertionError("unreachable")

    def read(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        with self.reader() as con:
            return fn(con)
