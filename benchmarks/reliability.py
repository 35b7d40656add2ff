"""The fault and bad-input matrix and the load tests, run end to end, printed as one table.

Every case runs the code path a user takes: ``python -m mmae_core`` in a subprocess (``cli``), the
Data page under Streamlit's AppTest (``page``), or the store / job manager as the server calls them
(``store``, ``job``). For each: the sentence the user saw, whether a checksum over every table is the
one taken before ("store unchanged"), how many committed rows are gone, and whether the store still
serves afterwards. The case builders are shared with the tests (``testkit.faults``).

Load: ``--threads`` curators x ``--decisions`` decisions (accept, rename, move an item, undo) in
threads through the Store API, checked against the audit trail and a serial replay of it; tag
decision latency while a training job and evaluations run for ``--latency-seconds``.

Run: ``.venv/bin/python benchmarks/reliability.py`` (about 10 minutes on 2 cores; ``--quick`` for a
short load run).
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testkit import faults as rc
from testkit.faults import address_limit, bad_checkpoints, run_oom_server

ROOT = Path(__file__).resolve().parents[1]

Outcome = rc.Outcome


def inputs(template: Path, work: Path) -> list[Outcome]:
    db = rc.copy_store(template, work / "inputs.duckdb")
    root = work / "data"
    root.mkdir()
    bad = rc.make_bad_inputs(root, work / "pwned")
    rows = []
    for label, rel in bad.values():
        rows.append(rc.cli_case(label, db, "import", str(root / rel), "--name", "incoming"))
    rows += rc.page_imports(list(bad.values()), db, root)
    rows.append(Outcome("5 pickle payload ran", "-", "payload file exists: " + str((work / "pwned").exists()), None,
                        None, 0, not (work / "pwned").exists()))
    return rows


def checkpoints_and_k(template: Path, work: Path) -> list[Outcome]:
    db = rc.copy_store(template, work / "ckpt.duckdb")
    rows = []
    for label, path, _ in bad_checkpoints(db, work, work / "pwned-ckpt").values():
        rows.append(rc.cli_case(label, db, "load-model", str(path), "--dataset", rc.DATASET))
    from store import Store

    n = Store(db).load_dataset(rc.DATASET).splits["test"].n
    for label, args in [
        ("11 k larger than the items", ["evaluate", "--dataset", rc.DATASET, "--k", f"5,{n + 1}"]),
        ("11 k < 2", ["evaluate", "--dataset", rc.DATASET, "--k", "1"]),
        ("11 empty k grid", ["evaluate", "--dataset", rc.DATASET, "--k", ","]),
        ("11 propose k larger than the items", ["propose", "--dataset", rc.DATASET, "--k", str(n + 1)]),
        ("11 split the dataset lacks", ["evaluate", "--dataset", rc.DATASET, "--split", "validation"]),
    ]:
        rows.append(rc.cli_case(label, db, *args))
    empty = work / "zero"
    rc._write_npy_folder(empty, {"train": {k: v[:0] for k, v in rc._good(5, 1).items()}})
    rows.append(rc.cli_case("11 empty split", db, "import", str(empty), "--name", "zero"))
    return rows


def names_and_replace(template: Path, work: Path) -> list[Outcome]:
    db = rc.copy_store(template, work / "names.duckdb")
    from store import Store

    item = str(Store(db).catalog(rc.DATASET)["item_id"].iloc[3])
    rows = []
    for bad in ("tab\there", "esc\x1b[31m"):
        rows.append(rc.cli_case("12 tag name with control characters", db, "tag", "set", "--dataset", rc.DATASET,
                                "--item", item, "--tag", bad))
    evil = "O'Brien; DROP TABLE tags; --"
    out = rc.cli_case("12 tag name with quotes and SQL (stored as data)", db, "tag", "set", "--dataset", rc.DATASET,
                      "--item", item, "--tag", evil, expect_unchanged=False)
    ok = evil in set(Store(db).catalog(rc.DATASET)["tag"].dropna())
    out.saw = f"(succeeded) tag stored as given: {ok}"
    rows.append(out)
    rc.good_folder(work, "new")
    rows.append(rc.cli_case("21 import under an existing name", db, "import", str(work / "new"), "--name", rc.DATASET))
    counts = rc.table_counts(db)
    proc = rc.cli(db, "import", str(work / "new"), "--name", rc.DATASET, "--replace")
    backups = [n for n in Store(db).dataset_names(backups=True) if "@replaced-" in n]
    rows.append(Outcome("21 import --replace", "cli", f"(succeeded) backup kept as {backups[0] if backups else 'NONE'}",
                        proc.returncode, None, rc.rows_lost(counts, rc.table_counts(db)), rc.cli_works(db)))
    return rows


def exports(work: Path) -> list[Outcome]:
    import json

    import pandas as pd

    from testkit.faults import FORMULAS

    db = work / "formulas.duckdb"
    folder = work / "formulas"
    rc._write_npy_folder(folder, {"train": rc._good(len(FORMULAS), 1)})
    pd.DataFrame({"item_id": [f"i{i}" for i in range(len(FORMULAS))], "title": FORMULAS}).to_parquet(folder / "train" / "items.parquet")
    rc.cli(db, "import", str(folder), "--name", "demo")
    snap = rc.Snapshot.take(db)
    for fmt in ("csv", "parquet", "json"):
        rc.cli(db, "export", "--dataset", "demo", "--format", fmt, "--out", str(work / f"f.{fmt}"))
    same, lost = snap.compare()
    csv = pd.read_csv(work / "f.csv", dtype=str, keep_default_na=False)["title"].tolist()
    inert = all(s.startswith("'") == (o[0] in "=+-@\t\r\n") for s, o in zip(csv, FORMULAS))
    intact = [s.removeprefix("'") for s in csv] == FORMULAS
    others = list(pd.read_parquet(work / "f.parquet")["title"]) == FORMULAS and [
        r["title"] for r in json.loads((work / "f.json").read_text())] == FORMULAS
    return [Outcome("13 formula cells in an export", "cli",
                    f"(succeeded) CSV cells inert: {inert}; read back intact: {intact}; Parquet/JSON unchanged: {others}",
                    0, same, lost, True)]


def concurrency_and_schema(template: Path, work: Path) -> list[Outcome]:
    import subprocess

    import duckdb

    db = rc.copy_store(template, work / "lock.duckdb")
    from store import Store

    item = str(Store(db).catalog(rc.DATASET)["item_id"].iloc[0])
    snap = rc.Snapshot.take(db)
    holder = subprocess.Popen([sys.executable, "-c", "import sys,time,duckdb; c=duckdb.connect(sys.argv[1]); "
                               "print('holding', flush=True); time.sleep(60)", str(db)], stdout=subprocess.PIPE, text=True)
    holder.stdout.readline()
    proc = rc.cli(db, "tag", "set", "--dataset", rc.DATASET, "--item", item, "--tag", "x",
                  env=rc.cli_env(db, MMAE_STUDIO_LOCK_TIMEOUT="2"))
    holder.kill()
    holder.wait()
    same, lost = snap.compare()
    rows = [Outcome("14 another process holds the store (2 s wait)", "cli", rc.cli_error(proc), proc.returncode, same, lost,
                    rc.cli_works(db))]
    # the dashboard (Store with linger, as app.py opens it) decides while a CLI batch runs: nothing lost
    batch = subprocess.Popen(["bash", "-c", "; ".join(
        f"{sys.executable} -m mmae_core tag set --dataset {rc.DATASET} --item {item} --tag batch-{j} --curator cli"
        for j in range(6))], env=rc.cli_env(db), stderr=subprocess.DEVNULL)
    dash = Store(db, linger=1.0)
    n0, page = len(dash.history(rc.DATASET)), 0
    while batch.poll() is None:
        dash.accept(rc.DATASET, rc.MODEL, page % 5, "dashboard")
        page += 1
        time.sleep(0.2)
    hist = dash.history(rc.DATASET)
    cli_n = int((hist["curator"] == "cli").sum())
    rows.append(Outcome("14 CLI tag batch while the dashboard decides", "cli",
                        f"(succeeded) {cli_n} CLI + {page} dashboard decisions, {len(hist) - n0} in the audit trail",
                        batch.returncode, None, cli_n + page - (len(hist) - n0), True))
    newer = rc.copy_store(template, work / "newer.duckdb")
    con = duckdb.connect(str(newer))
    con.execute("INSERT INTO schema_version VALUES (99, now()::TIMESTAMP)")
    con.close()
    raw = newer.read_bytes()
    proc = rc.cli(newer, "datasets")
    rows.append(Outcome("15 newer schema version", "cli", rc.cli_error(proc), proc.returncode, newer.read_bytes() == raw, 0, True))
    notes = work / "notes.duckdb"
    notes.write_bytes(b"curator notes, not a database\n" * 40)
    proc = rc.cli(notes, "datasets")
    rows.append(Outcome("15 not a DuckDB file", "cli", rc.cli_error(proc), proc.returncode,
                        notes.read_bytes() == b"curator notes, not a database\n" * 40, 0, True))
    return rows


def crashes(template: Path, work: Path) -> list[Outcome]:
    rows = []
    folder = work / "crash-data"
    rc._write_npy_folder(folder / "big", {"train": rc._good(3000, 1, dims=(40, 30))})
    for point in ("import", "latents", "decision", "export"):
        db = rc.copy_store(template, work / f"crash-{point}.duckdb")
        item = str(__import__("store").Store(db).catalog(rc.DATASET)["item_id"].iloc[0])
        args = {
            "import": ["import", str(folder / "big"), "--name", "big"],
            "latents": ["train", "--dataset", rc.DATASET, "--epochs", "1", "--latent", "16", "--model-name", "m2"],
            "decision": ["tag", "set", "--dataset", rc.DATASET, "--item", item, "--tag", "lost"],
            "export": ["export", "--dataset", rc.DATASET, "--format", "csv", "--out", str(work / "crash.csv")],
        }[point]
        snap = rc.Snapshot.take(db)
        code, secs = rc.run_until_pause(db, point, args, work / "marker")
        same, lost = snap.compare()
        partial = (work / "crash.csv").exists() if point == "export" else False
        rows.append(Outcome(f"16 kill -9 during {point}", "cli",
                            f"killed (exit {code}); reopened: store opens, in-flight {point} absent"
                            + ("; no file under the final name" if point == "export" and not partial else ""),
                            None, same, lost, rc.cli_works(db, subprocess_check=True)))
    # the server during a training job
    from testkit.faults import CRASH_SERVER as SERVER
    import subprocess

    db = rc.copy_store(template, work / "crash-job.duckdb")
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(db)], env=rc.cli_env(db), stdout=subprocess.PIPE, text=True)
    job = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    from studio.jobs import JobManager
    from store import Store

    JobManager(Store(db))
    rec = Store(db).job(job)
    rows.append(Outcome("16 kill -9 of the server during training", "job", f"job {rec['status']}: {rec['message']}",
                        None, None, 0, rc.cli_works(db)))
    # a full disk
    db = rc.copy_store(template, work / "full.duckdb")
    rc._write_npy_folder(work / "huge", {"train": rc._good(20_000, 1, dims=(250, 250))})
    for mb in (1, 16):
        rows.append(rc.cli_case(f"17 disk full during import ({mb} MB left)", db, "import", str(work / "huge"),
                                "--name", "huge", preexec=rc.disk_limit(db.stat().st_size + mb * 2**20)))
    (work / "old.csv").write_text("yesterday\n")
    out = rc.cli_case("17 disk full during export", db, "export", "--dataset", rc.DATASET, "--format", "csv",
                      "--out", str(work / "old.csv"), preexec=rc.disk_limit(4096))
    out.note = "old file intact" if (work / "old.csv").read_text() == "yesterday\n" else "OLD FILE DAMAGED"
    rows.append(out)
    return rows


def limits_and_jobs(template: Path, work: Path) -> list[Outcome]:
    from streamlit import config

    import numpy as np

    from testkit.faults import checksum_without_jobs

    db = rc.copy_store(template, work / "limits.duckdb")
    big = rc._npy(np.random.default_rng(0).normal(size=(40_000, 10)).astype(np.float32))
    old = config.get_option("server.maxUploadSize")
    config.set_option("server.maxUploadSize", 1)
    try:
        rows = [rc.page_upload("18 upload over the size limit", db, work / "data18", [("train_image.npy", big), ("train_text.npy", big)])]
    finally:
        config.set_option("server.maxUploadSize", old)
    rc.good_folder(work, "outside")
    rows += rc.page_imports([("18 server folder outside the data root", str(work / "outside"))], db, work / "data18")
    from mmae_core.config import preset
    from studio.jobs import JobManager
    from store import Store

    before = checksum_without_jobs(db)
    mgr = JobManager(Store(db))
    view = mgr.wait(mgr.start_training(rc.DATASET, preset("paper", epochs=3, latent=16, align_weight=1e39), "x"), 600)
    rows.append(Outcome("19 training diverges (NaN loss)", "job", f"job {view.status}: {view.message}", None,
                        checksum_without_jobs(db) == before, 0, rc.cli_works(db)))
    before = checksum_without_jobs(db)
    res = run_oom_server(db)
    rows.append(Outcome("20 out of memory in a job", "job", f"job {res['huge'][0]}: {res['huge'][1]}", None, None, 0,
                        res["after"][0] == "done", note=f"next job {res['after'][0]}; {res['reads']} reads served meanwhile"))
    rows.append(rc.cli_case("20 out of memory (CLI train)", db, "train", "--dataset", rc.DATASET, "--epochs", "1",
                            "--latent", "20000000", preexec=address_limit(3.0)))
    return rows


def browser_sessions_row() -> str:
    """Three curators in three Chromium sessions against ``streamlit run app.py``, each accepting two
    proposals and moving one item at the same moment. The test asserts every one of the 9 decisions in
    the store (curator, cluster, items) and that a session sees the others' on its next rerun; the
    benchmark runs that same test rather than a copy of it."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/browser/test_concurrent_curators.py"], cwd=ROOT, capture_output=True, text=True)
    last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    result = "passed: all 9 in the store, none lost" if proc.returncode == 0 else f"FAILED: {last}"
    return f"| 3 | 9 (3 x: accept, accept, move an item) | {result} | {time.perf_counter() - t0:.0f} |"


def table(rows: list[Outcome], strip: str = "") -> str:
    """Markdown; the temporary folder's path is shown as ``…`` so the sentences fit."""
    head = "| case | surface | what the user saw | exit | store unchanged | rows lost | works after |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for o in rows:
        r = o.row()
        saw = o.saw.replace(strip, "…") if strip else o.saw
        saw = (saw if len(saw) <= 150 else saw[:147] + "...").replace("|", "\\|").replace("\n", " ")
        if o.note:
            saw += f" ({o.note})"
        lines.append(f"| {r['case']} | {r['surface']} | {saw} | {r['exit']} | {r['store unchanged']} | {r['rows lost']} | {r['works after']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--decisions", type=int, default=500)
    ap.add_argument("--latency-seconds", type=float, default=60.0)
    ap.add_argument("--quick", action="store_true", help="8 x 50 decisions and 15 s of latency")
    ap.add_argument("--only", choices=("matrix", "load", "adversarial"), default=None,
                    help="adversarial: only the matrix rows 22-31 (links, special files, poisoned checkpoints, ...)")
    ap.add_argument("--no-browser", action="store_true", help="skip the 3 real browser sessions (needs /usr/bin/chromium)")
    args = ap.parse_args()
    if args.quick:
        args.decisions, args.latency_seconds = 50, 15.0
    import logging

    logging.getLogger("streamlit").setLevel(logging.ERROR)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory(prefix="mmae-reliability-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        template = rc.build_template(work / "template")
        if args.only != "load":
            rows: list[Outcome] = []
            parts = () if args.only == "adversarial" else (inputs, checkpoints_and_k, names_and_replace,
                                                          concurrency_and_schema, crashes, limits_and_jobs)
            for part in parts:
                sub = work / part.__name__
                sub.mkdir()
                rows += part(template, sub)
            if args.only != "adversarial":
                sub = work / "exports"
                sub.mkdir()
                rows += exports(sub)
            rows += [o for o, _ in rc.adversarial(template, work / "adversarial")]
            rows.sort(key=lambda o: (int(o.case.split()[0]), o.surface))
            print("\n### Fault and bad-input matrix\n")
            print(table(rows, strip=str(work)))
            bad = [o for o in rows if o.unchanged is False or o.rows_lost or not o.works_after
                   or re.search(r"\b[A-Z]{3,}\b", o.note)  # a builder's flag (e.g. DEVICE REPLACED)
                   or (not o.saw.startswith(("(succeeded)", "(skipped", "killed", "job", "payload")) and not o.sentence_ok)]
            print(f"\n{len(rows)} rows; {len(bad)} break a promise" + (": " + "; ".join(o.case for o in bad) if bad else "."))
        if args.only not in ("matrix", "adversarial"):
            print(f"\n### Load (load average {os.getloadavg()[0]:.1f})\n")
            db = rc.copy_store(template, work / "load.duckdb")
            run = rc.curators(db, args.threads, args.decisions)
            print("| curators x decisions | committed | refused with a sentence | in the audit trail | lost | tags = serial replay | seconds | bugs |")
            print("|---|---|---|---|---|---|---|---|")
            print(f"| {args.threads} x {args.decisions} | {run.decisions} | {run.refused} | {run.in_trail} | "
                  f"{run.decisions - run.in_trail} | {'yes' if run.replay_equal else 'NO'} | {run.seconds:.1f} | {len(run.bugs)} |")
            db = rc.copy_store(template, work / "latency.duckdb")
            lat = rc.decisions_beside_training(db, args.latency_seconds)
            print("\n| decisions beside training + evaluation | p50 s | p95 s | max s | epochs trained meanwhile | evaluations meanwhile |")
            print("|---|---|---|---|---|---|")
            print(f"| {lat.decisions} | {lat.p50:.3f} | {lat.p95:.3f} | {lat.max:.3f} | {lat.train_epochs} | {lat.evaluations} |")
            if not args.no_browser:
                print("\n| real browser sessions deciding at once | decisions checked in the store | result | seconds |")
                print("|---|---|---|---|")
                print(browser_sessions_row())
        print(f"\ntotal {time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
