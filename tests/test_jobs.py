"""The background-job manager without Streamlit: runs, records, cancels, fails with a reason, reaps."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from mmae_core.config import preset
from studio.jobs import JobManager, _reason, manager_for
from store import Store


def _wait_until(cond, timeout: float = 60.0, step: float = 0.05) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(step)


class CountingStore(Store):
    """A real store that also counts the job-progress writes (to check the throttle)."""

    writes = 0

    def update_job(self, job_id, **kw):
        type(self).writes += 1
        return super().update_job(job_id, **kw)


def test_training_job_registers_model_and_records_progress(demo_store):
    store = demo_store.store()
    mgr = JobManager(store, throttle_s=0.0)
    job_id = mgr.start_training("demo", preset("paper", epochs=2), "job-a")
    view = mgr.wait(job_id, timeout=120)
    assert view.status == "done", view.message
    assert view.model == "job-a"
    assert "job-a" in set(store.list_models("demo")["name"])
    ids, z = store.latents("demo", "job-a", "test", "fused")
    assert z.shape == (150, 128) and np.isfinite(z).all()
    rec = store.job(job_id)  # what another tab or process sees
    assert rec["status"] == "done" and rec["model"] == "job-a" and rec["finished_at"] is not None
    assert [h["epoch"] for h in rec["progress"]["history"]] == [1, 2]
    assert set(rec["progress"]["history"][0]["losses"]) >= {"image", "audio", "text", "total"}
    assert rec["progress"]["epoch"] == 2 and rec["progress"]["eta_s"] == 0.0
    assert rec["config"]["train"]["epochs"] == 2 and rec["pid"] == os.getpid()


def test_cancel_running_and_queued_jobs(demo_store):
    store = demo_store.store()
    mgr = JobManager(store, throttle_s=0.0)
    first = mgr.start_training("demo", preset("paper", epochs=500), "long")
    second = mgr.start_training("demo", preset("paper", epochs=2), "waiting")
    _wait_until(lambda: mgr.get(first).progress.get("epoch", 0) >= 1)
    assert mgr.get(second).status == "queued"  # one job at a time
    assert mgr.cancel(second)
    assert mgr.wait(second, timeout=30).status == "cancelled"
    assert mgr.cancel(first)
    done = mgr.wait(first, timeout=60)
    assert done.status == "cancelled" and "cancelled" in done.message
    assert store.job(first)["status"] == "cancelled" and store.job(second)["status"] == "cancelled"
    names = set(store.list_models("demo")["name"])
    assert "long" not in names and "waiting" not in names
    assert not mgr.cancel(first)  # already over


def test_failing_job_is_marked_failed_with_one_sentence(demo_store):
    store = demo_store.store()
    mgr = JobManager(store)
    job_id = mgr.start_training("demo", preset("paper", epochs=1), demo_store.model)  # the name is taken
    view = mgr.wait(job_id, timeout=60)
    assert view.status == "failed"
    assert "already exists" in view.message and "\n" not in view.message
    assert store.job(job_id)["status"] == "failed" and store.job(job_id)["message"] == view.message
    missing = mgr.start_training("no-such-dataset", preset("paper", epochs=1))
    assert mgr.wait(missing, timeout=30).status == "failed"
    assert "no dataset named 'no-such-dataset'" in mgr.get(missing).message


def test_internal_errors_become_one_sentence():
    msg = _reason(ValueError("shapes (3,4) and (5,6) not aligned\nTraceback ..."))
    assert msg.startswith("Internal error (ValueError: shapes (3,4)") and "\n" not in msg


def test_progress_writes_are_throttled(demo_store):
    store = CountingStore(demo_store.db)
    CountingStore.writes = 0
    mgr = JobManager(store, throttle_s=3600.0)
    job_id = mgr.start_training("demo", preset("paper", epochs=20), "throttled")
    view = mgr.wait(job_id, timeout=240)
    assert view.status == "done", view.message
    # running + the log lines + the last epoch + done: a handful, not one per epoch (20) and batch
    assert CountingStore.writes <= 12
    assert len(store.job(job_id)["progress"]["history"]) == 20  # the final write carries everything


def test_jobs_of_dead_processes_are_marked_interrupted(demo_store):
    store = demo_store.store()
    host = socket.gethostname()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = store.add_job("demo", "train", {}, gone.pid, host, status="running")
    ours = store.add_job("demo", "train", {}, os.getpid(), host, status="running")  # no thread runs it
    alive = store.add_job("demo", "train", {}, os.getppid(), host, status="running")
    elsewhere = store.add_job("demo", "train", {}, 1, "another-host", status="running")
    JobManager(store)
    assert store.job(dead)["status"] == "interrupted"
    assert "stopped before it finished" in store.job(dead)["message"]
    assert store.job(ours)["status"] == "interrupted"
    assert store.job(alive)["status"] == "running"
    assert store.job(elsewhere)["status"] == "running"


def test_manager_for_is_one_per_store_file(demo_store):
    a = manager_for(demo_store.store())
    b = manager_for(Store(str(demo_store.db)))
    assert a is b
    with pytest.raises(Exception):
        a.get(12345)


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are a Linux feature")
def test_job_threads_run_below_the_server_and_their_child_threads_inherit_it():
    import threading

    from studio.jobs import JOB_NICENESS, lower_thread_priority

    main_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen: dict[str, int] = {}

    def child() -> None:
        seen["child"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def job() -> None:
        assert lower_thread_priority()
        seen["job"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        c = threading.Thread(target=child)  # like the trainer's modality-group pool
        c.start()
        c.join()

    t = threading.Thread(target=job)
    t.start()
    t.join()
    assert seen["job"] == min(19, main_nice + JOB_NICENESS) and seen["child"] == seen["job"]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_nice  # the server keeps its own


def test_a_machine_that_gets_busy_mid_training_is_named_in_the_job_notes(demo_store):
    """A curator whose progress bar suddenly crawls learns why, once, from the job's notes. The
    busy machine is made real from the trainer's side: in epoch 4 every step waits (the job's
    should_stop is called between steps, as the cancel check is)."""
    from studio import pipeline

    store = demo_store.store()
    calls, notes = [0], []

    def should_stop() -> bool:
        calls[0] += 1
        if 22 <= calls[0] <= 28:  # the 7 steps of epoch 4 (850 train items, batch 128)
            time.sleep(0.3)
        return False

    pipeline.train_and_register(store, "demo", preset("paper", epochs=6), "busy",
                                should_stop=should_stop, log=notes.append)
    slow = [n for n in notes if "another program is using the cores" in n]
    # epoch 4 is slowed for sure; on a loaded machine (the suite's other workers) a real slowdown can
    # come first, and then that one is named instead: either way exactly once, with the fix
    assert len(slow) == 1 and re.match(r"note: epoch [2-4] took", slow[0]) and "close other CPU-heavy programs" in slow[0], slow
    assert any(n.startswith("trained in") and "(autograd, fused Adam" in n for n in notes)


def test_slowdown_watch_ignores_the_first_epoch_and_warns_once() -> None:
    from studio.pipeline import SlowdownWatch

    watch = SlowdownWatch()
    elapsed = 0.0
    said = []
    for epoch, took in enumerate([5.0, 0.5, 0.6, 0.55, 1.4, 2.0, 0.5, 3.0], start=1):  # epoch 1 includes the setup
        elapsed += took
        said.append(watch(epoch, elapsed))
    assert said[:5] == [None] * 5  # 1.4 s is under 3x the fastest (0.5 s)
    assert said[5].startswith("note: epoch 6 took 2.0 s, 4x the fastest so far (0.50 s)") and "close other" in said[5]
    assert said[6:] == [None, None]  # once is enough
    tiny = SlowdownWatch()  # tiny epochs: a 40 ms hiccup is 5x, but nobody waits for it
    assert [tiny(e, t) for e, t in enumerate([0.5, 0.51, 0.52, 0.57], start=1)] == [None] * 4


class BrokenReadStore(Store):
    """A real store whose dataset read fails with an error that is not ours (a bug, a driver fault)."""

    def load_dataset(self, *args, **kwargs):
        raise KeyError("column 'image' vanished")


def test_an_unexpected_error_ends_the_job_failed_with_a_sentence_and_a_log(demo_store, caplog):
    store = BrokenReadStore(demo_store.db)
    mgr = JobManager(store, throttle_s=0.0)
    with caplog.at_level("ERROR", logger="mmae_studio.jobs"):
        job_id = mgr.start_training("demo", preset("paper", epochs=1), "never")
        view = mgr.wait(job_id, timeout=60)
    assert view.status == "failed"
    assert view.message.startswith("Internal error (KeyError") and "\n" not in view.message
    assert store.job(job_id)["status"] == "failed" and store.job(job_id)["finished_at"] is not None
    assert any("failed with an internal error" in r.getMessage() and r.exc_info for r in caplog.records)
    assert not mgr.active("demo")


def test_a_second_identical_job_is_refused_while_the_first_is_active(demo_store):
    from mmae_core.errors import StudioError

    store = demo_store.store()
    mgr = JobManager(store, throttle_s=0.0)
    first = mgr.start_training("demo", preset("paper", epochs=500), "once")
    try:
        with pytest.raises(StudioError, match=rf"Training job {first} on demo with the same settings is already"):
            mgr.start_training("demo", preset("paper", epochs=500), "once")
        assert len(store.jobs("demo", statuses=("queued", "running"))) == 1
        other = mgr.start_training("demo", preset("paper", epochs=2), "another")  # a different job is queued
        assert mgr.get(other).status == "queued"
        assert mgr.cancel(other)
    finally:
        mgr.cancel(first)
        mgr.wait(first, timeout=60)
    assert mgr.get(first).status == "cancelled"
    again = mgr.start_training("demo", preset("paper", epochs=500), "once")  # over: the same job may run again
    mgr.cancel(again)
    assert mgr.wait(again, timeout=60).status == "cancelled"
