"""Matrix cases 16 and 17: ``kill -9`` in the middle of an import, the writing of latents, a tag decision
and an export, and a disk that fills up during an import or an export.

Killing at a random time mostly hits start-up, so the CLI runs with a pause point armed
(``store/faults.py``): it stops inside the open transaction (or with the export's temporary file half
written), the test kills it there, and a fresh process opens the store and checks that nothing
committed is lost and nothing half-written is visible. A full disk is a file-size limit
(``RLIMIT_FSIZE``) on the CLI process: writes past it fail with EFBIG, as on a full disk.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from studio.jobs import JobManager
from store import Store
from store import datasets as store_datasets
from store import feature_files

from testkit import faults as rc
from testkit.faults import CRASH_SERVER as SERVER  # noqa: F401


def after_crash(db: Path, snap: rc.Snapshot) -> tuple[bool, int]:
    """Reopen as a new process would (a new ``Store`` after the killed one) and compare."""
    return snap.compare()


@pytest.mark.parametrize("point", ["import", "features", "latents", "decision", "export"])
def test_kill_9_in_the_middle_leaves_nothing_half_written(db: Path, tmp_path: Path, point: str) -> None:
    folder = tmp_path / "data"
    rc._write_npy_folder(folder / "big", {"train": rc._good(3000, 1, dims=(40, 30)), "test": rc._good(500, 2, dims=(40, 30))})
    out = tmp_path / "catalog.csv"
    out.write_text("the previous export\n")
    args = {
        "import": ["import", str(folder / "big"), "--name", "big"],
        "features": ["import", str(folder / "big"), "--name", "big"],  # killed after the folder's rename, before COMMIT
        "latents": ["train", "--dataset", rc.DATASET, "--epochs", "1", "--latent", "16", "--model-name", "m2"],
        "decision": ["tag", "set", "--dataset", rc.DATASET, "--item", first_item(db), "--tag", "lost"],
        "export": ["export", "--dataset", rc.DATASET, "--format", "csv", "--out", str(out)],
    }[point]
    snap = rc.Snapshot.take(db)
    code, _ = rc.run_until_pause(db, point, args, tmp_path / "marker")
    assert code == -signal.SIGKILL
    same, lost = after_crash(db, snap)
    assert same and lost == 0, point  # the transaction in flight is gone, every committed row is there
    store = Store(db)
    assert store.dataset_names() == [rc.DATASET]
    assert set(store.list_models(rc.DATASET)["name"]) == {rc.MODEL}  # no model without its latents
    if point == "export":
        assert out.read_text() == "the previous export\n"  # the final name still holds the old file whole
    # and the store takes the same action again, whole
    again = rc.cli(db, *args)
    assert again.returncode == 0, again.stderr
    if point in ("import", "features"):
        assert store.load_dataset("big").splits["train"].n == 3000
        with store.reader() as con:  # the killed import's folder was collected; each dataset has its own
            named = store_datasets.folders(con)
        assert {p.name for p in feature_files.root(db).iterdir()} == named and len(named) == 2
    if point == "latents":
        assert store.latents(rc.DATASET, "m2", "ood", "fused")[1].shape[1] == 16
        with store.reader() as con:  # the killed run's blocks, written ahead of its model, were deleted
            assert con.execute("SELECT count(*) FROM latents_16 WHERE model_id < 0").fetchall() == [(0,)]
    if point == "decision":
        assert store.history(rc.DATASET)["summary"].iloc[0].endswith("as 'lost'")
    if point == "export":
        assert out.read_text().startswith("item_id,")


def first_item(db: Path) -> str:
    return str(Store(db).catalog(rc.DATASET)["item_id"].iloc[0])




def test_kill_9_of_the_server_during_training_shows_the_job_interrupted(db: Path, tmp_path: Path) -> None:
    snap = rc.Snapshot.take(db)
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(db)], env=rc.cli_env(db), stdout=subprocess.PIPE, text=True)
    try:
        job = int(proc.stdout.readline())
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    store = Store(db)
    assert store.job(job)["status"] == "running"  # what the dead process left
    JobManager(store)  # a restarted server
    rec = store.job(job)
    assert rec["status"] == "interrupted" and "stopped before it finished" in rec["message"]
    assert "endless" not in set(store.list_models(rc.DATASET)["name"])
    with rc.page_env(db, tmp_path / "data"):
        at = rc.open_page("train")
        assert any("interrupted" in e for e in rc.page_errors(at)), rc.page_errors(at)
    same, lost = snap.compare()
    assert lost == 0


def test_disk_full_during_an_import_is_one_sentence_and_no_partial_dataset(db: Path, tmp_path: Path) -> None:
    # 80 MB per modality file: larger than the store file plus any headroom, so each file limit is hit
    rc._write_npy_folder(tmp_path / "big", {"train": rc._good(20_000, 1, dims=(1000, 1000))})
    size = db.stat().st_size
    for headroom in (1, 4, 16):  # MB left for each file: the write fails early, midway or late
        out = rc.cli_case(f"17 disk full during import (+{headroom} MB)", db, "import", str(tmp_path / "big"),
                          "--name", "big", preexec=rc.disk_limit(size + headroom * 2**20))
        assert out.exit_code == 1 and out.sentence_ok and "disk" in out.saw, out
        assert out.unchanged and out.rows_lost == 0 and out.works_after, out
    assert Store(db).dataset_names() == [rc.DATASET]
    left = feature_files.root(db)  # no temp folder of the refused imports is left behind
    assert not left.exists() or not [p for p in left.iterdir() if p.name.startswith(feature_files.TMP)]
    proc = rc.cli(db, "import", str(tmp_path / "big"), "--name", "big")  # with space again, it works
    assert proc.returncode == 0, proc.stderr
    assert Store(db).load_dataset("big").splits["train"].n == 20_000


def test_disk_full_during_an_export_leaves_no_partial_file_under_the_final_name(db: Path, tmp_path: Path) -> None:
    out_new = tmp_path / "new.csv"
    out_old = tmp_path / "old.csv"
    out_old.write_text("yesterday's export\n")
    for out in (out_new, out_old):
        res = rc.cli_case("17 disk full during export", db, "export", "--dataset", rc.DATASET, "--format", "csv",
                          "--out", str(out), preexec=rc.disk_limit(4096))
        assert res.exit_code == 1 and res.sentence_ok and "space" in res.saw, res
        assert res.unchanged and res.works_after
    assert not out_new.exists()
    assert out_old.read_text() == "yesterday's export\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the temporary file is removed
