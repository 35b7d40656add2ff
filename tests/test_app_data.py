"""The Data page: import from a server folder and from an upload, the validation report, replace, delete."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mmae_core.errors import DataError
from ui.widgets import default_name, resolve_server_path, uploaded_files


def npz_bytes(n: int, seed: int, dims=(6, 4), labels: bool = True, nan_rows: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((n, dims[0])).astype(np.float32)
    text = rng.standard_normal((n, dims[1])).astype(np.float32)
    text[:nan_rows] = np.nan  # whole missing rows: items without text
    arrays = {"image": image, "text": text}
    if labels:
        arrays["labels"] = np.array([f"class{i % 3}" for i in range(n)])
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def write_folder(root: Path, name: str = "mini", n_train: int = 40, n_test: int = 12, **kw) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "train.npz").write_bytes(npz_bytes(n_train, 1, **kw))
    (folder / "test.npz").write_bytes(npz_bytes(n_test, 2, **kw))
    return folder


def by_label(items, label: str):
    return next(x for x in items if x.label == label)


def import_from_folder(at, path: str, name: str | None = None):
    at.radio(key="data_source").set_value("A folder on the server").run()
    at.text_input(key="data_path").input(path).run()
    if name is not None:
        by_label(at.text_input, "Dataset name").input(name).run()
    by_label(at.button, "Import").click().run()
    return at


def no_bug(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_data_page_with_an_empty_store_says_what_to_do(empty_store, app):
    at = app("data")
    no_bug(at)
    assert any("No dataset yet" in i.value for i in at.info)
    assert by_label(at.button, "Import").disabled  # nothing chosen yet


def test_import_a_server_folder_registers_it_and_reports_per_modality(empty_store, app):
    write_folder(empty_store.data_root, nan_rows=3)
    at = import_from_folder(app("data"), "mini")
    no_bug(at)
    assert not at.error, [e.value for e in at.error]
    store = empty_store.store()
    assert store.dataset_names() == ["mini"]
    fs = store.load_dataset("mini")
    assert {s: sp.n for s, sp in fs.splits.items()} == {"train": 40, "test": 12}
    assert fs.modalities == {"image": 6, "text": 4}
    assert at.session_state["dataset"] == "mini" and at.sidebar.selectbox[0].value == "mini"
    assert any("Imported dataset 'mini'" in s.value for s in at.success)
    report = at.dataframe[0].value  # the validation report's per-modality summary
    assert set(report["modality"]) == {"image", "text"}
    assert int(report[(report["split"] == "train") & (report["modality"] == "text")]["missing rows"].iloc[0]) == 3
    assert any("'aligned' preset" in w.value for w in at.warning)  # missing modalities


def test_bad_data_and_paths_outside_the_root_are_one_sentence_and_write_nothing(demo_store, app, tmp_path):
    bad = demo_store.data_root / "bad"
    bad.mkdir(parents=True)
    (bad / "train_image.npy").write_bytes(b"")  # an empty file
    np.save(bad / "train_text.npy", np.zeros((5, 3), dtype=np.float32))
    outside = tmp_path / "elsewhere"
    write_folder(outside.parent, outside.name)
    store = demo_store.store()
    before = store.checksum()
    at = app("data")
    at.radio(key="data_source").set_value("A folder on the server").run()
    for path, expected in [("bad", "empty"), (str(outside), "outside the data root"),
                           ("../elsewhere", "outside the data root"), ("nope", "does not exist")]:
        at.text_input(key="data_path").input(path).run()
        by_label(at.text_input, "Dataset name").input("x").run()
        by_label(at.button, "Import").click().run()
        no_bug(at)
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and expected in errors[0].lower(), (path, errors)
        assert errors[0].count(". ") == 0 and "Traceback" not in errors[0]
    assert store.checksum() == before


def test_existing_name_needs_replace_and_keeps_a_backup(demo_store, app):
    write_folder(demo_store.data_root)
    store = demo_store.store()
    before = store.checksum()
    at = import_from_folder(app("data"), "mini", name="demo")
    assert any("already in the store" in e.value for e in at.error)
    assert store.checksum() == before
    at.checkbox(key="data_replace").check().run()
    by_label(at.button, "Import").click().run()
    no_bug(at)
    assert store.load_dataset("demo").modalities == {"image": 6, "text": 4}
    backups = [n for n in store.dataset_names(backups=True) if n.startswith("demo@replaced-")]
    assert len(backups) == 1


def test_upload_a_zip_and_loose_files(empty_store, app):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("train.npz", npz_bytes(30, 3))
        zf.writestr("test.npz", npz_bytes(9, 4))
    at = app("data")
    at.file_uploader(key="data_upload").set_value(("zipped.zip", buf.getvalue(), "application/zip")).run()
    assert by_label(at.text_input, "Dataset name").value == "zipped"
    by_label(at.button, "Import").click().run()
    no_bug(at)
    store = empty_store.store()
    assert store.dataset_names() == ["zipped"]
    at.file_uploader(key="data_upload").set_value([
        ("train.npz", npz_bytes(20, 5), "application/octet-stream"),
        ("test.npz", npz_bytes(5, 6), "application/octet-stream"),
    ]).run()
    by_label(at.text_input, "Dataset name").input("loose").run()
    by_label(at.button, "Import").click().run()
    no_bug(at)
    assert sorted(store.dataset_names()) == ["loose", "zipped"]
    assert store.load_dataset("loose").splits["train"].n == 20


def test_delete_needs_a_confirmation(demo_store, app):
    at = app("data")
    store = demo_store.store()
    delete = by_label(at.button, "Delete")
    assert delete.disabled
    at.checkbox(key="data_delete_confirm_demo").check().run()
    by_label(at.button, "Delete").click().run()
    no_bug(at)
    assert store.dataset_names() == []
    assert any("Deleted dataset 'demo'" in s.value for s in at.success)
    assert any("No dataset yet" in i.value for i in at.info)


# -- the helpers behind the page ----------------------------------------------------------------------
class Uploaded:
    """What ``st.file_uploader`` hands the page: a name and ``getvalue()``."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name, self._data = name, data

    def getvalue(self) -> bytes:
        return self._data


def test_upload_helpers():
    assert uploaded_files(None) == []
    assert uploaded_files(Uploaded("a.npz", b"x")) == [("a.npz", b"x")]
    assert uploaded_files([Uploaded("a.npy", b"1"), Uploaded("b.npy", b"2")]) == [("a.npy", b"1"), ("b.npy", b"2")]
    assert default_name([("luma.zip", b"")]) == "luma"
    assert default_name([("train.npz", b"")]) == "my-dataset"


def test_server_paths_stay_under_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (root / "link").symlink_to(tmp_path / "secret")
    assert resolve_server_path("sub", root) == (root / "sub").resolve()
    assert resolve_server_path(str(root / "sub"), root) == (root / "sub").resolve()
    for bad in ("../secret", str(tmp_path / "secret"), "link", "/etc"):
        with pytest.raises(DataError, match="outside the data root"):
            resolve_server_path(bad, root)
    with pytest.raises(DataError, match="No folder"):
        resolve_server_path("  ", root)


def test_upload_of_tables_with_absent_ids_reports_missing_and_an_empty_item_is_refused(empty_store, app):
    """Parquet/CSV per modality: an item_id absent from one file is a missing modality; an
    item listed in the items table but in no feature file is refused with one sentence."""
    import pandas as pd

    rng = np.random.default_rng(0)
    ids = [f"it{i}" for i in range(30)]
    image = pd.DataFrame(rng.standard_normal((30, 3)), columns=["a", "b", "c"]).assign(item_id=ids)
    text = pd.DataFrame(rng.standard_normal((25, 2)), columns=["u", "v"]).assign(item_id=ids[5:])  # it0-it4 lack text
    buf = io.BytesIO()
    image.to_parquet(buf, index=False)
    files = [("train_image.parquet", buf.getvalue(), "application/octet-stream"),
             ("train_text.csv", text.to_csv(index=False).encode(), "text/csv")]
    at = app("data")
    at.file_uploader(key="data_upload").set_value(files).run()
    by_label(at.text_input, "Dataset name").input("tables").run()
    by_label(at.button, "Import").click().run()
    no_bug(at)
    assert not at.error, [e.value for e in at.error]
    report = at.dataframe[0].value
    assert int(report[(report["split"] == "train") & (report["modality"] == "text")]["missing rows"].iloc[0]) == 5
    assert any("text: 5" in w.value and "'aligned' preset" in w.value for w in at.warning)

    before = empty_store.store().checksum()
    items = pd.DataFrame({"item_id": [*ids, "ghost"]})
    at.file_uploader(key="data_upload").set_value([*files, ("train_items.csv", items.to_csv(index=False).encode(), "text/csv")]).run()
    by_label(at.text_input, "Dataset name").input("ghosts").run()
    by_label(at.button, "Import").click().run()
    no_bug(at)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "'ghost'" in errors[0] and "no modality at all" in errors[0]
    assert empty_store.store().checksum() == before


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def npy_bytes(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


def test_every_refusal_is_shown_at_once_in_the_page_not_in_a_collapsed_box(demo_store, app):
    store = demo_store.store()
    before = store.checksum()
    at = app("data")
    at.file_uploader(key="data_upload").set_value(("notes.txt", b"hello", "text/plain")).run()
    by_label(at.text_input, "Dataset name").input("demo").run()  # taken, and 'Replace it' is not ticked
    by_label(at.button, "Import").click().run()
    no_bug(at)
    errors = [e.value for e in at.error]
    assert len(errors) == 2, errors
    assert "already in the store" in errors[0]
    assert "notes.txt is not a supported file type" in errors[1] and "use .npz" in errors[1]
    assert any("Nothing was imported" in m.value for m in at.markdown)
    top = [n.value for n in at.main.children.values() if getattr(n, "type", None) == "error"]
    assert top == errors  # in the page itself, not inside a (collapsible) status box
    assert store.checksum() == before
    # a zip whose modalities differ in row count: the sentence names both files, still in the page
    bad = zip_bytes({"train/image.npy": npy_bytes(np.zeros((5, 3), np.float32)),
                     "train/text.npy": npy_bytes(np.zeros((4, 2), np.float32))})
    at.file_uploader(key="data_upload").set_value(("uneven.zip", bad, "application/zip")).run()
    assert not at.error  # the old refusal went with the old files
    by_label(at.text_input, "Dataset name").input("uneven").run()
    by_label(at.button, "Import").click().run()
    no_bug(at)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "image.npy" in errors[0] and "text.npy" in errors[0], errors
    assert store.checksum() == before


def test_integer_labels_with_names_in_the_items_table_import_as_names(empty_store, app):
    import pandas as pd

    rng = np.random.default_rng(0)
    entries = {}
    for split, n in (("train", 30), ("test", 9)):
        entries[f"{split}/image.npy"] = npy_bytes(rng.standard_normal((n, 4)).astype(np.float32))
        entries[f"{split}/text.npy"] = npy_bytes(rng.standard_normal((n, 3)).astype(np.float32))
        codes = np.arange(n) % 3
        entries[f"{split}/labels.npy"] = npy_bytes(codes)
        entries[f"{split}/items.csv"] = pd.DataFrame(
            {"label": np.array(["zero", "one", "two"])[codes]}).to_csv(index=False).encode()
    at = app("data")
    at.file_uploader(key="data_upload").set_value(("digits.zip", zip_bytes(entries), "application/zip")).run()
    by_label(at.button, "Import").click().run()
    no_bug(at)
    assert not at.error, [e.value for e in at.error]
    fs = empty_store.store().load_dataset("digits")
    assert sorted(set(fs.splits["train"].labels)) == ["one", "two", "zero"]


def test_the_imported_dataset_table_is_shown_once(empty_store, app):
    write_folder(empty_store.data_root)
    at = import_from_folder(app("data"), "mini")
    no_bug(at)
    summaries = [d for d in at.dataframe if "modality" in d.value.columns]
    assert len(summaries) == 1  # the validation report, not again as the current dataset's summary
