"""Matrix cases 1-8 and 18: bad files through the store, the CLI (``python -m mmae_core import``) and
the Data page. Each: one sentence naming the problem, the store's checksum unchanged, and the store (or
the page's session) still working afterwards. The inputs are built in ``testkit.faults``."""
from __future__ import annotations

from pathlib import Path

import pytest

from mmae_core.data.features import load_files, load_path

from testkit import faults as rc

# what the sentence must mention, per bad input
EXPECTED = {
    "rows": "rows", "dims": "dimension", "nan": "row 4", "inf": "row 7", "empty": "empty", "cut_npy": "truncated",
    "cut_parquet": "image.parquet", "cut_zip": "cut.zip", "pickle_npy": "Python objects", "pickle_npz": "Python objects",
    "slip": "outside its folder", "bomb": "zip bomb", "text_col": "f1", "dup_id": "i0", "no_id": "item_id",
    "labels": "labels", "items": "items",
}
PAGE_KEYS = ("rows", "dims", "nan", "cut_zip", "pickle_npz", "slip", "bomb", "text_col", "labels")  # each case number


@pytest.fixture(scope="module")
def world(template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One store copy and data root for the module: every case must leave the store as it found it."""
    folder = tmp_path_factory.mktemp("reliability-inputs")
    db = rc.copy_store(template, folder / "studio.duckdb")
    root = folder / "data"
    root.mkdir()
    pwned = folder / "pwned"
    return {"db": db, "root": root, "pwned": pwned, "inputs": rc.make_bad_inputs(root, pwned)}


def check(out: rc.Outcome, expected: str) -> None:
    assert out.sentence_ok, out
    assert expected.lower() in out.saw.lower(), out
    assert out.unchanged is True and out.rows_lost == 0, out
    assert out.works_after, out


@pytest.mark.parametrize("key", list(EXPECTED))
def test_bad_input_is_refused_by_the_store_path_and_the_cli(world: dict, key: str) -> None:
    label, rel = world["inputs"][key]
    path = world["root"] / rel

    def store_import() -> None:
        from store import Store

        Store(world["db"]).add_dataset(load_path(path, "incoming"))

    check(rc.store_case(label, world["db"], store_import), EXPECTED[key])
    out = rc.cli_case(label, world["db"], "import", str(path), "--name", "incoming")
    assert out.exit_code == 1, out
    check(out, EXPECTED[key])
    assert not world["pwned"].exists()  # the pickles were never unpickled
    assert not (world["root"].parent / "escaped.npy").exists() and not (world["root"] / "escaped.npy").exists()


def test_bad_input_on_the_data_page(world: dict) -> None:
    """One session tries each bad input in turn (one per case number), as a curator fixing files would."""
    outs = rc.page_imports([world["inputs"][k] for k in PAGE_KEYS], world["db"], world["root"])
    for key, out in zip(PAGE_KEYS, outs):
        check(out, EXPECTED[key])
    assert not world["pwned"].exists()


def test_a_whole_row_of_nan_is_a_missing_modality_not_an_error(template: Path, tmp_path: Path) -> None:
    import numpy as np

    db = rc.copy_store(template, tmp_path / "s.duckdb")
    x = rc._good(20, 3)
    x["image"][4, :] = np.nan
    rc._write_npy_folder(tmp_path / "missing", {"train": x})
    proc = rc.cli(db, "import", str(tmp_path / "missing"), "--name", "missing")
    assert proc.returncode == 0, proc.stderr
    assert "items missing a modality: image 1" in proc.stderr
    assert rc.cli_works(db, subprocess_check=True)


def test_upload_over_the_size_limit_is_refused_before_reading(template: Path, tmp_path: Path) -> None:
    from streamlit import config

    import numpy as np

    db = rc.copy_store(template, tmp_path / "s.duckdb")
    big = rc._npy(np.random.default_rng(0).normal(size=(40_000, 10)).astype(np.float32))  # 1.6 MB
    small = rc._npy(np.zeros((40_000, 2), np.float32))
    files = [("train_image.npy", big), ("train_text.npy", small)]
    with pytest.raises(Exception, match="more than the 1.0 MB upload limit"):
        load_files(files, "x", max_upload_bytes=2**20)
    old = config.get_option("server.maxUploadSize")
    config.set_option("server.maxUploadSize", 1)
    try:
        out = rc.page_upload("18 upload over the size limit", db, tmp_path / "data", files)
    finally:
        config.set_option("server.maxUploadSize", old)
    check(out, "upload limit")
    assert "data root" in out.saw  # says what to do instead


def test_server_folder_outside_the_data_roots_is_refused(template: Path, tmp_path: Path) -> None:
    db = rc.copy_store(template, tmp_path / "s.duckdb")
    outside = tmp_path / "elsewhere"
    rc.good_folder(tmp_path, "elsewhere")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "link").symlink_to(outside)
    typed = [str(outside), "../elsewhere", "link", "/etc"]
    for out in rc.page_imports([("18 server folder outside the data root", t) for t in typed], db, tmp_path / "data"):
        check(out, "outside the data root")
