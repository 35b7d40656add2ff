"""Every accepted layout loads into the same FeatureSet, including missing rows."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmae_core.data.features import load_files, load_path

SIZES = {"train": 12, "test": 5, "ood": 4}


def make_arrays(dims: dict[str, int], splits: dict[str, int] = SIZES, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {s: {m: rng.standard_normal((n, d)) for m, d in dims.items()} for s, n in splits.items()}


def zip_dir(src: Path, dest: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(src.rglob("*")):
            if f.is_file():
                zf.write(f, prefix + f.relative_to(src).as_posix())
    return dest


def check_features(fs, data: dict[str, dict[str, np.ndarray]]) -> None:
    assert list(fs.splits) == [s for s in ("train", "test", "ood") if s in data]
    for s, arrays in data.items():
        for m, x in arrays.items():
            got = fs.splits[s].features[m]
            assert got.dtype == np.float32 and got.flags["C_CONTIGUOUS"]
            np.testing.assert_allclose(got, x.astype(np.float32), equal_nan=True)
    assert fs.modalities == {m: x.shape[1] for m, x in data["train"].items()}


def write_npz(root: Path, data, labels=None, ids=None) -> None:
    root.mkdir(exist_ok=True)
    for s, arrays in data.items():
        extra = {}
        if labels is not None:
            extra["labels"] = labels[s]
        if ids is not None:
            extra["ids"] = ids[s]
        np.savez(root / f"{s}.npz", **arrays, **extra)


def write_npy(root: Path, data, flat: bool = False) -> None:
    for s, arrays in data.items():
        for m, x in arrays.items():
            target = root / (f"{s}_{m}.npy" if flat else f"{s}/{m}.npy")
            target.parent.mkdir(parents=True, exist_ok=True)
            np.save(target, x)


def write_tables(root: Path, data, ids, ext: str, flat: bool) -> None:
    for s, arrays in data.items():
        for m, x in arrays.items():
            df = pd.DataFrame(x, columns=[f"{m}_{j}" for j in range(x.shape[1])])
            df.insert(0, "item_id", ids[s])
            target = root / (f"{s}_{m}.{ext}" if flat else f"{s}/{m}.{ext}")
            target.parent.mkdir(parents=True, exist_ok=True)
            df.to_csv(target, index=False) if ext == "csv" else df.to_parquet(target, index=False)


def int_labels(seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s: rng.integers(0, 3, n) for s, n in SIZES.items()}


def str_ids() -> dict[str, np.ndarray]:
    return {s: np.array([f"{s}-item-{i}" for i in range(n)]) for s, n in SIZES.items()}


# --- npz ---------------------------------------------------------------------------------------


def test_npz_per_split_with_int_labels_and_ids(tmp_path: Path) -> None:
    data = make_arrays({"vision": 6, "sound": 9, "words": 4})
    labels, ids = int_labels(), str_ids()
    write_npz(tmp_path / "ds", data, labels, ids)
    fs = load_path(tmp_path / "ds", "luma-mini")
    check_features(fs, data)
    assert list(fs.modalities) == ["sound", "vision", "words"]  # sorted, whatever order the npz saved them in
    for s in SIZES:
        assert fs.splits[s].labels.dtype == object
        assert fs.splits[s].labels.tolist() == [str(v) for v in labels[s]]
        assert fs.splits[s].item_ids.tolist() == ids[s].tolist()
    assert fs.labelled and fs.name == "luma-mini" and fs.attrs["ignored"] == []


def test_npz_without_labels_or_ids_makes_up_ids(tmp_path: Path) -> None:
    data = make_arrays({"a": 3, "b": 2}, {"train": 7, "ood": 3})
    write_npz(tmp_path, data)
    fs = load_path(tmp_path, "x")
    check_features(fs, data)
    assert fs.splits["train"].item_ids.tolist() == [f"train-{i:06d}" for i in range(7)]
    assert fs.splits["ood"].item_ids[2] == "ood-000002"
    assert fs.splits["train"].labels is None and not fs.labelled


def test_single_npz_not_named_after_a_split_is_train(tmp_path: Path) -> None:
    data = make_arrays({"img": 4, "txt": 3}, {"train": 6})
    np.savez(tmp_path / "features.npz", **data["train"], labels=np.array(list("abcabc")))
    fs = load_path(tmp_path / "features.npz", "x")
    assert list(fs.splits) == ["train"]
    check_features(fs, data)
    assert fs.splits["train"].labels.tolist() == list("abcabc")


def test_npz_rows_of_nan_are_missing_modalities(tmp_path: Path) -> None:
    data = make_arrays({"img": 4, "aud": 5, "txt": 3})
    data["train"]["aud"][[1, 4]] = np.nan
    data["test"]["txt"][0] = np.nan
    write_npz(tmp_path, data)
    fs = load_path(tmp_path, "x")
    check_features(fs, data)
    assert fs.splits["train"].missing_counts() == {"img": 0, "aud": 2, "txt": 0}
    assert fs.splits["test"].present("txt").tolist() == [False] + [True] * 4


# --- npy ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("flat", [False, True])
def test_npy_layouts_with_str_labels_ids_and_items_table(tmp_path: Path, flat: bool) -> None:
    data = make_arrays({"image": 5, "text": 8})
    write_npy(tmp_path, data, flat=flat)
    labels = {s: np.array(["dog", "cat", "violin"] * 5)[:n] for s, n in SIZES.items()}
    ids = str_ids()
    for s, n in SIZES.items():
        sep = "_" if flat else "/"
        np.save(tmp_path / f"{s}{sep}labels.npy", labels[s])
        np.save(tmp_path / f"{s}{sep}ids.npy", ids[s])
        pd.DataFrame({"item_id": ids[s], "label": labels[s], "title": [f"t{i}" for i in range(n)]}).to_csv(
            tmp_path / f"{s}{sep}items.csv", index=False
        )
    fs = load_path(tmp_path, "x")
    check_features(fs, data)
    assert list(fs.modalities) == ["image", "text"]
    for s in SIZES:
        sp = fs.splits[s]
        assert sp.labels.tolist() == labels[s].tolist()
        assert sp.item_ids.tolist() == ids[s].tolist()
        assert list(sp.meta.columns) == ["title"] and sp.meta["title"].iloc[1] == "t1"


def test_npy_folder_without_side_files_and_nan_rows(tmp_path: Path) -> None:
    data = make_arrays({"a": 2, "b": 3}, {"train": 6, "test": 3})
    data["train"]["b"][2] = np.nan
    write_npy(tmp_path, data)
    fs = load_path(tmp_path, "x")
    check_features(fs, data)
    assert fs.splits["train"].labels is None
    assert fs.splits["train"].present("b").tolist() == [True, True, False, True, True, True]
    assert fs.splits["test"].item_ids.tolist() == ["test-000000", "test-000001", "test-000002"]


def test_items_table_gives_ids_and_labels_by_position_for_arrays(tmp_path: Path) -> None:
    data = make_arrays({"a": 2, "b": 3}, {"train": 4})
    write_npy(tmp_path, data)
    pd.DataFrame({"item_id": [10, 11, 12, 13], "label": [3, 3, 1, 2], "caption": list("wxyz")}).to_parquet(
        tmp_path / "train" / "items.parquet"
    )
    np.save(tmp_path / "train" / "labels.npy", np.array([3, 3, 1, 2]))  # agrees with the table
    fs = load_path(tmp_path, "x")
    sp = fs.splits["train"]
    assert sp.item_ids.tolist() == ["10", "11", "12", "13"]
    assert sp.labels.tolist() == ["3", "3", "1", "2"]
    assert sp.meta["caption"].tolist() == list("wxyz")


def test_integer_ids_of_any_width_become_text(tmp_path: Path) -> None:
    big = np.array([2**64 - 1, 2**63, 7], dtype=np.uint64)
    np.savez(tmp_path / "train.npz", a=np.ones((3, 2)), ids=big, labels=np.array([1.0, 2.0, 2.5]))
    fs = load_path(tmp_path, "x")
    assert fs.splits["train"].item_ids.tolist() == ["18446744073709551615", "9223372036854775808", "7"]
    assert fs.splits["train"].labels.tolist() == ["1", "2", "2.5"]


def test_single_npy_file_is_a_train_modality(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float64, order="F")
    np.save(tmp_path / "embeddings.npy", x)
    fs = load_path(tmp_path / "embeddings.npy", "x")
    assert fs.modalities == {"embeddings": 3}
    got = fs.splits["train"].features["embeddings"]
    assert got.flags["C_CONTIGUOUS"] and got.dtype == np.float32
    np.testing.assert_allclose(got, x.astype(np.float32))


# --- Parquet / CSV -------------------------------------------------------------------------------


@pytest.mark.parametrize("ext,flat", [("parquet", False), ("csv", True), ("csv", False), ("parquet", True)])
def test_tables_by_item_id(tmp_path: Path, ext: str, flat: bool) -> None:
    data = make_arrays({"image": 3, "audio": 4, "text": 2})
    write_tables(tmp_path, data, str_ids(), ext, flat)
    fs = load_path(tmp_path, "x")
    check_features(fs, data)
    assert fs.splits["ood"].item_ids.tolist() == str_ids()["ood"].tolist()
    assert fs.attrs["layout"] == "table"


@pytest.mark.parametrize("ext", ["parquet", "csv"])
def test_item_absent_from_one_table_is_a_missing_row(tmp_path: Path, ext: str) -> None:
    rng = np.random.default_rng(3)
    img = pd.DataFrame({"item_id": ["a", "b", "c", "d"], "p": rng.standard_normal(4), "q": rng.standard_normal(4)})
    txt = pd.DataFrame({"item_id": ["d", "b", "e"], "w": rng.standard_normal(3)})  # a, c lack text; e lacks image
    for name, df in (("image", img), ("text", txt)):
        target = tmp_path / f"train_{name}.{ext}"
        df.to_csv(target, index=False) if ext == "csv" else df.to_parquet(target, index=False)
    fs = load_path(tmp_path, "x")
    sp = fs.splits["train"]
    assert sp.item_ids.tolist() == ["a", "b", "c", "d", "e"]
    assert sp.present("image").tolist() == [True, True, True, True, False]
    assert sp.present("text").tolist() == [False, True, False, True, True]
    np.testing.assert_allclose(sp.features["text"][3, 0], np.float32(txt["w"][0]))
    np.testing.assert_allclose(sp.features["image"][1], img[["p", "q"]].to_numpy()[1].astype(np.float32))


def test_tables_follow_items_table_order_and_labels_by_id(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    pd.DataFrame({"item_id": ["x", "y", "z"], "f": [1.0, 2.0, 3.0]}).to_parquet(tmp_path / "train/image.parquet")
    pd.DataFrame({"item_id": ["z", "x"], "g": [30.0, 10.0]}).to_csv(tmp_path / "train/text.csv", index=False)
    pd.DataFrame({"item_id": ["z", "y", "x"], "label": ["c", "b", "a"], "title": ["Z", "Y", "X"]}).to_csv(
        tmp_path / "train/items.csv", index=False
    )
    fs = load_path(tmp_path, "x")
    sp = fs.splits["train"]
    assert sp.item_ids.tolist() == ["z", "y", "x"]
    assert sp.features["image"][:, 0].tolist() == [3.0, 2.0, 1.0]
    assert np.isnan(sp.features["text"][1, 0]) and sp.features["text"][0, 0] == 30.0
    assert sp.labels.tolist() == ["c", "b", "a"] and sp.meta["title"].tolist() == ["Z", "Y", "X"]


def test_single_csv_file(tmp_path: Path) -> None:
    pd.DataFrame({"item_id": ["a", "b"], "f0": [1, 2], "f1": [0.5, 1.5]}).to_csv(tmp_path / "train_clip.csv", index=False)
    fs = load_path(tmp_path / "train_clip.csv", "x")
    assert fs.modalities == {"clip": 2}
    assert fs.splits["train"].features["clip"].tolist() == [[1.0, 0.5], [2.0, 1.5]]


# --- zip and uploads ----------------------------------------------------------------------------


def test_zip_of_npy_folder_inside_a_top_folder_with_junk(tmp_path: Path) -> None:
    data = make_arrays({"image": 3, "audio": 5, "text": 2})
    src = tmp_path / "src"
    write_npy(src, data)
    (src / "notes.txt").write_text("curator notes")
    z = zip_dir(src, tmp_path / "luma.zip", prefix="luma/")
    with zipfile.ZipFile(z, "a") as zf:
        zf.writestr("__MACOSX/luma/._train", b"junk")
        zf.writestr("README.txt", b"next to the top folder")
    fs = load_path(z, "x")
    check_features(fs, data)
    assert "luma/notes.txt in " + str(z) in fs.attrs["ignored"]
    assert "README.txt in " + str(z) in fs.attrs["ignored"]


def test_zip_of_npz_and_zip_of_tables(tmp_path: Path) -> None:
    data = make_arrays({"m1": 3, "m2": 2})
    write_npz(tmp_path / "npz", data, labels=int_labels())
    fs = load_path(zip_dir(tmp_path / "npz", tmp_path / "a.zip"), "x")
    check_features(fs, data)
    assert fs.splits["test"].labels.dtype == object
    write_tables(tmp_path / "tab", data, str_ids(), "parquet", flat=False)
    fs = load_path(zip_dir(tmp_path / "tab", tmp_path / "b.zip"), "x")
    check_features(fs, data)


def test_load_files_with_loose_files_and_with_one_zip(tmp_path: Path) -> None:
    data = make_arrays({"image": 3, "text": 4})
    files = []
    for s, arrays in data.items():
        for m, x in arrays.items():
            buf = io.BytesIO()
            np.save(buf, x)
            files.append((f"{s}_{m}.npy", buf.getvalue()))
    files.append(("readme.md", b"# hello"))
    fs = load_files(files, "upload")
    check_features(fs, data)
    assert fs.attrs["ignored"] == ["readme.md"]

    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        for n, b in files:
            zf.writestr(n, b)
    fs = load_files([("mine.zip", zbuf.getvalue())], "upload")
    check_features(fs, data)
    assert fs.attrs["ignored"] == ["readme.md in mine.zip"]


def test_load_files_npz_per_split(tmp_path: Path) -> None:
    data = make_arrays({"a": 2, "b": 2, "c": 2})
    write_npz(tmp_path, data, labels=int_labels())
    files = [(f"{s}.npz", (tmp_path / f"{s}.npz").read_bytes()) for s in data]
    fs = load_files(files, "npz-upload")
    check_features(fs, data)
    assert fs.labelled


def test_modalities_are_in_one_sorted_order_in_every_split(tmp_path: Path) -> None:
    data = make_arrays({"zeta": 2, "alpha": 3}, {"train": 4, "test": 3})
    np.savez(tmp_path / "train.npz", **data["train"])
    np.savez(tmp_path / "test.npz", alpha=data["test"]["alpha"], zeta=data["test"]["zeta"])
    fs = load_path(tmp_path, "x")
    assert list(fs.modalities) == ["alpha", "zeta"]
    assert list(fs.splits["train"].features) == list(fs.splits["test"].features) == ["alpha", "zeta"]


def test_the_same_features_in_two_layouts_train_the_same_model(tmp_path: Path) -> None:
    """The model seeds one encoder per modality in the dataset's order, so an npz that saved its arrays
    in another order than a folder lists its files must still give the same modality order."""
    from dataclasses import replace

    from mmae_core.config import preset
    from mmae_core.model.train import encode, train

    data = make_arrays({"vision": 6, "sound": 9, "words": 4})
    labels = int_labels()
    write_npz(tmp_path / "npz", data, labels)  # saved as vision, sound, words
    for s, arrays in data.items():
        (tmp_path / "folder" / s).mkdir(parents=True)
        for m, x in arrays.items():
            np.save(tmp_path / "folder" / s / f"{m}.npy", x)
        np.save(tmp_path / "folder" / s / "labels.npy", labels[s])
    a, b = load_path(tmp_path / "npz", "a"), load_path(tmp_path / "folder", "b")
    assert list(a.modalities) == list(b.modalities) == ["sound", "vision", "words"]
    cfg = replace(preset("paper"), epochs=2, batch_size=8, latent=4, hidden=(8,))
    za, zb = encode(train(a, cfg), a.splits["test"].features)[0], encode(train(b, cfg), b.splits["test"].features)[0]
    np.testing.assert_array_equal(za, zb)


def test_wholly_empty_label_column_means_unlabelled(tmp_path: Path) -> None:
    data = make_arrays({"a": 2, "b": 3}, {"train": 3, "ood": 2})
    write_npy(tmp_path, data)
    pd.DataFrame({"item_id": ["t0", "t1", "t2"], "label": ["x", "y", "x"]}).to_csv(tmp_path / "train/items.csv", index=False)
    pd.DataFrame({"item_id": ["o0", "o1"], "label": ["", ""], "title": ["new", "odd"]}).to_csv(tmp_path / "ood/items.csv", index=False)
    fs = load_path(tmp_path, "x")
    assert fs.splits["train"].labels.tolist() == ["x", "y", "x"]
    assert fs.splits["ood"].labels is None and fs.splits["ood"].meta["title"].tolist() == ["new", "odd"]
