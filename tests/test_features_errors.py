"""Every validation error of the loader is a DataError: one sentence that names the file."""
from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmae_core.errors import DataError
from mmae_core.data.features import load_files, load_path


def rand(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def refused(path, *names: str, match: str = "") -> str:
    """Load, expect a DataError naming every given file, and return its message."""
    with pytest.raises(DataError) as err:
        load_path(path, "x")
    msg = str(err.value)
    for n in names:
        assert n in msg, f"{n!r} not named in: {msg}"
    assert re.search(match, msg), f"{match!r} not in: {msg}"
    assert msg.endswith(".") and not re.search(r"[.!?]\s+[A-Z]", msg), f"not one sentence: {msg}"
    assert "\n" not in msg and not msg.startswith(("the ", "column ", "array ", "item "))
    return msg


def npy_split(root: Path, split: str, arrays: dict[str, np.ndarray]) -> None:
    (root / split).mkdir(parents=True, exist_ok=True)
    for m, x in arrays.items():
        np.save(root / split / f"{m}.npy", x)


# --- shapes and alignment -------------------------------------------------------------------------


def test_rows_differ_between_modalities_of_a_split(tmp_path: Path) -> None:
    npy_split(tmp_path, "train", {"image": rand(5, 3), "text": rand(4, 2)})
    refused(tmp_path, "train/image.npy", "train/text.npy", match="4 rows")


def test_rows_differ_inside_an_npz(tmp_path: Path) -> None:
    np.savez(tmp_path / "train.npz", a=rand(5, 3), b=rand(6, 2))
    refused(tmp_path, "train.npz", match="6 rows")


def test_dimension_differs_between_splits(tmp_path: Path) -> None:
    np.savez(tmp_path / "train.npz", image=rand(5, 3), text=rand(5, 2))
    np.savez(tmp_path / "test.npz", image=rand(4, 7), text=rand(4, 2))
    refused(tmp_path, "test.npz", "train.npz", match="dimension 7")


def test_split_lacking_a_modality(tmp_path: Path) -> None:
    npy_split(tmp_path, "train", {"image": rand(5, 3), "text": rand(5, 2)})
    npy_split(tmp_path, "ood", {"image": rand(3, 3)})
    refused(tmp_path, "ood/image.npy", "train/text.npy", match="lacks the modality 'text'")


def test_split_with_an_extra_modality(tmp_path: Path) -> None:
    npy_split(tmp_path, "train", {"image": rand(5, 3)})
    npy_split(tmp_path, "test", {"image": rand(3, 3), "audio": rand(3, 4)})
    refused(tmp_path, "test/audio.npy", match="train split lacks")


def test_one_dimensional_modality(tmp_path: Path) -> None:
    np.save(tmp_path / "train_image.npy", np.arange(5.0))
    refused(tmp_path, "train_image.npy", match="2-D")


def test_text_array_as_modality(tmp_path: Path) -> None:
    np.save(tmp_path / "train_image.npy", np.array([["a", "b"], ["c", "d"]]))
    refused(tmp_path, "train_image.npy", match="not numbers")


# --- values -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_inside_a_present_row(tmp_path: Path, bad: float) -> None:
    x = rand(6, 4)
    x[2] = np.nan  # a whole missing row is fine
    x[4, 1] = bad
    npy_split(tmp_path, "train", {"image": x, "text": rand(6, 2)})
    refused(tmp_path, "train/image.npy", match="has -?(NaN|Inf) at row 4, column 1")


def test_nan_inside_a_row_of_a_table(tmp_path: Path) -> None:
    pd.DataFrame({"item_id": ["a", "b"], "f0": [1.0, 2.0], "f1": [None, 3.0]}).to_parquet(tmp_path / "train_image.parquet")
    refused(tmp_path, "train_image.parquet", match="row 0, column 1")


def test_non_numeric_csv_column(tmp_path: Path) -> None:
    (tmp_path / "train_text.csv").write_text("item_id,f0,caption\na,1.0,a dog\nb,2.0,a cat\n")
    refused(tmp_path, "train_text.csv", match="Column 'caption' in")


def test_non_numeric_parquet_column(tmp_path: Path) -> None:
    pd.DataFrame({"item_id": ["a", "b"], "f0": [1.0, 2.0], "f1": ["1.0", "x"]}).to_parquet(tmp_path / "train_image.parquet")
    refused(tmp_path, "train_image.parquet", match="Column 'f1' in")


def test_table_without_item_id(tmp_path: Path) -> None:
    pd.DataFrame({"f0": [1.0, 2.0]}).to_csv(tmp_path / "train_image.csv", index=False)
    refused(tmp_path, "train_image.csv", match="item_id")


# --- empty and truncated files -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["train.npz", "train_image.npy", "train_image.csv", "train_image.parquet"])
def test_zero_byte_file(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"")
    refused(tmp_path, name, match="empty")


def test_zero_byte_zip(tmp_path: Path) -> None:
    (tmp_path / "data.zip").write_bytes(b"")
    refused(tmp_path / "data.zip", "data.zip", match="empty")


def test_zero_rows(tmp_path: Path) -> None:
    np.save(tmp_path / "train_image.npy", np.zeros((0, 3), np.float32))
    refused(tmp_path, "train_image.npy", match="0 rows")
    (tmp_path / "train_image.npy").unlink()
    (tmp_path / "train_text.csv").write_text("item_id,f0,f1\n")
    refused(tmp_path, "train_text.csv", match="no rows")
    (tmp_path / "train_text.csv").unlink()
    pd.DataFrame({"item_id": pd.Series([], dtype=str), "f0": pd.Series([], dtype=float)}).to_parquet(tmp_path / "train_a.parquet")
    refused(tmp_path, "train_a.parquet", match="no rows")


def test_empty_items_table(tmp_path: Path) -> None:
    npy_split(tmp_path, "train", {"image": rand(3, 2)})
    (tmp_path / "train" / "items.csv").write_text("")
    refused(tmp_path, "train/items.csv", match="empty")


def _cut(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_truncated_npy(tmp_path: Path) -> None:
    np.save(tmp_path / "train_image.npy", rand(50, 8))
    _cut(tmp_path / "train_image.npy")
    refused(tmp_path, "train_image.npy", match="truncated")


def test_npy_cut_inside_its_header(tmp_path: Path) -> None:
    np.save(tmp_path / "train_image.npy", rand(50, 8))
    _cut(tmp_path / "train_image.npy", keep=0.003)
    refused(tmp_path, "train_image.npy", match="truncated")


@pytest.mark.parametrize("compressed", [False, True])
def test_truncated_npz(tmp_path: Path, compressed: bool) -> None:
    (np.savez_compressed if compressed else np.savez)(tmp_path / "train.npz", a=rand(50, 8), b=rand(50, 3))
    _cut(tmp_path / "train.npz")
    refused(tmp_path, "train.npz", match="truncated")


def test_truncated_parquet(tmp_path: Path) -> None:
    df = pd.DataFrame(rand(50, 8), columns=[f"f{i}" for i in range(8)])
    df.insert(0, "item_id", [f"i{i}" for i in range(50)])
    df.to_parquet(tmp_path / "train_image.parquet")
    _cut(tmp_path / "train_image.parquet")
    refused(tmp_path, "train_image.parquet", match="truncated")


def test_truncated_zip(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "d.zip", "w") as zf:
        zf.writestr("train_image.npy", b"\x93NUMPY" + b"0" * 5000)
    _cut(tmp_path / "d.zip")
    refused(tmp_path / "d.zip", "d.zip", match="truncated")


def test_corrupt_member_inside_zip(tmp_path: Path) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, rand(40, 5))
    with zipfile.ZipFile(tmp_path / "d.zip", "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("train_image.npy", buf.getvalue())
    raw = bytearray((tmp_path / "d.zip").read_bytes())
    raw[200:260] = b"\x00" * 60  # damage the deflate stream of the member, keep the directory intact
    (tmp_path / "d.zip").write_bytes(bytes(raw))
    refused(tmp_path / "d.zip", "train_image.npy", "d.zip", match="truncated or corrupt")


def test_ragged_csv(tmp_path: Path) -> None:
    (tmp_path / "train_image.csv").write_text("item_id,f0,f1\na,1,2\nb,3\n")
    refused(tmp_path, "train_image.csv", match="could not be read as CSV")


# --- ids -------------------------------------------------------------------------------------------


def test_duplicate_item_id_in_a_table(tmp_path: Path) -> None:
    pd.DataFrame({"item_id": ["a", "b", "a"], "f0": [1.0, 2.0, 3.0]}).to_csv(tmp_path / "train_image.csv", index=False)
    refused(tmp_path, "train_image.csv", match="'a' more than once")


def test_duplicate_ids_npy(tmp_path: Path) -> None:
    npy_split(tmp_path, "train", {"image": rand(3, 2)})
    np.save(tmp_path / "train" / "ids.npy", np.array([1, 2, 1]))
    refused(tmp_path, "train/ids.npy", match="'1' more than once")


def test_duplicate_item_id_in_items_table(tmp_path: Path) -> None:
    npy_split(tmp_path, "train", {"image": rand(3, 2)})
    pd.DataFrame({"item_id": ["a", "b", "b"]}).to_csv(tmp_path / "train" / "items.csv", index=False)
    refused(tmp_path, "train/items.csv", match="'b' more than once")


def test_empty_item_id_in_csv(tmp_path: Path) -> None:
    (tmp_path / "train_image.csv").write_text("item_id,f0\na,1\n,2\n")
    refused(tmp_path, "train_image.csv", match="empty item id at row 1")


def test_null_item_id_in_parquet(tmp_path: Path) -> None:
    pd.DataFrame({"item_id": ["a", None], "f0": [1.0, 2.0]}).to_parquet(tmp_path / "train_image.parquet")
    refused(tmp_path, "train_image.parquet", match="empty item id at row 1")


def test_same_id_in_two_splits(tmp_path: Path) -> None:
    np.savez(tmp_path / "train.npz", a=rand(3, 2), ids=np.array(["p", "q", "r"]))
    np.savez(tmp_path / "test.npz", a=rand(2, 2), ids=np.array(["s", "q"]))
    refused(tmp_path, "train.npz", "test.npz", match="'q'")


# --- labels and items table --------------------------------------------------------------------------


def test_labels_row_count_mismatch(tmp_path: Path) -> None:
    npy_split(tmp_path, "train", {"image": rand(4, 2)})
    np.save(tmp_path / "train" / "labels.npy", np.array([1, 2, 3]))
    refused(tmp_path, "train/labels.npy", "train/image.npy", match="3 rows")


def test_npz_labels_row_count_mismatch(tmp_path: Path) -> None:
    np.savez(tmp_path / "train.npz", image=rand(4, 2), labels=np.arange(5))
    refused(tmp_path, "train.npz", match="5 rows")


def test_items_table_row_count_mismatch(tmp_path: Path) -> None:
    npy_split(tmp_path, "train", {"image": rand(4, 2)})
    pd.DataFrame({"title": ["a", "b"]}).to_csv(tmp_path / "train" / "items.csv", index=False)
    refused(tmp_path, "train/items.csv", match="2 rows")


def test_items_table_lacks_an_item_of_a_feature_table(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    pd.DataFrame({"item_id": ["a", "b", "c"], "f": [1.0, 2.0, 3.0]}).to_parquet(tmp_path / "train" / "image.parquet")
    pd.DataFrame({"item_id": ["a", "b"], "label": ["x", "y"]}).to_csv(tmp_path / "train" / "items.csv", index=False)
    refused(tmp_path, "train/image.parquet", "train/items.csv", match="'c'")


def test_labels_npy_and_items_table_disagree(tmp_path: Path) -> None:
    npy_split(tmp_path, "train", {"image": rand(3, 2)})
    np.save(tmp_path / "train" / "labels.npy", np.array([0, 1, 2]))
    pd.DataFrame({"item_id": ["a", "b", "c"], "label": [0, 1, 5]}).to_csv(tmp_path / "train" / "items.csv", index=False)
    refused(tmp_path, "train/labels.npy", "train/items.csv", match="row 2")


def test_integer_labels_beside_class_names_that_agree_as_a_mapping_keep_the_names(tmp_path: Path) -> None:
    npy_split(tmp_path, "train", {"image": rand(4, 2)})
    np.save(tmp_path / "train" / "labels.npy", np.array([0, 1, 0, 2]))
    pd.DataFrame({"item_id": ["a", "b", "c", "d"], "label": ["zero", "one", "zero", "two"]}).to_csv(
        tmp_path / "train" / "items.csv", index=False)
    fs = load_path(tmp_path, "x")
    assert fs.splits["train"].labels.tolist() == ["zero", "one", "zero", "two"]


@pytest.mark.parametrize("names, rows", [
    (["zero", "one", "nil", "two"], "label '0' goes with 'zero' at row 0 but with 'nil' at row 2"),
    (["zero", "one", "zero", "one"], "label 'one' goes with '1' at row 1 but with '2' at row 3"),
])
def test_integer_labels_and_names_that_conflict_are_refused_naming_the_rows(tmp_path: Path, names, rows) -> None:
    npy_split(tmp_path, "train", {"image": rand(4, 2)})
    np.save(tmp_path / "train" / "labels.npy", np.array([0, 1, 0, 2]))
    pd.DataFrame({"item_id": ["a", "b", "c", "d"], "label": names}).to_csv(tmp_path / "train" / "items.csv", index=False)
    refused(tmp_path, "train/labels.npy", "train/items.csv", match=re.escape(rows))


def test_ids_npy_and_items_table_disagree(tmp_path: Path) -> None:
    npy_split(tmp_path, "train", {"image": rand(2, 2)})
    np.save(tmp_path / "train" / "ids.npy", np.array(["a", "b"]))
    pd.DataFrame({"item_id": ["a", "c"]}).to_csv(tmp_path / "train" / "items.csv", index=False)
    refused(tmp_path, "train/ids.npy", "train/items.csv", match="disagree")


def test_empty_label(tmp_path: Path) -> None:
    npy_split(tmp_path, "train", {"image": rand(3, 2)})
    (tmp_path / "train" / "items.csv").write_text("item_id,label\na,dog\nb,\nc,cat\n")
    refused(tmp_path, "train/items.csv", match="empty label at row 1")


def test_labels_npy_with_item_id_tables_and_nothing_to_align_to(tmp_path: Path) -> None:
    pd.DataFrame({"item_id": ["a", "b"], "f": [1.0, 2.0]}).to_csv(tmp_path / "train_image.csv", index=False)
    np.save(tmp_path / "train_labels.npy", np.array([1, 2]))
    refused(tmp_path, "train_labels.npy", match="items.csv")


# --- items without any modality, splits, odd files --------------------------------------------------------


def test_item_with_no_modality_in_arrays(tmp_path: Path) -> None:
    a, b = rand(4, 2), rand(4, 3)
    a[2] = np.nan
    b[2] = np.nan
    np.savez(tmp_path / "train.npz", a=a, b=b)
    refused(tmp_path, "train.npz", match="'train-000002' .*no modality at all")


def test_item_with_no_modality_in_tables(tmp_path: Path) -> None:
    pd.DataFrame({"item_id": ["a", "b"], "f": [1.0, 2.0]}).to_csv(tmp_path / "train_image.csv", index=False)
    pd.DataFrame({"item_id": ["a", "b", "ghost"], "title": ["A", "B", "G"]}).to_csv(tmp_path / "train_items.csv", index=False)
    refused(tmp_path, "train_image.csv", match="'ghost'.*no modality at all")


def test_no_train_split(tmp_path: Path) -> None:
    np.savez(tmp_path / "test.npz", a=rand(3, 2))
    refused(tmp_path, "test.npz", str(tmp_path), match="no train split")


def test_single_split_npz_other_than_train_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "ood.npz", a=rand(3, 2))
    refused(tmp_path / "ood.npz", "ood.npz", match="no train split")


def test_nothing_recognised(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    refused(tmp_path, "notes.txt", match="no feature files")


def test_unsupported_single_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    refused(tmp_path / "notes.txt", "notes.txt", match="not a supported file type")


def test_missing_path(tmp_path: Path) -> None:
    refused(tmp_path / "nowhere", "nowhere", match="does not exist")


def test_same_modality_twice(tmp_path: Path) -> None:
    npy_split(tmp_path, "train", {"image": rand(3, 2)})
    np.save(tmp_path / "train_image.npy", rand(3, 2))
    refused(tmp_path, "train/image.npy", "train_image.npy", match="keep only one")


def test_mixing_arrays_and_tables_in_a_split(tmp_path: Path) -> None:
    np.save(tmp_path / "train_image.npy", rand(2, 2))
    pd.DataFrame({"item_id": ["a", "b"], "f": [1.0, 2.0]}).to_csv(tmp_path / "train_text.csv", index=False)
    refused(tmp_path, "train_image.npy", "train_text.csv", match="one kind per split")


def test_reserved_name_as_modality(tmp_path: Path) -> None:
    npy_split(tmp_path, "train", {"image": rand(3, 2), "label": rand(3, 1)})
    refused(tmp_path, "train/label.npy", match="reserved")


def test_upload_errors_name_the_uploaded_file() -> None:
    import io

    good, bad = io.BytesIO(), io.BytesIO()
    np.save(good, rand(4, 2))
    np.save(bad, rand(3, 2))
    with pytest.raises(DataError, match=r"train_text\.npy has 3 rows but train_image\.npy has 4"):
        load_files([("train_image.npy", good.getvalue()), ("train_text.npy", bad.getvalue())], "x")
    with pytest.raises(DataError, match="uploaded twice"):
        load_files([("train_image.npy", good.getvalue()), ("train_image.npy", good.getvalue())], "x")
    with pytest.raises(DataError, match="No files"):
        load_files([], "x")


def test_ignored_files_are_listed_not_fatal(tmp_path: Path) -> None:
    npy_split(tmp_path, "train", {"image": rand(3, 2)})
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "train" / "readme.md").write_text("x")
    fs = load_path(tmp_path, "x")
    assert sorted(Path(p).name for p in fs.attrs["ignored"]) == ["notes.txt", "readme.md"]
