"""Matrix cases 22-31, from an adversarial pass: links out of the data root, special files and links
as output paths, ``train --out`` checked before training, poisoned and oversized checkpoints, foreign
and damaged store files, npz bombs, formulas behind blanks, and the smaller inconsistencies (a
mistyped ``--db``, a read-only mount, reserved names, control characters in ids, JSON infinities,
where a ``--replace`` backup went). Each through the path a user takes (the Data page for links, the
CLI for the rest): one sentence naming the problem, the store (or the file) unchanged, nothing lost.
The inputs and checks are built in ``testkit.faults``; the benchmark prints the same rows."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from testkit import faults as rc


def check(rows: rc.Expect) -> None:
    for out, expected in rows:
        assert expected in out.saw, out
        if out.saw.startswith("(succeeded)"):
            assert out.exit_code in (None, 0), out
        else:
            assert out.sentence_ok, out
        assert out.unchanged in (True, None) and out.rows_lost == 0 and out.works_after, out
        assert not re.search(r"\b[A-Z]{3,}\b", out.note), out  # the builders flag a broken promise in capitals


def test_links_out_of_the_data_root_are_refused_on_the_data_page(template: Path, tmp_path: Path) -> None:
    rows = rc.symlink_escapes(template, tmp_path)
    check(rows)
    assert all(o.unchanged is True for o, _ in rows)
    assert "incoming" not in __import__("store").Store(tmp_path / "links.duckdb").dataset_names()


def test_special_files_links_and_modes_for_export_and_train_out(template: Path, tmp_path: Path) -> None:
    rows = rc.special_outputs(template, tmp_path)
    check(rows)
    by_case = {o.case: o for o, _ in rows}
    assert by_case["24 train --out a folder"].exit_code == 1
    # the refused runs registered nothing, so the same --model-name then trains and is written
    assert by_case["24 train --out, rerun with a good path"].exit_code == 0


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_poisoned_and_oversized_checkpoints_are_refused_before_building(template: Path, tmp_path: Path) -> None:
    rows = rc.hostile_checkpoints(template, tmp_path)
    check(rows)


def test_foreign_damaged_missing_and_read_only_stores(template: Path, tmp_path: Path) -> None:
    rows = rc.foreign_stores(template, tmp_path)
    for out, expected in rows:
        if out.saw.startswith("(skipped"):
            continue
        check([(out, expected)])
    assert "remote" not in rows[0][0].saw


def test_extension_autoload_is_off_on_every_connection(template: Path, tmp_path: Path) -> None:
    from store import Store

    with Store(rc.copy_store(template, tmp_path / "s.duckdb")).reader() as con:
        got = con.execute("SELECT current_setting('autoinstall_known_extensions'), "
                          "current_setting('autoload_known_extensions')").fetchall()[0]
    assert got == (False, False)


def test_hostile_data_exports_and_names(template: Path, tmp_path: Path) -> None:
    rows = rc.hostile_data(template, tmp_path)
    check(rows)
    saw = {o.case: o.saw for o, _ in rows}
    assert "memory" not in saw["30 .npy header overstating its size"]


def test_train_out_on_a_full_disk_says_the_model_is_registered_and_where_to_get_it(template: Path, tmp_path: Path) -> None:
    """The checkpoint file is written after the model is registered: when the disk under ``--out`` is
    full, the sentence says the model is in the store (it is) and how to get its checkpoint. A 16 KiB tmpfs in a private mount namespace is the full disk."""
    import shutil
    import subprocess
    import sys

    from store import Store

    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    db = rc.copy_store(template, tmp_path / "studio.duckdb")
    full = tmp_path / "full"
    full.mkdir()
    script = (f"mount -t tmpfs -o size=16k tmpfs {full} && exec {sys.executable} -m mmae_core train --dataset {rc.DATASET} "
              f"--preset paper --epochs 1 --latent 16 --model-name on-full-disk --out {full / 'model.pt'} --db {db}")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], env=rc.cli_env(db), capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0 and "error:" not in proc.stderr:
        pytest.skip(f"no private tmpfs mount here: {proc.stderr.strip()[-200:]}")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(errors) == 1, proc.stderr
    assert "was trained and registered, but its checkpoint file was not written" in errors[0]
    assert "download it from the Train page" in errors[0]
    assert "on-full-disk" in set(Store(db).list_models(rc.DATASET)["name"])
