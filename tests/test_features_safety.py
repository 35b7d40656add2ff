"""Loading never unpickles, and a zip cannot write outside its folder or blow up memory."""
from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mmae_core.errors import DataError
from mmae_core.data.features import load_files, load_path


class Payload:
    """Unpickling this creates ``target``: the file's existence afterwards proves code ran."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def object_array(target: Path) -> np.ndarray:
    arr = np.empty((2, 2), dtype=object)
    arr[:] = 0.0
    arr[0, 0] = Payload(target)
    return arr


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def test_the_payload_is_live(tmp_path: Path) -> None:
    """Control: with pickling allowed, the same bytes do create the file (so the tests below can fail)."""
    target = tmp_path / "pwned-control"
    np.load(io.BytesIO(npy_bytes(object_array(target))), allow_pickle=True)
    assert target.exists()


def assert_refused_objects(load, target: Path, name: str) -> None:
    with pytest.raises(DataError) as err:
        load()
    msg = str(err.value)
    assert "Python objects" in msg and "was not loaded" in msg and name in msg, msg
    assert not target.exists()


def test_object_array_npy(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "image.npy").write_bytes(npy_bytes(object_array(target)))
    assert_refused_objects(lambda: load_path(tmp_path, "x"), target, "train/image.npy")


def test_object_array_as_labels(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    (tmp_path / "train").mkdir()
    np.save(tmp_path / "train" / "image.npy", np.zeros((2, 2), np.float32))
    (tmp_path / "train" / "labels.npy").write_bytes(npy_bytes(object_array(target)[:, 0]))
    assert_refused_objects(lambda: load_path(tmp_path, "x"), target, "train/labels.npy")


def test_object_array_inside_npz(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    np.savez(tmp_path / "train.npz", image=np.zeros((2, 2)), ids=object_array(target)[:, 0])
    assert_refused_objects(lambda: load_path(tmp_path / "train.npz", "x"), target, "train.npz")


def test_raw_pickle_named_npy(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    (tmp_path / "train_image.npy").write_bytes(pickle.dumps(Payload(target), protocol=4))
    assert_refused_objects(lambda: load_path(tmp_path, "x"), target, "train_image.npy")


def test_object_array_in_zip_and_upload(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("train/image.npy", npy_bytes(object_array(target)))
    (tmp_path / "d.zip").write_bytes(buf.getvalue())
    assert_refused_objects(lambda: load_path(tmp_path / "d.zip", "x"), target, "train/image.npy in")
    assert_refused_objects(lambda: load_files([("up.zip", buf.getvalue())], "x"), target, "up.zip")
    assert_refused_objects(
        lambda: load_files([("train_a.npy", npy_bytes(object_array(target))), ("x.txt", b"")], "x"), target, "train_a.npy"
    )


# --- zip slip ------------------------------------------------------------------------------------------


def good_npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ones((3, 2), np.float32))
    return buf.getvalue()


@pytest.mark.parametrize("evil", ["../escaped.npy", "train/../../escaped.npy", "/tmp/escaped-abs.npy", "..\\escaped.npy", "C:/escaped.npy"])
def test_zip_slip_is_refused_before_extracting(tmp_path: Path, evil: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    z = work / "d.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("train/image.npy", good_npy())
        zf.writestr(zipfile.ZipInfo(evil), good_npy())
    with pytest.raises(DataError, match="points outside its folder") as err:
        load_path(z, "x")
    assert "d.zip" in str(err.value)
    assert not (tmp_path / "escaped.npy").exists() and not Path("/tmp/escaped-abs.npy").exists()


def test_upload_names_cannot_escape(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="points outside its folder"):
        load_files([("../train_image.npy", good_npy()), ("train_text.npy", good_npy())], "x")


# --- zip bombs ------------------------------------------------------------------------------------------


def test_zip_bomb_by_ratio(tmp_path: Path) -> None:
    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("train/image.npy", good_npy())
        zf.writestr("train/padding.npy", b"\x00" * 5_000_000)  # ~1000:1
    with pytest.raises(DataError, match="zip bomb") as err:
        load_path(z, "x")
    assert "bomb.zip" in str(err.value) and "nothing was extracted" in str(err.value)


def test_zip_over_the_size_limit(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.save(buf, rng.standard_normal((200, 10)).astype(np.float32))  # incompressible, 8 KB
    z = tmp_path / "big.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("train/image.npy", buf.getvalue())
    assert load_path(z, "x").splits["train"].n == 200  # fine under the default limit
    with pytest.raises(DataError, match="more than the .* limit") as err:
        load_path(z, "x", max_uncompressed=4000)
    assert "big.zip" in str(err.value)
    with pytest.raises(DataError, match="limit"):
        load_files([("big.zip", z.read_bytes())], "x", max_uncompressed=4000)


def test_npz_over_the_size_limit(tmp_path: Path) -> None:
    np.savez_compressed(tmp_path / "train.npz", image=np.zeros((1000, 50), np.float32))
    with pytest.raises(DataError, match="train.npz would unpack to"):
        load_path(tmp_path / "train.npz", "x", max_uncompressed=10_000)
