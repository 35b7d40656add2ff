"""A 2-D ``.npy`` file on disk read in windows: what a streaming import and the store pass around.

Why not ``np.load(mmap_mode="r")`` held for the whole import: the kernel counts every touched page
of a mapping in the process's resident memory until the map is dropped, so one map read end to end
grows to the size of the file (7.4 GB of features for a 1M-item archive). ``NpyWindows`` maps the
file for one window and drops the map at once, so resident memory stays at about one window while
the page cache still serves the next pass.

It offers what the loader's checks use (``shape``, ``ndim``, ``dtype``, ``len``, slicing rows and a
single ``[row, col]``), and every window comes back as C-contiguous float32, whatever numeric dtype
the file holds.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mmae_core.errors import DataError

WINDOW_BYTES = 64 * 2**20  # one window of a streamed read: ~64 MB of float32 (about 9,000 LUMA rows)


class NpyWindows:
    """Rows of a 2-D numeric ``.npy`` file, mapped only for the window being read."""

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, path: Path | str, shown: str | None = None):
        self.path = Path(path)
        self.shown = shown or str(path)
        x = self._map()
        if x.ndim != 2 or x.dtype.kind not in "fiub":
            raise DataError(f"{self.shown} must hold a 2-D numeric array (it holds {x.ndim}-D {x.dtype}); save the features as rows of numbers.")
        self.shape: tuple[int, int] = (int(x.shape[0]), int(x.shape[1]))
        self.file_dtype = x.dtype
        del x

    def _map(self) -> np.ndarray:
        try:
            return np.load(self.path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise DataError(f"the feature file {self.shown} is gone; import the dataset again.") from None
        except ValueError as exc:
            raise DataError(f"{self.shown} could not be read as a .npy array ({exc}); export it again.") from None

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def window_rows(self) -> int:
        return max(1, WINDOW_BYTES // (4 * max(1, self.shape[1])))

    def __getitem__(self, key: object) -> np.ndarray:
        if isinstance(key, np.ndarray) and key.dtype.kind in "iu" and key.ndim == 1:
            return self._take(key)
        x = self._map()
        try:
            if isinstance(key, tuple):  # a single cell (the NaN/Inf message names its value)
                return x[key]
            out = np.array(x[key], dtype=np.float32, order="C")  # a copy: the map is dropped below
        finally:
            del x
        return out

    def _take(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (any order), read window by window, each window through its own map.

        Why: the kernel maps the neighbours of every page a read touches (fault-around), so rows
        spread evenly over a file (every 19th of 950,000) touched the whole 3.9 GB audio file
        through one map, and the kernel counted it all as resident. A map per window holds at most
        ``WINDOW_BYTES`` of the file at a time."""
        out = np.empty((len(idx), self.shape[1]), dtype=np.float32)
        if len(idx) == 0:
            return out
        order = np.argsort(idx, kind="stable")
        rows = idx[order]
        if rows[0] < -self.shape[0] or rows[-1] >= self.shape[0]:
            raise IndexError(f"row {rows[-1] if rows[-1] >= self.shape[0] else rows[0]} is out of range for {self.shown} ({self.shape[0]} rows)")
        rows = np.where(rows < 0, rows + self.shape[0], rows)
        cuts = np.flatnonzero(np.diff(rows // self.window_rows)) + 1
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(rows)]):
            x = self._map()
            try:
                out[order[a:b]] = x[rows[a:b]]
            finally:
                del x
        return out

    def windows(self, rows: int | None = None):
        """(start, float32 rows) over the whole file, ``rows`` at a time."""
        step = rows or self.window_rows
        for s in range(0, self.shape[0], step):
            yield s, self[s : s + step]

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        """The whole file in memory (what an in-memory consumer of a small dataset asks for)."""
        out = np.empty(self.shape, dtype=np.float32)
        for s, w in self.windows():
            out[s : s + len(w)] = w
        return out if dtype is None else out.astype(dtype, copy=False)


def row_windows(x: np.ndarray | NpyWindows, rows: int):
    """(start, rows of ``x``) ``rows`` at a time, for an array in memory or a file in windows."""
    for s in range(0, len(x), rows):
        yield s, x[s : s + rows]


class NpyAppender:
    """Write a float32 ``(n, dim)`` ``.npy`` file row block by row block, through ordinary appends.

    Why not ``np.lib.format.open_memmap(mode="w+")``: a writable map of the whole file counts every
    written page in the process's resident memory until it is dropped, so writing 2 GB of latents
    that way costs 2 GB of RSS. The row count is known up front (the header comes first); ``close``
    refuses a file that did not get exactly that many rows, and fsyncs it.
    """

    def __init__(self, path: Path | str, n: int, dim: int):
        self.path, self.n, self.dim, self.written = Path(path), int(n), int(dim), 0
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False, "shape": (self.n, self.dim)}
        self._fh = open(self.path, "wb")
        if self.n * self.dim * 4 < 2**31:
            np.lib.format.write_array_header_1_0(self._fh, header)
        else:
            np.lib.format.write_array_header_2_0(self._fh, header)
        self.data_offset = self._fh.tell()  # where row 0 starts (a scattered write seeks from here)

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.dim or self.written + len(rows) > self.n:
            raise ValueError(f"rows of shape {rows.shape} do not fit {self.path.name} ({self.written} of {self.n} x {self.dim} written)")
        self._fh.write(rows.tobytes())
        self.written += len(rows)

    def close(self) -> None:
        try:
            if self.written != self.n:
                raise ValueError(f"{self.path.name} got {self.written} rows of {self.n}")
            self._fh.flush()
            os.fsync(self._fh.fileno())
        finally:
            self._fh.close()

    def __enter__(self) -> "NpyAppender":
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self._fh.close()
