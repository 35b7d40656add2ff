"""Reading ``.npy`` and ``.npz`` files so that no byte of them is ever unpickled.

NumPy already refuses object arrays under ``allow_pickle=False``, but its errors are library
sentences. Reading the header first lets us tell the user *why* a file was refused (it holds Python
objects, which could run code) apart from a download cut short. ``.npz`` members are read one by one
straight out of the archive, so nothing is extracted to disk.
"""
from __future__ import annotations

import math
import struct
import zipfile
import zlib
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from mmae_core.errors import DataError
from mmae_core.data.layout import FileRef
from mmae_core.data.zips import check_expansion

NPY_MAGIC = b"\x93NUMPY"
# What numpy, zipfile and zlib raise on a cut-short or damaged file.
READ_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    OSError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
    struct.error,
    SyntaxError,  # numpy parses the header with ast.literal_eval
)


def objects_error(shown: str) -> DataError:
    return DataError(
        f"{shown} holds Python objects (pickled data) and was not loaded, because loading it could run code; "
        "save plain numeric or string arrays (numpy.save with allow_pickle=False)."
    )


def truncated_error(shown: str, kind: str) -> DataError:
    return DataError(f"{shown} could not be read as {kind} (it looks truncated or corrupt); export or copy it again.")


def empty_error(shown: str) -> DataError:
    return DataError(f"{shown} is empty (0 bytes); export it again or remove it.")


def _header(fp: IO[bytes], shown: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    """(shape, dtype, fortran_order) of a .npy stream, its position left at the first data byte."""
    head = fp.read(8)
    if head[:6] != NPY_MAGIC:
        if head[:1] == b"\x80":  # pickle protocol 2+ opcode: a pickled object saved under a .npy name
            raise objects_error(shown)
        if len(head) < 8 and NPY_MAGIC.startswith(head):
            raise truncated_error(shown, "a .npy array")
        raise DataError(f"{shown} is not a NumPy .npy array; save it with numpy.save.")
    major = head[6]
    try:
        if major == 1:
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif major in (2, 3):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise DataError(f"{shown} uses .npy format version {major}, which this NumPy cannot read; save it again with numpy.save.")
    except READ_ERRORS as exc:
        raise truncated_error(shown, "a .npy array") from exc
    return shape, dtype, bool(fortran)


def read_npy_stream(fp: IO[bytes], shown: str, size: int | None = None) -> np.ndarray:
    """Read one array from an open binary stream positioned at its start; ``size`` is the stream's
    length in bytes, when known.

    A header that declares more data than the file holds is a truncated file: checked here, since
    numpy would first try to allocate the declared size and fail with a memory error."""
    shape, dtype, _ = _header(fp, shown)
    if dtype.hasobject:
        raise objects_error(shown)
    if size is not None and size - fp.tell() < math.prod(int(n) for n in shape) * dtype.itemsize:
        raise truncated_error(shown, "a .npy array")
    try:
        fp.seek(0)
        return np.lib.format.read_array(fp, allow_pickle=False)
    except READ_ERRORS as exc:
        raise truncated_error(shown, "a .npy array") from exc


def read_npy(ref: FileRef) -> np.ndarray:
    if ref.member is not None:
        zf, info = ref.member
        if info.file_size == 0:
            raise empty_error(ref.shown)
        try:
            with zf.open(info) as fp:
                return read_npy_stream(fp, ref.shown, info.file_size)
        except READ_ERRORS as exc:  # a damaged member: bad CRC, cut-short deflate stream
            raise truncated_error(ref.shown, "a .npy array") from exc
    size = ref.path.stat().st_size
    if size == 0:
        raise empty_error(ref.shown)
    with open(ref.path, "rb") as fp:
        return read_npy_stream(fp, ref.shown, size)


def open_windows(ref: FileRef) -> "NpyWindows | None":
    """A plain ``.npy`` file on disk as ``NpyWindows`` (read later, window by window), after the
    same header checks as ``read_npy``; None when it must be read whole (a zip member, a Fortran-order
    or non-2-D array), so such files keep the eager path and its messages."""
    from mmae_core.data.lazy import NpyWindows

    if ref.member is not None:
        return None
    size = ref.path.stat().st_size
    if size == 0:
        raise empty_error(ref.shown)
    with open(ref.path, "rb") as fp:
        shape, dtype, _ = _header(fp, ref.shown)
        if dtype.hasobject:
            raise objects_error(ref.shown)
        if size - fp.tell() < math.prod(int(n) for n in shape) * dtype.itemsize:
            raise truncated_error(ref.shown, "a .npy array")
    if len(shape) != 2 or dtype.kind not in "biuf" or 0 in shape:
        return None
    x = NpyWindows(ref.path, ref.shown)
    m = x._map()
    fortran = m.flags.f_contiguous and not m.flags.c_contiguous
    del m
    return None if fortran else x


def read_npz(ref: FileRef, max_uncompressed: int) -> Iterator[tuple[str, np.ndarray]]:
    """The arrays of an ``.npz`` in archive order, read member by member without extracting.

    A generator, so the caller can convert (e.g. float64 -> float32) and drop each raw array
    before the next one is read, which keeps peak memory near the size of the result.
    """
    path: Path = ref.path
    if path.stat().st_size == 0:
        raise empty_error(ref.shown)
    try:
        zf = zipfile.ZipFile(path)
    except READ_ERRORS as exc:
        raise truncated_error(ref.shown, "an .npz archive") from exc
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir() and i.filename.endswith(".npy")]
        if not infos:
            raise DataError(f"{ref.shown} holds no arrays; save the features with numpy.savez.")
        check_expansion(zf.infolist(), ref.shown, max_uncompressed)
        for info in infos:
            key = info.filename[: -len(".npy")]
            shown = f"array '{key}' in {ref.shown}"
            try:
                with zf.open(info) as fp:
                    arr = read_npy_stream(fp, shown, info.file_size)
            except READ_ERRORS as exc:
                raise truncated_error(ref.shown, "an .npz archive") from exc
            yield key, arr
