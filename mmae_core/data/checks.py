"""Checks and conversions done while loading, where we still know which file a value came from.

``FeatureSet.validate`` re-checks the assembled set, but only the loader can say "row 7 of
train/audio.npy"; so the value-level checks (NaN/Inf, ids, labels) live here, each naming its file.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from mmae_core.errors import DataError

SCAN_CHUNK = 1 << 22  # elements per chunk: bounds the temporaries of the NaN/Inf scan to a few MB


def as_features(arr: np.ndarray, where: str) -> np.ndarray:
    """A modality array as 2-D float32 C-contiguous (copies only when the input is not already so)."""
    check_feature_shape(arr, where)
    return np.ascontiguousarray(arr, dtype=np.float32)


def check_feature_shape(arr: "np.ndarray | object", where: str) -> None:
    """The checks of ``as_features`` that need only the shape and dtype, so a file read in windows
    (``lazy.NpyWindows``, checked on its header) gets the same sentences as one read whole."""
    dtype = getattr(arr, "file_dtype", arr.dtype)
    if dtype.kind not in "biuf":
        raise DataError(f"{where} holds values of type {arr.dtype}, not numbers; save the features as a float array.")
    if arr.ndim != 2:
        raise DataError(
            f"{where} has {arr.ndim} dimension(s) with shape {arr.shape}; a feature array must be 2-D (items x features)."
        )
    if arr.shape[0] == 0:
        raise DataError(f"{where} has 0 rows; export it again with data or remove it.")
    if arr.shape[1] == 0:
        raise DataError(f"{where} has 0 feature columns; export it again with data or remove it.")


def scan_rows(x: np.ndarray, where: str) -> np.ndarray:
    """Mask of rows that are present (not all NaN); refuse NaN/Inf inside a present row.

    A row sum is non-finite whenever the row holds a NaN or Inf, so the cheap sum finds the few
    suspect rows and only those are inspected element by element.
    """
    n, d = x.shape
    present = np.ones(n, dtype=bool)
    step = max(1, SCAN_CHUNK // max(d, 1))
    for start in range(0, n, step):
        chunk = x[start : start + step]
        with np.errstate(over="ignore", invalid="ignore"):
            sums = chunk.sum(axis=1)
        suspect = np.flatnonzero(~np.isfinite(sums))
        if suspect.size == 0:
            continue
        sub = chunk[suspect]
        all_nan = np.isnan(sub).all(axis=1)
        present[start + suspect[all_nan]] = False
        bad = ~np.isfinite(sub) & ~all_nan[:, None]
        if bad.any():
            r, c = np.argwhere(bad)[0]
            row = int(start + suspect[r])
            value = "NaN" if np.isnan(x[row, c]) else ("Inf" if x[row, c] > 0 else "-Inf")
            raise DataError(
                f"{where} has {value} at row {row}, column {int(c)}; fix or drop those values "
                "(only a whole row of NaN is allowed, meaning the modality is missing for that item)."
            )
    return present


def _cell_to_str(v: object) -> str | None:
    """One id or label as text; None when missing. Integral floats print as ints (3.0 -> '3')."""
    if v is None or v is pd.NA:
        return None
    if isinstance(v, bytes):
        v = v.decode("utf-8")  # strict: replacing bad bytes would make distinct ids equal
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return None
        return str(int(v)) if float(v).is_integer() else str(float(v))
    s = str(v)
    return s if s.strip() else None


def as_strings(values: np.ndarray | pd.Series, where: str, what: str) -> np.ndarray:
    """Ids or labels as an object array of str, refusing missing (null or blank) entries."""
    if isinstance(values, pd.Series):
        values = values.to_numpy(dtype=object, na_value=None)
    arr = np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(f"{where} has shape {arr.shape}; {what} must be a 1-D array with one entry per item.")
    inferred = pd.api.types.infer_dtype(arr, skipna=False) if arr.dtype.kind == "O" else ""
    if arr.dtype.kind in "iu" or inferred == "integer":
        out = arr.astype(str).astype(object)
    elif arr.dtype.kind == "U":
        out = arr.astype(object)
    elif inferred == "string":  # already Python str, the common case from Arrow and pandas
        out = arr
    else:
        cells = arr.tolist()
        try:
            out = np.array([_cell_to_str(v) for v in cells], dtype=object)
        except UnicodeDecodeError:
            i = next(j for j, v in enumerate(cells) if isinstance(v, bytes) and not _is_utf8(v))
            raise DataError(
                f"{where} has {what[:-1] if what.endswith('s') else what} bytes at row {i} that are not UTF-8 text; "
                "save them as text (for example as hex digits) so that distinct values stay distinct."
            ) from None
    blank = pd.isna(out) | (pd.Series(out, dtype=object).astype(str).str.strip() == "").to_numpy()
    if blank.any():
        i = int(np.argmax(blank))
        raise DataError(f"{where} has an empty {what[:-1] if what.endswith('s') else what} at row {i}; fill it in or drop that row.")
    return out


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# The characters names refuse too (store.common uses this): a tab, newline or terminal escape in an id
# would be echoed raw into terminals, CSV rows and messages.
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def unique_ids(ids: np.ndarray, where: str) -> np.ndarray:
    """Item ids as given, refusing control characters and duplicates."""
    bad = pd.Series(ids, dtype=object).astype(str).str.contains(CONTROL_CHARS)
    if bad.any():
        i = int(np.argmax(bad.to_numpy()))
        shown = CONTROL_CHARS.sub("?", str(ids[i]))[:40]
        raise DataError(
            f"{where} has the item id '{shown}' at row {i}, which contains a control character such as a tab or newline; "
            "use plain printable characters in item ids."
        )
    s = pd.Series(ids, dtype=object)
    dup = s.duplicated()
    if dup.any():
        raise DataError(f"{where} lists the item id '{s[dup].iloc[0]}' more than once; item ids must be unique.")
    return ids


def same_values(a: np.ndarray, a_where: str, b: np.ndarray, b_where: str, what: str) -> None:
    """Two sources of the same column (e.g. labels.npy and items.csv) must agree row by row."""
    if len(a) != len(b):
        raise DataError(f"{a_where} has {len(a)} {what} but {b_where} has {len(b)}; give one per item in both.")
    diff = np.flatnonzero(a != b)
    if diff.size:
        i = int(diff[0])
        raise DataError(
            f"{a_where} and {b_where} disagree on the {what} at row {i} ('{a[i]}' vs '{b[i]}'); keep one source or make them match."
        )
