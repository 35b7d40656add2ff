"""Sharing the file: another process's lock is waited for, then named; threads lose no decision."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from store import Store, StoreError

from testkit.data import make_featureset, one_sentence, store_with_proposals, table_rows

ROOT = Path(__file__).resolve().parents[1]

HOLDER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def hold(path: Path, seconds: float) -> subprocess.Popen:
    """Another process that opens the store for writing and keeps it for ``seconds``."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
    return proc


def test_a_locked_store_is_waited_for_then_named_in_one_sentence(tmp_path):
    path = tmp_path / "s.duckdb"
    impatient = Store(path, lock_timeout=0.6)
    impatient.add_dataset(make_featureset())
    waits: list[str] = []
    patient = Store(path, lock_timeout=30, on_wait=waits.append)
    proc = hold(path, 3.5)
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreError) as err:
            impatient.dataset_names()
        waited = time.monotonic() - t0
        msg = str(err.value)
        assert 0.5 <= waited < 3.0, waited  # bounded by lock_timeout, not by the holder
        assert f"PID {proc.pid}" in msg and "locked" in msg and "try again" in msg and one_sentence(msg), msg

        assert patient.dataset_names() == ["toy"]  # succeeds once the other process lets go
        assert time.monotonic() - t0 >= 3.0
        assert len(waits) == 1 and f"PID {proc.pid}" in waits[0] and one_sentence(waits[0])
    finally:
        proc.kill()
        proc.wait()


def test_writes_wait_too_and_then_succeed(tmp_path):
    path = tmp_path / "s.duckdb"
    store, _ = store_with_proposals(path)
    proc = hold(path, 1.0)
    try:
        store.accept("toy", "m1", 0, "ann")  # default timeout of 10 s outlasts the holder
    finally:
        proc.kill()
        proc.wait()
    assert len(table_rows(store, "tags")) == 10


def test_the_store_releases_the_file_between_units_of_work(tmp_path):
    path = tmp_path / "s.duckdb"
    store, _ = store_with_proposals(path)
    store.accept("toy", "m1", 0, "ann")
    code = "import sys, duckdb; c = duckdb.connect(sys.argv[1]); print(c.execute('SELECT count(*) FROM tags').fetchall()[0][0])"
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "10"


def test_a_store_lingering_after_work_still_lets_others_in(tmp_path):
    path = tmp_path / "s.duckdb"
    store = Store(path, linger=0.3)
    store.add_dataset(make_featureset())
    store.dataset_names()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = "import sys; from store import Store; print(Store(sys.argv[1], lock_timeout=10).dataset_names())"
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['toy']"


def test_eight_threads_fifty_decisions_each_lose_nothing(tmp_path):
    store, fs = store_with_proposals(tmp_path / "s.duckdb")
    items = fs.splits["train"].item_ids.tolist()
    errors: list[BaseException] = []

    def curator(t: int) -> None:
        try:
            for j in range(50):
                store.set_item("toy", items[(t * 7 + j) % len(items)], f"t{t}-{j}", f"curator-{t}")
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=curator, args=(t,)) for t in range(8)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    print(f"\n400 decisions from 8 threads in {time.perf_counter() - t0:.1f} s")
    assert not errors, errors
    hist = store.history("toy")
    assert len(hist) == 400 and hist["id"].is_unique
    assert hist["curator"].value_counts().to_dict() == {f"curator-{t}": 50 for t in range(8)}
    # every item's tag is the one its newest event set
    newest = hist.sort_values("id").groupby(hist["summary"].str.extract(r"item '([^']+)'")[0]).tail(1)
    expected = {s.split("'")[1]: s.split("'")[3] for s in newest["summary"]}
    assert {r[1]: r[2] for r in table_rows(store, "tags")} == expected


def test_a_lingering_store_lets_a_waiting_process_in_at_once(tmp_path):
    """The dashboard keeps the file open for a while after its last use (``linger``); a CLI job that
    asks for it (``<store>.want``) must get it within a poll, not after the whole linger."""
    path = tmp_path / "s.duckdb"
    store = Store(path, linger=20.0)
    store.add_dataset(make_featureset())
    store.dataset_names()  # the file is now open and lingering for 20 s
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = ("import sys, time; from store import Store; t = time.monotonic(); "
            "names = Store(sys.argv[1], lock_timeout=30).dataset_names(); print(names, round(time.monotonic() - t, 2))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    names, waited = out.stdout.rsplit(" ", 1)
    assert names == "['toy']" and float(waited) < 5.0, out.stdout
    assert store.dataset_names() == ["toy"]  # and this process simply reopens it
