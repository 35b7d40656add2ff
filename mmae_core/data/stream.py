"""Feature files turned into float32 ``.npy`` files in a staging folder, piece by piece.

Why: a Parquet table or a zip member cannot be read in windows the way a plain ``.npy`` file can
(``lazy.NpyWindows``), and reading it whole costs its size in memory (7.4 GB for a 1M-item LUMA
archive). So a streamed import converts each such file once, a row group (Parquet) or a window
(a ``.npy`` zip member) at a time, into a ``.npy`` in ``stage``, a folder the caller owns (the store
puts it beside its features folder, so the file is later linked into the store, not copied again).
The result is a ``Staged`` window reader and goes through the same window-by-window checks
(``checks.scan_rows``) as a folder's ``.npy``, so the sentences are the same as for a whole read.
Rows keep the order of the split: a table whose rows are not in that order is written by seeking
to each run of consecutive rows, items it lacks are NaN rows (a missing modality).
"""
from __future__ import annotations

import contextlib
import math
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from mmae_core.data.layout import FileRef
from mmae_core.data.lazy import WINDOW_BYTES, NpyAppender, NpyWindows
from mmae_core.data.npy import READ_ERRORS, _header, empty_error, objects_error, truncated_error
from mmae_core.data.tables import ParquetRows
from mmae_core.data.zips import extract_to


class Staged(NpyWindows):
    """A float32 ``.npy`` this import wrote into its staging folder: the store may link it in
    place of a copy, since nothing else writes or removes it before the staging folder goes."""

    staged = True


def _new_file(stage: Path, suffix: str = ".npy") -> Path:
    fd, name = tempfile.mkstemp(dir=stage, suffix=suffix)
    os.close(fd)
    return Path(name)


def _rows(dim: int, itemsize: int = 4) -> int:
    return max(1, WINDOW_BYTES // (itemsize * max(1, dim)))


@contextlib.contextmanager
def local_table(ref: FileRef, stage: Path) -> Iterator[FileRef]:
    """The table as a file on disk: a zip member is extracted into ``stage`` for the time it is read
    (Parquet needs a seekable file) and deleted afterwards, so one member at a time takes disk."""
    if ref.member is None:
        yield ref
        return
    zf, info = ref.member
    path = _new_file(stage, Path(info.filename).suffix)
    try:
        extract_to(zf, info, path, ref.shown)
        yield FileRef(path, ref.shown)
    finally:
        path.unlink(missing_ok=True)


def stage_rows(batches: Iterable[tuple[int, np.ndarray]], d: int, pos: np.ndarray | None, n: int,
               stage: Path, shown: str) -> Staged:
    """``batches`` ((start, float32 rows) in source order) as an ``n``-row file in the split's order;
    ``pos[i]`` is the split row of source row ``i`` (None: the same order, every row present)."""
    path = _new_file(stage)
    rows = _rows(d)
    with NpyAppender(path, n, d) as out:
        if pos is None:
            for _, x in batches:
                out.append(x)
        else:
            blank = np.full((min(rows, n), d), np.nan, dtype=np.float32)
            for s in range(0, n, rows):
                out.append(blank[: min(rows, n - s)])
            offset = out.data_offset
    if pos is not None:
        with open(path, "r+b") as fh:
            for s, x in batches:
                p = pos[s : s + len(x)]
                order = np.argsort(p, kind="stable")
                p, x = p[order], x[order]
                starts = np.concatenate([[0], np.flatnonzero(np.diff(p) != 1) + 1, [len(p)]])
                for a, b in zip(starts[:-1], starts[1:]):
                    fh.seek(offset + int(p[a]) * d * 4)
                    fh.write(np.ascontiguousarray(x[a:b]).tobytes())
            fh.flush()
            os.fsync(fh.fileno())
    return Staged(path, shown)


def stage_table(ref: FileRef, stage: Path) -> tuple[np.ndarray, Staged]:
    """A Parquet feature table (a file or a zip member) as (raw item_id values, its rows staged in
    the table's own order), read one row group at a time."""
    with local_table(ref, stage) as local:
        table = ParquetRows(local)
        try:
            ids = table.ids()
            return ids, stage_rows(table.batches(_rows(table.dim)), table.dim, None, table.n, stage, ref.shown)
        finally:
            table.close()


def reorder(x: Staged, pos: np.ndarray, n: int, stage: Path) -> Staged:
    """A staged table put in the split's order (its own file is removed once copied)."""
    out = stage_rows(x.windows(), x.shape[1], pos, n, stage, x.shown)
    x.path.unlink(missing_ok=True)
    return out


def stage_npy_member(ref: FileRef, stage: Path) -> Staged | None:
    """A ``.npy`` zip member decompressed window by window into ``stage`` as float32; None when it
    must be read whole to get the loader's sentences (not a 2-D numeric C-order array)."""
    zf, info = ref.member  # type: ignore[misc]
    if info.file_size == 0:
        raise empty_error(ref.shown)
    path: Path | None = None
    try:
        with zf.open(info) as fp:
            shape, dtype, fortran = _header(fp, ref.shown)
            if dtype.hasobject:
                raise objects_error(ref.shown)
            if info.file_size - fp.tell() < math.prod(int(k) for k in shape) * dtype.itemsize:
                raise truncated_error(ref.shown, "a .npy array")
            if len(shape) != 2 or dtype.kind not in "biuf" or 0 in shape or fortran:
                return None
            n, d = int(shape[0]), int(shape[1])
            rows = _rows(d, dtype.itemsize)
            path = _new_file(stage)
            with NpyAppender(path, n, d) as out:
                for s in range(0, n, rows):
                    k = min(rows, n - s)
                    buf = fp.read(k * d * dtype.itemsize)
                    if len(buf) != k * d * dtype.itemsize:
                        raise truncated_error(ref.shown, "a .npy array")
                    out.append(np.frombuffer(buf, dtype=dtype).reshape(k, d))
    except READ_ERRORS as exc:
        if path is not None:
            path.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # the disk, not the archive
        raise truncated_error(ref.shown, "a .npy array") from exc
    except BaseException:
        if path is not None:
            path.unlink(missing_ok=True)
        raise
    return Staged(path, ref.shown)
