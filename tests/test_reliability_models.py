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

from testkit import faults as rc
from testkit.faults import CodePayload, bad_checkpoints, checksum_without_jobs, OOM_SERVER as SERVER, run_oom_server, address_limit  # noqa: F401
from testkit.data import make_featureset






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


