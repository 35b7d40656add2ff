"""Streaming import of Parquet tables (row group by row group) and zips (member by member): the same
features and the same refusals as a whole read, nothing stored on a refusal, a full disk refused
before the import or rolled back during it, and progress on the Data page."""
from __future__ import annotations

import resource
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmae_core.data import lazy
from mmae_core.data.features import import_bytes, load_path
from mmae_core.data.stream import Staged
from mmae_core.errors import DataError, StoreError
from store import Store, feature_files
from testkit import faults as rc

DIMS = (("audio", 12), ("image", 7))


def _arrays(n: int = 900, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = {}
    for split, m in (("train", n), ("test", n // 3)):
        out[split] = {mod: rng.normal(size=(m, d)).astype(np.float32) for mod, d in DIMS}
        out[split]["audio"][5] = np.nan  # a missing modality: allowed
    return out


def _ids(split: str, n: int) -> list[str]:
    return [f"{split}-{i:05d}" for i in range(n)]


def _parquet(path: Path, split: str, x: np.ndarray, rows_per_group: int = 100, order: np.ndarray | None = None) -> None:
    ids = np.array(_ids(split, len(x)), dtype=object)
    if order is not None:
        ids, x = ids[order], x[order]
    table = pa.table({"item_id": pa.array(ids.tolist()), **{f"f{j}": x[:, j] for j in range(x.shape[1])}})
    pq.write_table(table, path, row_group_size=rows_per_group)


def _write(root: Path, arrays, kind: str, shuffle: bool = False) -> Path:
    for split, mods in arrays.items():
        (root / split).mkdir(parents=True)
        for mod, x in mods.items():
            if kind == "npy":
                np.save(root / split / f"{mod}.npy", x)
            else:
                order = np.random.default_rng(1).permutation(len(x)) if shuffle else None
                _parquet(root / split / f"{mod}.parquet", split, x, order=order)
        if kind == "npy":
            np.save(root / split / "ids.npy", np.array(_ids(split, len(mods["audio"]))))
        elif shuffle:  # the split's order comes from the items table; the tables list rows in another order
            (root / split / "items.csv").write_text("item_id\n" + "\n".join(_ids(split, len(mods["audio"]))) + "\n")
    return root


def _zip(folder: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(folder).as_posix())
    return out


def _assert_same(store: Store, name: str, arrays) -> None:
    back = store.load_dataset(name)
    for split, mods in arrays.items():
        assert back.splits[split].item_ids.tolist() == _ids(split, len(mods["audio"]))
        for mod, x in mods.items():
            np.testing.assert_array_equal(back.splits[split].features[mod], x)


def _temp_folders(db: Path) -> list[str]:
    base = feature_files.root(db)
    return [p.name for p in base.iterdir() if p.name.startswith(feature_files.TMP)] if base.exists() else []


@pytest.mark.parametrize("shuffle", [False, True], ids=["same order", "rows in another order"])
def test_parquet_by_row_groups_stores_what_the_same_data_as_npy_stores(tmp_path, monkeypatch, shuffle):
    monkeypatch.setattr(lazy, "WINDOW_BYTES", 2048)  # many batches at this size
    arrays = _arrays()
    src = _write(tmp_path / "pq", arrays, "parquet", shuffle=shuffle)
    assert pq.ParquetFile(src / "train" / "audio.parquet").num_row_groups == 9
    store = Store(tmp_path / "s.duckdb")
    with store.staging() as stage:
        fs = load_path(src, "pq", stream=True, stage=stage)
        assert isinstance(fs.splits["train"].features["audio"], Staged)
        assert len(list(stage.iterdir())) == 4  # one converted file per split and modality, no leftovers
        store.add_dataset(fs)
        assert fs.summary().equals(load_path(_write(tmp_path / "npy", arrays, "npy"), "npy").summary())
    assert not _temp_folders(store.path)
    _assert_same(store, "pq", arrays)
    assert import_bytes(src) == sum(x.size * 4 for mods in arrays.values() for x in mods.values())


def test_a_bad_value_in_the_last_row_group_gets_the_whole_read_sentence_and_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(lazy, "WINDOW_BYTES", 2048)
    arrays = _arrays()
    arrays["train"]["image"][890, 2] = np.inf  # in the last of nine row groups
    src = _write(tmp_path / "pq", arrays, "parquet")
    with pytest.raises(DataError) as whole:
        load_path(src, "w")
    assert "row 890, column 2" in str(whole.value)
    db = tmp_path / "s.duckdb"
    Store(db)
    before = rc.Snapshot.take(db)
    proc = rc.cli(db, "import", str(src), "--name", "bad")
    assert proc.returncode == 1 and rc.cli_error(proc) == str(whole.value), proc.stderr
    assert before.compare() == (True, 0)
    assert not _temp_folders(db) and Store(db).dataset_names() == []


def test_a_zip_is_streamed_member_by_member_into_the_store(tmp_path, monkeypatch):
    monkeypatch.setattr(lazy, "WINDOW_BYTES", 2048)
    arrays = _arrays()
    mixed = _write(tmp_path / "npy", arrays, "npy")
    _parquet(mixed / "train" / "extra.parquet", "train", arrays["train"]["audio"][:, :3])  # not part of the layout below
    (mixed / "train" / "extra.parquet").unlink()
    store = Store(tmp_path / "s.duckdb")
    for kind in ("npy", "parquet"):
        folder = mixed if kind == "npy" else _write(tmp_path / "pq", arrays, "parquet")
        archive = _zip(folder, tmp_path / f"{kind}.zip")
        seen: list[str] = []
        with store.staging() as stage:
            real = feature_files.shutil.copyfileobj

            def copy(src, dst, *a, real=real):  # every extraction happens inside the staging folder
                seen.append(getattr(dst, "name", ""))
                return real(src, dst, *a)

            monkeypatch.setattr(feature_files.shutil, "copyfileobj", copy)
            fs = load_path(archive, kind, stream=True, stage=stage)
            monkeypatch.undo()
            monkeypatch.setattr(lazy, "WINDOW_BYTES", 2048)
            assert all(isinstance(x, Staged) for sp in fs.splits.values() for x in sp.features.values())
            assert sorted(p.suffix for p in stage.iterdir()) == [".npy"] * 4  # extracted members are gone
            assert all(str(stage) in s for s in seen if s.endswith(".parquet"))
            store.add_dataset(fs)
        _assert_same(store, kind, arrays)


def test_a_bad_value_in_a_zipped_npy_is_refused_like_a_whole_read(tmp_path, monkeypatch):
    monkeypatch.setattr(lazy, "WINDOW_BYTES", 2048)
    arrays = _arrays()
    arrays["train"]["audio"][880, 0] = np.nan
    archive = _zip(_write(tmp_path / "npy", arrays, "npy"), tmp_path / "a.zip")
    with pytest.raises(DataError) as whole:
        load_path(archive, "w")
    store = Store(tmp_path / "s.duckdb")
    with pytest.raises(DataError) as streamed, store.staging() as stage:
        load_path(archive, "s", stream=True, stage=stage)
    assert str(streamed.value) == str(whole.value) and "row 880" in str(whole.value)
    assert not _temp_folders(store.path)


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_disk_that_fills_while_a_parquet_is_converted_leaves_the_store_as_it_was(tmp_path):
    arrays = _arrays(n=60_000)  # 2.9 MB of features in train/audio, past the limits below
    src = _write(tmp_path / "pq", arrays, "parquet")
    db = tmp_path / "s.duckdb"
    Store(db)
    for headroom in (1, 2):  # MB each file may grow: the conversion fails early or midway
        out = rc.cli_case(f"disk full while converting a Parquet (+{headroom} MB)", db, "import", str(src), "--name", "big",
                          preexec=rc.disk_limit(db.stat().st_size + headroom * 2**20))
        assert out.exit_code == 1 and out.sentence_ok and "disk is full" in out.saw, out
        assert out.unchanged and out.rows_lost == 0, out
    assert not _temp_folders(db) and Store(db).dataset_names() == []


def test_an_archive_too_large_for_the_disk_is_refused_before_the_import_starts(tmp_path):
    """A 96 MiB tmpfs in a private mount namespace is the disk; the archive needs more than is free."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    arrays = {"train": {"audio": np.random.default_rng(0).normal(size=(9000, 1024)).astype(np.float32)}}
    src = _write(tmp_path / "pq", arrays, "parquet")
    disk = tmp_path / "disk"
    disk.mkdir()
    db = disk / "s.duckdb"
    py = sys.executable
    check = ("from store import Store, feature_files as f; import sys; s = Store(sys.argv[1]); "
             "print('DATASETS', s.dataset_names(), 'LEFT', sorted(p.name for p in f.root(s.path).iterdir()) if f.root(s.path).exists() else [])")
    script = (f"mount -t tmpfs -o size=96m tmpfs {disk} && {py} -c 'from store import Store; Store(\"{db}\")' && "
              f"{py} -m mmae_core import {src} --name big --db {db}; echo EXIT $?; {py} -c \"{check}\" {db}")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], env=rc.cli_env(db), capture_output=True, text=True, timeout=300)
    if "EXIT" not in proc.stdout:
        pytest.skip(f"no private tmpfs mount here: {proc.stderr.strip()[-200:]}")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert "EXIT 1" in proc.stdout and len(errors) == 1, proc.stderr
    assert "needs about" in errors[0] and "GiB is free" in errors[0] and "nothing was imported" in errors[0]
    assert "reading" in proc.stderr and "stored" not in proc.stderr  # refused before a byte was converted
    assert "DATASETS [] LEFT []" in proc.stdout, proc.stdout


def test_the_data_page_imports_a_parquet_folder_with_a_progress_bar(empty_store, app, monkeypatch):
    arrays = _arrays()
    _write(empty_store.data_root / "pq", arrays, "parquet")
    from tests.test_app_data import import_from_folder, no_bug

    at = import_from_folder(app("data"), "pq", name="streamed")
    no_bug(at)
    assert not at.error, [e.value for e in at.error]
    store = Store(empty_store.db)
    _assert_same(store, "streamed", arrays)
    assert not _temp_folders(store.path)


def test_the_data_page_shows_the_progress_bar_and_one_sentence_when_the_disk_fills(empty_store, app):
    arrays = {"train": {"audio": np.random.default_rng(0).normal(size=(4000, 300)).astype(np.float32)}}
    _write(empty_store.data_root / "big", arrays, "npy")  # .npy: streamed from the folder, copied by the store
    at = app("data")
    Store(empty_store.db)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 * 2**20 + empty_store.db.stat().st_size, hard))
    try:
        from tests.test_app_data import import_from_folder, no_bug

        import_from_folder(at, "big", name="big")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    no_bug(at)
    assert len(at.get("progress")) == 1, "the import shows a progress bar"
    assert [e.value for e in at.error if "disk is full" in e.value], [e.value for e in at.error]
    assert Store(empty_store.db).dataset_names() == [] and not _temp_folders(empty_store.db)
