"""Matrix cases 9-11, 19 and 20: checkpoints that do not fit or carry code, impossible k, a training
run that diverges and one that runs out of memory. Through the CLI, the pages and the job manager the
server runs; each case: one sentence, the store unchanged, the process still working."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mmae_core.model.checkpoint import save_checkpoint
from mmae_core.config import preset
from studio.jobs import JobManager
from store import Store

from . import reliability_cases as rc
from .test_store_helpers import make_featureset


class CodePayload:
    """Unpickling this runs ``touch marker`` (the classic pickle attack)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def bad_checkpoints(db: Path, folder: Path, marker: Path) -> dict[str, tuple[str, Path, str]]:
    """{key: (case label, file, what the sentence must name)}."""
    import pickle

    from mmae_core.model.train import train

    good = Store(db).model_checkpoint(rc.DATASET, rc.MODEL)
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


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoints_that_do_not_fit_or_carry_code_cli_and_page(db: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    cases = bad_checkpoints(db, tmp_path, marker)
    for label, path, expected in cases.values():
        out = rc.cli_case(label, db, "load-model", str(path), "--dataset", rc.DATASET, "--model-name", "loaded")
        assert out.exit_code == 1 and out.sentence_ok, out
        assert expected in out.saw and out.unchanged and out.rows_lost == 0 and out.works_after, out
    assert "image is 6-d in the model but 50-d in the dataset" in rc.cli_error(
        rc.cli(db, "load-model", str(cases["dataset"][1]), "--dataset", rc.DATASET))
    with rc.page_env(db, tmp_path / "data"):
        at = rc.open_page("train")
        for label, path, expected in cases.values():
            snap = rc.Snapshot.take(db)
            at.file_uploader(key="train_ckpt").set_value((path.name, path.read_bytes(), "application/octet-stream")).run()
            rc.by_label(at.button, "Register the checkpoint").click().run()
            saw = rc.page_saw(at)
            assert rc.one_sentence(saw) and expected in saw, (label, saw)
            assert snap.compare() == (True, 0), label
        assert rc.page_works(at, "train")
    assert not marker.exists()
    # the payload is live: unpickling it unsafely does create the file, so the refusals above mean something
    import pickle

    pickle.loads(cases["bare"][1].read_bytes())
    assert marker.exists()


def test_impossible_k_and_splits_cli_and_page(db: Path, tmp_path: Path) -> None:
    n_test = Store(db).load_dataset(rc.DATASET).splits["test"].n
    cases = [
        ("11 k larger than the items", ["evaluate", "--dataset", rc.DATASET, "--k", f"5,{n_test + 1}"], "larger than"),
        ("11 k < 2", ["evaluate", "--dataset", rc.DATASET, "--k", "1"], "at least 2"),
        ("11 empty k grid", ["evaluate", "--dataset", rc.DATASET, "--k", ","], "empty"),
        ("11 propose k larger than the items", ["propose", "--dataset", rc.DATASET, "--k", str(n_test + 1)], str(n_test)),
        ("11 propose k < 2", ["propose", "--dataset", rc.DATASET, "--k", "1"], "k"),
        ("11 split the dataset lacks", ["evaluate", "--dataset", rc.DATASET, "--split", "validation", "--k", "5"], "validation"),
    ]
    for label, args, expected in cases:
        out = rc.cli_case(label, db, *args)
        assert out.exit_code == 1 and out.sentence_ok and expected in out.saw, out
        assert out.unchanged and out.rows_lost == 0 and out.works_after, out
    # an empty split cannot even be imported: a file of zero rows is refused
    empty = tmp_path / "zero"
    rc._write_npy_folder(empty, {"train": {k: v[:0] for k, v in rc._good(5, 1).items()}})
    out = rc.cli_case("11 empty split", db, "import", str(empty), "--name", "zero")
    assert out.exit_code == 1 and out.sentence_ok and out.unchanged and out.works_after, out
    with rc.page_env(db, tmp_path / "data"):
        at = rc.open_page("compare")
        for text, expected in [(f"5, {n_test + 1}", "larger than"), ("1", "at least 2"), ("", "empty")]:
            snap = rc.Snapshot.take(db)
            at.text_input(key="compare_k").input(text).run()
            saw = rc.page_saw(at)
            assert rc.one_sentence(saw) and expected in saw, (text, saw)
            assert snap.compare() == (True, 0)
        assert rc.page_works(at, "compare")


def checksum_without_jobs(db: Path) -> str:
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


def test_a_diverging_job_stops_and_the_train_page_says_why(db: Path, tmp_path: Path) -> None:
    store = Store(db)
    before = checksum_without_jobs(db)
    mgr = JobManager(store, throttle_s=0.2)
    # no valid learning rate blows a BatchNorm MMAE up; an absurd alignment weight does (NaN in epoch 1)
    job = mgr.start_training(rc.DATASET, preset("paper", epochs=3, latent=16, align_weight=1e39), "diverges")
    view = mgr.wait(job, timeout=300)
    assert view.status == "failed" and "diverged at epoch 1" in view.message and rc.one_sentence(view.message), view
    assert checksum_without_jobs(db) == before
    with rc.page_env(db, tmp_path / "data"):
        at = rc.open_page("train")
        shown = [e for e in rc.page_errors(at) if "diverged" in e]
        assert shown and "failed" in shown[0], rc.page_errors(at)
        assert not at.exception
    again = mgr.start_training(rc.DATASET, preset("paper", epochs=1, latent=16), "after-divergence")
    assert mgr.wait(again, timeout=300).status == "done"  # the manager keeps serving


SERVER = textwrap.dedent("""
    import json, resource, sys, threading, time
    from store import Store
    from mmae_core.config import preset
    from studio.jobs import JobManager
    store = Store(sys.argv[1])
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
    proc = subprocess.run([sys.executable, "-c", SERVER, str(db), str(limit_gb)], env=rc.cli_env(db),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_out_of_memory_in_a_job_is_a_sentence_and_the_server_keeps_serving(db: Path, tmp_path: Path) -> None:
    before = checksum_without_jobs(db)
    res = run_oom_server(db)
    status, message = res["huge"]
    assert status == "failed" and "ran out of memory" in message and rc.one_sentence(message), res
    assert res["after"][0] == "done", res  # the next job of the same process trains and registers
    assert res["reads"] > 0  # the other session was served meanwhile
    models = set(Store(db).list_models(rc.DATASET)["name"])
    assert "huge" not in models and "after-oom" in models
    with rc.page_env(db, tmp_path / "data"):
        at = rc.open_page("train")
        earlier = [df for df in (d.value for d in at.dataframe) if "message" in getattr(df, "columns", [])]
        shown = [m for df in earlier for m in df["message"].astype(str)]
        assert any("ran out of memory" in m for m in shown), shown  # the earlier-jobs table says why
        assert not at.exception
    out = rc.cli_case("20 out of memory (CLI train)", db, "train", "--dataset", rc.DATASET, "--epochs", "1",
                      "--latent", "20000000", preexec=address_limit(3.0))
    assert out.exit_code == 1 and out.sentence_ok and "ran out of memory" in out.saw, out
    assert out.unchanged and out.works_after
    assert before != checksum_without_jobs(db)  # (the model after-oom was added above)


def address_limit(gb: float):
    import resource

    def apply() -> None:
        limit = int(gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply
