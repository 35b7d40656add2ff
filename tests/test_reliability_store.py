"""Matrix cases 12-15 and 21 through the CLI and the pages: hostile names, spreadsheet formulas in
exports, a second process writing while the dashboard runs, schema versions and foreign files, and
an import under an existing name."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from store import Store
from store.schema import MIGRATIONS

from testkit import faults as rc
from testkit.faults import FORMULAS  # noqa: F401


HOSTILE = ["O'Brien \"quoted\"; DROP TABLE tags; --", "../../etc/passwd", "名前 🎵"]


def test_hostile_names_are_plain_data_or_refused(db: Path, tmp_path: Path) -> None:
    item = str(Store(db).catalog(rc.DATASET)["item_id"].iloc[3])
    folder = tmp_path / "good"
    rc.good_folder(tmp_path)
    for name in HOSTILE:
        proc = rc.cli(db, "tag", "set", "--dataset", rc.DATASET, "--item", item, "--tag", name, "--curator", name)
        assert proc.returncode == 0, proc.stderr
        hist = json.loads(rc.cli(db, "tag", "history", "--dataset", rc.DATASET, "--format", "json").stdout)
        assert hist[0]["curator"] == name and f"as '{name}'" in hist[0]["summary"]
        proc = rc.cli(db, "import", str(folder), "--name", name)
        assert proc.returncode == 0, proc.stderr
    listed = {d["name"] for d in json.loads(rc.cli(db, "datasets", "--format", "json").stdout)}
    assert set(HOSTILE) <= listed and rc.DATASET in listed  # every table is still there, names as given
    assert not (tmp_path / "etc").exists()
    for bad in ["tab\there", "esc\x1b[31m"]:
        out = rc.cli_case("12 name with control characters", db, "tag", "set", "--dataset", rc.DATASET,
                          "--item", item, "--tag", bad)
        assert out.exit_code == 1 and out.sentence_ok and "control" in out.saw, out
        assert out.unchanged and out.works_after
        out = rc.cli_case("12 dataset name with control characters", db, "import", str(folder), "--name", bad)
        assert out.exit_code == 1 and "control" in out.saw and out.unchanged, out
    with rc.page_env(db, tmp_path / "data"):  # the pages show the names as text, not markup or SQL
        at = rc.open_page("tags", dataset=rc.DATASET)
        assert not at.exception
        at.switch_page("pages/catalog.py")
        at.run()
        assert not at.exception and not rc.page_errors(at)




def test_exported_formulas_are_inert_and_the_data_reads_back_intact(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    folder = tmp_path / "formulas"
    n = len(FORMULAS)
    rc._write_npy_folder(folder, {"train": rc._good(n, 1)})
    pd.DataFrame({"item_id": [f"i{i}" for i in range(n)], "title": FORMULAS, "label": FORMULAS}).to_parquet(
        folder / "train" / "items.parquet")  # (pandas' CSV writer leaves a bare CR unquoted)
    assert rc.cli(db, "import", str(folder), "--name", "f").returncode == 0
    snap = rc.Snapshot.take(db)
    for fmt in ("csv", "parquet", "json"):
        proc = rc.cli(db, "export", "--dataset", "f", "--format", fmt, "--out", str(tmp_path / f"out.{fmt}"))
        assert proc.returncode == 0, proc.stderr
    assert snap.compare() == (True, 0)
    csv = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False)
    for col in ("title", "label"):
        for shown, original in zip(csv[col], FORMULAS):
            if original[0] in "=+-@\t\r\n":
                assert shown == "'" + original, (shown, original)  # inert: starts with a quote
            else:
                assert shown == original
            assert shown.removeprefix("'") == original  # and nothing else changed
    assert list(pd.read_parquet(tmp_path / "out.parquet")["title"]) == FORMULAS
    assert [r["title"] for r in json.loads((tmp_path / "out.json").read_text())] == FORMULAS


HOLDER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_a_locked_store_makes_the_cli_wait_then_name_the_holder(db: Path) -> None:
    item = str(Store(db).catalog(rc.DATASET)["item_id"].iloc[0])
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), "60"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        t0 = time.monotonic()
        out = rc.cli(db, "tag", "set", "--dataset", rc.DATASET, "--item", item, "--tag", "x",
                     env=rc.cli_env(db, MMAE_STUDIO_LOCK_TIMEOUT="2"))
        waited = time.monotonic() - t0
        assert out.returncode == 1
        msg = rc.cli_error(out)
        assert f"PID {holder.pid}" in msg and rc.one_sentence(msg), msg
        assert "waiting up to 2 s" in out.stderr  # it said what it waited for while waiting
        assert waited < 30
    finally:
        holder.kill()
        holder.wait()
    assert rc.cli_works(db, subprocess_check=True)


def test_cli_tag_batch_while_the_dashboard_works_loses_nothing(db: Path, tmp_path: Path) -> None:
    """The dashboard (AppTest, in this process, with its lingering store) makes decisions while a CLI
    batch of ``tag set`` runs in another process: both finish, every decision is in the audit trail."""
    store = Store(db)
    items = [str(i) for i in store.catalog(rc.DATASET)["item_id"].iloc[:40]]
    n_before = len(store.history(rc.DATASET))
    script = tmp_path / "batch.sh"
    script.write_text("set -e\n" + "".join(
        f"{sys.executable} -m mmae_core tag set --dataset {rc.DATASET} --item {it} --tag batch-{j} --curator cli\n"
        for j, it in enumerate(items[:8])))
    batch = subprocess.Popen(["bash", str(script)], env=rc.cli_env(db), cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    page_decisions = 0
    with rc.page_env(db, tmp_path / "data"):
        from streamlit.testing.v1 import AppTest

        at = AppTest.from_file(str(rc.ROOT / "pages" / "tags.py"), default_timeout=180)
        at.session_state["curator"], at.session_state["dataset"], at.session_state["model"] = "page", rc.DATASET, rc.MODEL
        at.run()
        while page_decisions < 4 or (batch.poll() is None and page_decisions < 30):
            at.button(key="tags_accept").click().run()  # accept the selected proposal, again and again
            assert not at.exception and not rc.page_errors(at), rc.page_errors(at)
            page_decisions += 1
    batch.wait(300)
    assert batch.returncode == 0, batch.stderr.read()
    hist = Store(db).history(rc.DATASET)
    assert len(hist) == n_before + 8 + page_decisions
    assert (hist["curator"] == "cli").sum() == 8 and (hist["curator"] == "page").sum() == page_decisions


def test_schema_newer_refused_older_migrated_after_a_backup_foreign_refused(db: Path, tmp_path: Path) -> None:
    # newer: refused, the file untouched
    newer = rc.copy_store(db, tmp_path / "newer.duckdb")
    con = duckdb.connect(str(newer))
    con.execute("INSERT INTO schema_version VALUES (99, now()::TIMESTAMP)")
    con.execute("CHECKPOINT")
    con.close()
    raw = newer.read_bytes()
    proc = rc.cli(newer, "datasets")
    assert proc.returncode == 1 and "version 99" in rc.cli_error(proc) and rc.one_sentence(rc.cli_error(proc))
    assert newer.read_bytes() == raw
    with rc.page_env(newer, tmp_path / "data"):
        from streamlit.testing.v1 import AppTest

        at = AppTest.from_file(str(rc.APP), default_timeout=120)
        at.run()
        assert not at.exception and any("version 99" in e for e in rc.page_errors(at))
    # not a DuckDB file / a foreign DuckDB file: refused, untouched
    for path, content in [(tmp_path / "notes.duckdb", b"curator notes, not a database\n" * 40)]:
        path.write_bytes(content)
        proc = rc.cli(path, "datasets")
        assert proc.returncode == 1 and "not a DuckDB database" in rc.cli_error(proc) and path.read_bytes() == content
    foreign = tmp_path / "sales.duckdb"
    con = duckdb.connect(str(foreign))
    con.execute("CREATE TABLE sales (id INTEGER)")
    con.close()
    proc = rc.cli(foreign, "datasets")
    assert proc.returncode == 1 and "not an MMAE Studio store" in rc.cli_error(proc)
    # older: this code's next version would add a column; the v1 file is copied, then migrated
    snap = rc.Snapshot.take(db)
    code = textwrap.dedent("""
        import sys
        import store.schema as schema
        schema.MIGRATIONS = (*schema.MIGRATIONS, lambda con: con.execute("ALTER TABLE datasets ADD COLUMN note VARCHAR"))
        from studio.cli import main
        sys.exit(main(["datasets", "--format", "json"]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=rc.cli_env(db), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    backup = db.with_name(db.name + f".bak-v{len(MIGRATIONS)}")
    assert backup.exists()
    assert rc.Snapshot.take(backup).sum == snap.sum  # the backup is the store as it was
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT max(version) FROM schema_version").fetchall()[0][0] == len(MIGRATIONS) + 1
    con.close()


def test_import_under_an_existing_name_needs_replace_and_keeps_a_backup(db: Path, tmp_path: Path) -> None:
    rc.good_folder(tmp_path, "new")
    before = Store(db).catalog(rc.DATASET)
    out = rc.cli_case("21 import under an existing name", db, "import", str(tmp_path / "new"), "--name", rc.DATASET)
    assert out.exit_code == 1 and out.sentence_ok and "--replace" in out.saw and out.unchanged, out
    out = rc.cli_case("21 demo under an existing name", db, "demo", "--scale", "0.01")
    assert out.exit_code == 1 and out.sentence_ok and out.unchanged, out
    counts = rc.table_counts(db)
    proc = rc.cli(db, "import", str(tmp_path / "new"), "--name", rc.DATASET, "--replace")
    assert proc.returncode == 0, proc.stderr
    store = Store(db)
    backups = [n for n in store.dataset_names(backups=True) if n.startswith(rc.DATASET + "@replaced-")]
    assert len(backups) == 1
    kept = store.catalog(backups[0])
    pd.testing.assert_frame_equal(kept.reset_index(drop=True), before.reset_index(drop=True))  # tags and all
    assert rc.rows_lost(counts, rc.table_counts(db)) == 0  # nothing deleted, the old rows live on
    # the page asks for confirmation the same way
    snap = rc.Snapshot.take(db)
    rc.good_folder(tmp_path / "data", "again")
    outs = rc.page_imports([("21 page import under an existing name", "again")], db, tmp_path / "data", name=rc.DATASET)
    assert "already in the store" in outs[0].saw and outs[0].unchanged and rc.one_sentence(outs[0].saw)
    assert snap.compare() == (True, 0)
