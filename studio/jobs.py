"""Background jobs for the dashboard: training that outlives the page that started it.

A Streamlit script run lasts as long as one click; training lasts minutes. So the work runs in a thread
owned by a process-wide ``JobManager`` (one per store file, see ``manager_for``), and the job's state is
written to the store's ``jobs`` table, throttled to about once a second. Any session, tab or refresh
finds the job there; the process that runs it also keeps a fresher copy in memory.

Nothing here touches Streamlit: the worker must never call ``st.*`` (it has no script context), and the
same manager serves tests and scripts. Jobs run one at a time (two trainings on the same cores only
make both slower); later ones wait as 'queued' and can be cancelled before they start.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from mmae_core.config import TrainConfig
from mmae_core.errors import CancelledError, StudioError, resource_error

ACTIVE = ("queued", "running")
FINAL = ("done", "failed", "cancelled", "interrupted")
HEARTBEAT_S = 5.0  # a running job touches its row at least this often, even inside a long epoch
HISTORY_CAP = 1000  # epochs of loss history kept in a job's progress
REAP_EVERY_S = 30.0  # how often listing jobs also looks for runners that died since
JOB_NICENESS = 10  # how much lower than the server a job's threads run (Linux; see lower_thread_priority)


def lower_thread_priority(niceness: int = JOB_NICENESS) -> bool:
    """Run the calling thread, and the threads it starts later, at lower CPU priority.

    Why: the dashboard serves curators from the same process and cores as a training job. On a
    2-core machine a training step keeps both cores busy, and a tag decision beside it waited for a
    core (the reliability benchmark saw 0.54 s at worst, target 0.5 s). On Linux the nice value is
    per thread and inherited by threads created afterwards (the trainer's modality-group pool), so
    the job yields to interactive work without slowing an otherwise idle machine. Elsewhere, or if
    refused, nothing changes and False is returned.
    """
    if not hasattr(os, "setpriority") or not hasattr(threading, "get_native_id") or os.uname().sysname != "Linux":
        return False
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + niceness))
    except OSError:
        return False
    return True

log = logging.getLogger("mmae_studio.jobs")


@dataclass
class JobView:
    """A snapshot of one job as a page shows it (safe to read from any thread)."""

    id: int
    dataset: str
    kind: str
    status: str
    config: dict
    progress: dict = field(default_factory=dict)
    message: str | None = None
    model: str | None = None
    pid: int | None = None
    host: str | None = None
    created_at: Any = None
    updated_at: Any = None
    finished_at: Any = None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def history(self) -> list[dict]:
        """Per epoch: {'epoch': n, 'losses': {modality: mse, 'total': ...}}."""
        return list(self.progress.get("history", []))

    @classmethod
    def from_record(cls, rec: dict) -> "JobView":
        return cls(**{k: rec.get(k) for k in cls.__dataclass_fields__})  # type: ignore[attr-defined]


@dataclass
class _Live:
    """In-memory state of a job this process runs; ``lock`` guards ``view``."""

    view: JobView
    cancel: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    thread: threading.Thread | None = None
    last_write: float = 0.0

    def snapshot(self) -> JobView:
        with self.lock:
            return copy.deepcopy(self.view)


class JobError(StudioError):
    """A job cannot be started as asked (the same job is already queued or running)."""


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _reason(err: BaseException) -> str:
    """One sentence for the job's message: ours as written, anything else named as an internal error."""
    if isinstance(err, StudioError):
        return str(err)
    resource = resource_error(err)
    if resource is not None:
        return str(resource)
    text = str(err).strip().splitlines()
    detail = f": {text[0]}" if text else ""
    return f"Internal error ({type(err).__name__}{detail}); the job stopped, please report it."


class JobManager:
    """Runs jobs in threads, one at a time, and mirrors their state into ``store``'s jobs table.

    ``throttle_s``: the least time between two progress writes of a job (status changes are written at
    once). ``clock`` exists for tests. Creating a manager marks this host's jobs whose process is gone
    (or this process's jobs that no thread runs) as interrupted.
    """

    default_maps = True  # compute each trained model's default map in the background (see _after_training)

    def __init__(self, store: Any, throttle_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.throttle_s = float(throttle_s)
        self.clock = clock
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self._live: dict[int, _Live] = {}
        self._lock = threading.Lock()
        self._slot = threading.Semaphore(1)
        self._start_lock = threading.Lock()
        self._last_reap = self.clock()
        self.reap()

    # -- start-up ---------------------------------------------------------------------------------
    def reap(self) -> list[int]:
        """Mark active jobs of dead runners (this host only: elsewhere we cannot tell) as interrupted."""
        dead: list[int] = []
        for rec in self.store.jobs(statuses=ACTIVE, limit=10_000):
            if rec.get("host") != self.host:
                continue
            pid = int(rec.get("pid") or 0)
            with self._lock:
                ours = rec["id"] in self._live
            if (pid == self.pid and not ours) or (pid != self.pid and not _pid_alive(pid)):
                dead.append(int(rec["id"]))
        if dead:
            self.store.interrupt_jobs(
                dead, "The dashboard process that ran this job stopped before it finished; start the job again."
            )
        return dead

    # -- starting and stopping --------------------------------------------------------------------
    def start_training(self, dataset: str, cfg: TrainConfig, model_name: str | None = None) -> int:
        """Queue ``pipeline.train_and_register`` for ``dataset``; returns the job id at once.

        A second identical job (same dataset, settings and model name) while the first is queued or
        running is refused in one sentence: a double click on "Start training" once made two jobs and
        two models. The check and the insert run under one lock, so two clicks of this process cannot
        both pass it; a job of another process is seen through the store's jobs table.
        """
        cfg = cfg.checked()
        config = {"train": cfg.to_dict(), "model_name": model_name}
        status = "queued"
        with self._start_lock:
            same = self.duplicate_of(dataset, "train", config)
            if same is not None:
                raise JobError(
                    f"Training job {same.id} on {dataset} with the same settings is already {same.status}; "
                    "wait for it to finish or cancel it, or change a setting to train another model."
                )
            job_id = self.store.add_job(dataset, "train", config, self.pid, self.host, status=status,
                                        message="waiting for the previous job to finish")
            view = JobView(job_id, dataset, "train", status, config, {"phase": "queued", "epochs": cfg.epochs},
                           "waiting for the previous job to finish", None, self.pid, self.host)
            live = _Live(view)
            with self._lock:
                self._live[job_id] = live
        t = threading.Thread(target=self._run_train, args=(live, dataset, cfg, model_name),
                             name=f"mmae-job-{job_id}", daemon=True)
        live.thread = t
        t.start()
        return job_id

    def duplicate_of(self, dataset: str, kind: str, config: dict) -> JobView | None:
        """The queued or running job of ``dataset`` with the same kind and config, if any (compared as the
        store keeps them, JSON, so a tuple and a list of the same values count as the same)."""
        want = json.loads(json.dumps(config, default=str))
        for job in self.active(dataset):
            if job.kind == kind and json.loads(json.dumps(job.config, default=str)) == want:
                return job
        return None

    def cancel(self, job_id: int) -> bool:
        """Ask a job of this process to stop (at its next batch); False if it is not running here."""
        with self._lock:
            live = self._live.get(int(job_id))
        if live is None or live.snapshot().status in FINAL:
            return False
        live.cancel.set()
        return True

    # -- reading ----------------------------------------------------------------------------------
    def get(self, job_id: int) -> JobView:
        """The freshest view: memory for jobs run here, the store for the others."""
        with self._lock:
            live = self._live.get(int(job_id))
        if live is not None:
            return live.snapshot()
        return JobView.from_record(self.store.job(int(job_id)))

    def list(self, dataset: str | None = None, limit: int = 20) -> list[JobView]:
        """Newest first, each job as fresh as :meth:`get` gives it (dead runners reaped every 30 s)."""
        if self.clock() - self._last_reap >= REAP_EVERY_S:
            self._last_reap = self.clock()
            self.reap()
        out = []
        for rec in self.store.jobs(dataset=dataset, limit=limit):
            with self._lock:
                live = self._live.get(int(rec["id"]))
            out.append(live.snapshot() if live is not None else JobView.from_record(rec))
        return out

    def active(self, dataset: str | None = None) -> list[JobView]:
        return [j for j in self.list(dataset, limit=200) if j.active]

    def wait(self, job_id: int, timeout: float | None = None) -> JobView:
        """Block until the job ends (tests and scripts); returns its final view."""
        with self._lock:
            live = self._live.get(int(job_id))
        if live is not None and live.thread is not None:
            live.thread.join(timeout)
        return self.get(job_id)

    # -- the worker -------------------------------------------------------------------------------
    def _set(self, live: _Live, write: bool, must: bool = False, **changes: Any) -> None:
        """Change the in-memory view; write it to the store when asked or when the throttle allows.

        A failed write is only raised when ``must`` (a final status); progress lives on in memory and
        the next write carries it, so a briefly busy store never kills a training.
        """
        with live.lock:
            for k, v in changes.items():
                setattr(live.view, k, v)
            now = self.clock()
            due = write or now - live.last_write >= self.throttle_s
            if not due:
                return
            live.last_write = now
            v = live.view
            status, progress, message, model = v.status, copy.deepcopy(v.progress), v.message, v.model
        try:
            self.store.update_job(v.id, status=status, progress=progress, message=message or "", model=model)
        except StudioError:
            if must:
                raise

    def _progress(self, live: _Live, **changes: Any) -> None:
        with live.lock:
            live.view.progress.update(changes)
        self._set(live, write=False)

    def _finish(self, live: _Live, status: str, message: str, model: str | None = None) -> None:
        for attempt in range(5):
            try:
                self._set(live, write=True, must=True, status=status, message=message, model=model)
                return
            except StudioError:
                time.sleep(0.5 * (attempt + 1))
        with live.lock:  # the store refused every time: memory still tells this process the truth
            live.view.status, live.view.message = status, message

    def _after_training(self, dataset: str, model: str) -> None:
        """Start the new model's default map (UMAP) in the background, so Explore opens on a map that
        separates (``studio.background_map``); ``default_maps = False`` skips it."""
        if self.default_maps:
            from studio.background_map import start_default_map

            start_default_map(self.store, dataset, model)

    def _run_train(self, live: _Live, dataset: str, cfg: TrainConfig, model_name: str | None) -> None:
        from studio.pipeline import train_and_register

        lower_thread_priority()
        try:
            while not self._slot.acquire(timeout=0.2):
                if live.cancel.is_set():
                    self._finish(live, "cancelled", "Cancelled before it started; nothing was trained.")
                    return
            try:
                if live.cancel.is_set():
                    self._finish(live, "cancelled", "Cancelled before it started; nothing was trained.")
                    return
                started = time.perf_counter()
                self._set(live, write=True, status="running", message="loading the dataset",
                          progress={"phase": "loading the dataset", "epoch": 0, "epochs": cfg.epochs,
                                    "elapsed_s": 0.0, "eta_s": None, "history": [], "notes": []})
                last_beat = [self.clock()]

                def on_progress(p: Any) -> None:
                    with live.lock:
                        hist = live.view.progress.setdefault("history", [])
                        hist.append({"epoch": int(p.epoch), "losses": {k: float(v) for k, v in p.losses.items()}})
                        del hist[:-HISTORY_CAP]
                    last_beat[0] = self.clock()
                    self._progress(live, phase="training", epoch=int(p.epoch), epochs=int(p.epochs),
                                   elapsed_s=float(p.elapsed_s), eta_s=float(p.eta_s))
                    if p.epoch == p.epochs:
                        self._set(live, write=True)

                def should_stop() -> bool:
                    now = self.clock()
                    if now - last_beat[0] >= HEARTBEAT_S:  # a long epoch: show the job is alive
                        last_beat[0] = now
                        self._progress(live, elapsed_s=time.perf_counter() - started)
                    return live.cancel.is_set()

                def on_log(msg: str) -> None:
                    with live.lock:
                        if msg.startswith("note:"):
                            live.view.progress.setdefault("notes", []).append(msg[5:].strip())
                        elif msg.startswith("encoding"):
                            live.view.progress["phase"] = "encoding every split and saving the model"
                    self._set(live, write=True, message=msg)

                out = train_and_register(self.store, dataset, cfg, model_name, on_progress=on_progress,
                                         should_stop=should_stop, log=on_log)
                with live.lock:
                    live.view.progress.update(phase="done", eta_s=0.0, final_losses=out.final_losses,
                                              train_seconds=out.train_seconds,
                                              elapsed_s=time.perf_counter() - started)
                self._finish(live, "done", f"Model {out.model_name} is registered with its latents.", out.model_name)
                self._after_training(dataset, out.model_name)
            finally:
                self._slot.release()
        except CancelledError as err:
            self._finish(live, "cancelled", str(err))
        except BaseException as err:  # noqa: BLE001 - the job must end with a reason, whatever happened
            # Module logger, never a local: a local function named ``log`` once shadowed it here, so
            # this handler raised and left the job 'running' forever with nothing logged.
            if not isinstance(err, StudioError) and resource_error(err) is None:
                log.exception("job %s failed with an internal error", live.view.id)
            self._finish(live, "failed", _reason(err))


_MANAGERS: dict[str, JobManager] = {}
_MANAGERS_LOCK = threading.Lock()


def manager_for(store: Any, throttle_s: float = 1.0) -> JobManager:
    """The one manager of this process for ``store``'s file (created, and the dead reaped, on first use).

    A module-level registry rather than only Streamlit's resource cache: clearing that cache must not
    create a second manager that would think the first one's running jobs were orphans.
    """
    key = str(getattr(store, "path", id(store)))
    with _MANAGERS_LOCK:
        m = _MANAGERS.get(key)
        if m is None:
            m = _MANAGERS[key] = JobManager(store, throttle_s)
        return m
