"""Turning one split's files into a ``Split``: align rows, ids, labels and the items table.

Two alignments exist. Arrays (``.npy``/``.npz``) carry no ids, so everything about a
split lines up by position. Parquet/CSV feature tables carry ``item_id``, so their rows are matched
by id, and an item missing from one modality's table becomes an all-NaN row there. A split must use
one kind, since position and id cannot both be the key.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mmae_core.data.dataset import RESERVED_NAMES, Split
from mmae_core.errors import DataError
from mmae_core.data.checks import as_features, check_feature_shape, as_strings, same_values, scan_rows, unique_ids
from mmae_core.data.layout import SplitFiles
from mmae_core.data.lazy import NpyWindows
from mmae_core.data.npy import open_windows, read_npy, read_npz
from mmae_core.data.stream import Staged, reorder, stage_npy_member, stage_table
from mmae_core.data.tables import read_feature_table, read_items_table


@dataclass
class Loaded:
    """A split plus, per modality, the file it came from (for messages that compare splits)."""

    split: Split
    where: dict[str, str]
    ids_where: str


@dataclass
class _Column:
    values: np.ndarray
    where: str


def _pick(cands: list[_Column], what: str) -> _Column | None:
    """The one value of a side column given by several sources; they must agree (labels: see
    ``_label_names`` for integer codes beside names)."""
    if not cands:
        return None
    best = cands[0]
    for other in cands[1:]:
        if what == "labels":
            best = _label_names(best, other)
        else:
            same_values(best.values, best.where, other.values, other.where, what)
    return best


def _is_code(v: object) -> bool:
    return isinstance(v, str) and v.lstrip("-").isdigit()


def _label_names(a: _Column, b: _Column) -> _Column:
    """Of two label columns, the one to keep: equal ones, or the names where one holds integer codes.

    Why: a common layout is ``labels.npy`` with class numbers beside an items table with class names
    (a first real upload was refused for '0' vs 'zero'). When the two agree as a mapping, each code
    always with the same name and each name with the same code, the names are kept. A code seen with
    two names (or a name with two codes) is a true conflict, refused naming both rows.
    """
    if len(a.values) != len(b.values):
        same_values(a.values, a.where, b.values, b.where, "labels")  # the row-count sentence
    if (a.values == b.values).all():
        return a
    codes, names = (a, b) if all(map(_is_code, a.values)) else (b, a)
    if not all(map(_is_code, codes.values)) or any(map(_is_code, names.values)):
        same_values(a.values, a.where, b.values, b.where, "labels")  # not codes beside names: the old rule
    for src, dst, src_where, dst_where in ((codes.values, names.values, codes.where, names.where),
                                           (names.values, codes.values, names.where, codes.where)):
        pairs = pd.DataFrame({"k": src, "v": dst})
        split_keys = pairs.groupby("k", sort=False)["v"].transform("nunique").to_numpy() > 1
        if split_keys.any():
            j = int(np.argmax(split_keys))
            k = src[j]
            i = int(np.flatnonzero((src == k) & (dst != dst[j]))[0])
            v = dst[i]
            raise DataError(
                f"{src_where} and {dst_where} do not agree as a mapping: label '{k}' goes with '{dst[j]}' at row {j} "
                f"but with '{v}' at row {i}; fix one of the two rows, or keep only one label source."
            )
    return names


def _items(sf: SplitFiles) -> pd.DataFrame | None:
    return read_items_table(sf.items) if sf.items is not None else None


def _has_labels(items: pd.DataFrame) -> bool:
    """A label column left wholly empty (an unlabelled OOD split, say) means no labels, not an error."""
    return "label" in items.columns and not items["label"].isna().all()


def _meta(items: pd.DataFrame | None) -> pd.DataFrame | None:
    if items is None:
        return None
    rest = [c for c in items.columns if c not in ("item_id", "label")]
    return items[rest].reset_index(drop=True) if rest else None


def _npy_features(ref: "object", stream: bool, stage: Path | None = None) -> "np.ndarray | NpyWindows":
    """A modality's ``.npy``: read whole, or with ``stream`` left on disk to be read in windows (a
    zip member, given a ``stage`` folder, decompressed there window by window first)."""
    lazy = None
    if stream and stage is not None and ref.member is not None:
        lazy = stage_npy_member(ref, stage)
    elif stream:
        lazy = open_windows(ref)
    if lazy is None:
        return as_features(read_npy(ref), ref.shown)
    check_feature_shape(lazy, ref.shown)
    return lazy


def load_split(sf: SplitFiles, max_uncompressed: int, stream: bool = False, stage: Path | None = None) -> Loaded:
    """``stream``: plain ``.npy`` feature files stay on disk (``lazy.NpyWindows``) and are checked
    window by window, so an archive larger than memory can be imported. ``stage`` (a folder the
    caller owns and removes): Parquet tables and ``.npy`` zip members are converted there piece by
    piece (``stream``) and read in windows too, instead of whole."""
    arrays: dict[str, tuple[np.ndarray, str]] = {}  # modality -> (float32 features, where)
    ids_c: list[_Column] = []
    labels_c: list[_Column] = []
    if sf.npz is not None:
        for key, arr in read_npz(sf.npz, max_uncompressed):
            where = f"array '{key}' in {sf.npz.shown}"
            if key == "labels":
                labels_c.append(_Column(as_strings(arr, where, "labels"), where))
            elif key == "ids":
                ids_c.append(_Column(unique_ids(as_strings(arr, where, "ids"), where), where))
            elif key in RESERVED_NAMES:
                raise DataError(f"{sf.npz.shown} has an array named '{key}', a reserved name; rename it or save it as 'labels' or 'ids'.")
            else:
                arrays[key] = (as_features(arr, where), where)
            del arr  # drop a float64 original before the next member is read
    for m, ref in sf.arrays.items():
        if m in arrays:
            raise DataError(f"{ref.shown} and {sf.npz.shown if sf.npz else ''} both give the {sf.split} modality '{m}'; keep only one of them.")
        arrays[m] = (_npy_features(ref, stream, stage), ref.shown)
    if sf.ids is not None:
        ids_c.append(_Column(unique_ids(as_strings(read_npy(sf.ids), sf.ids.shown, "ids"), sf.ids.shown), sf.ids.shown))
    if sf.labels is not None:
        labels_c.append(_Column(as_strings(read_npy(sf.labels), sf.labels.shown, "labels"), sf.labels.shown))
    if arrays and sf.tables:
        a = next(iter(arrays.values()))[1]
        t = next(iter(sf.tables.values())).shown
        raise DataError(
            f"the {sf.split} split mixes position-aligned arrays ({a}) with item_id tables ({t}); use one kind per split."
        )
    if not arrays and not sf.tables:
        raise DataError(f"the {sf.split} split has no feature files ({sf.describe()}); add at least one modality such as {sf.split}/image.npy.")
    items = _items(sf)
    if arrays:
        return _by_position(sf, arrays, ids_c, labels_c, items)
    return _by_item_id(sf, ids_c, labels_c, items, stage if stream else None)


def _items_columns(sf: SplitFiles, items: pd.DataFrame | None, ids_c: list[_Column], labels_c: list[_Column]) -> None:
    if items is None or sf.items is None:
        return
    where = sf.items.shown
    if "item_id" in items.columns:
        ids_c.append(_Column(unique_ids(as_strings(items["item_id"], f"the item_id column of {where}", "item ids"), where), where))
    if _has_labels(items):
        labels_c.append(_Column(as_strings(items["label"], f"the label column of {where}", "labels"), where))


def _by_position(
    sf: SplitFiles,
    arrays: dict[str, tuple[np.ndarray, str]],
    ids_c: list[_Column],
    labels_c: list[_Column],
    items: pd.DataFrame | None,
) -> Loaded:
    feats: dict[str, np.ndarray] = {}
    where: dict[str, str] = {}
    first: str | None = None
    for m, (x, w) in arrays.items():
        if first is not None and x.shape[0] != feats[first].shape[0]:
            raise DataError(
                f"{w} has {x.shape[0]} rows but {where[first]} has {feats[first].shape[0]}; "
                "every modality of a split needs one row per item, in the same order."
            )
        first = first or m
        feats[m], where[m] = x, w
    n = feats[first].shape[0]  # type: ignore[index]
    _items_columns(sf, items, ids_c, labels_c)
    if items is not None and len(items) != n:
        raise DataError(f"{sf.items.shown} has {len(items)} rows but {where[first]} has {n}; give one items row per feature row.")  # type: ignore[union-attr]
    for c in ids_c + labels_c:
        if len(c.values) != n:
            raise DataError(f"{c.where} has {len(c.values)} rows but {where[first]} has {n}; give one entry per feature row.")
    ids = _pick(ids_c, "item ids")
    labels = _pick(labels_c, "labels")
    return _finish(sf, feats, where, ids, labels, _meta(items), n)


def _by_item_id(sf: SplitFiles, ids_c: list[_Column], labels_c: list[_Column], items: pd.DataFrame | None,
                stage: Path | None = None) -> Loaded:
    tables: dict[str, tuple[np.ndarray, "np.ndarray | Staged", str]] = {}
    for m, ref in sf.tables.items():
        if stage is not None and ref.path.suffix.lower() == ".parquet":
            raw, x = stage_table(ref, stage)
        else:
            raw, x = read_feature_table(ref)
        tid = unique_ids(as_strings(raw, f"the item_id column of {ref.shown}", "item ids"), ref.shown)
        tables[m] = (tid, x, ref.shown)
    # The order of the split: ids.npy, else the items table, else first appearance across the tables.
    order_where: str | None = None
    if ids_c:
        order, order_where = ids_c[0].values, ids_c[0].where
    elif items is not None and "item_id" in items.columns:
        order = as_strings(items["item_id"], f"the item_id column of {sf.items.shown}", "item ids")  # type: ignore[union-attr]
        order_where = sf.items.shown  # type: ignore[union-attr]
        unique_ids(order, order_where)
    else:
        order = pd.unique(np.concatenate([t[0] for t in tables.values()]))
    index = pd.Index(order)
    n = len(order)
    feats: dict[str, np.ndarray] = {}
    where: dict[str, str] = {}
    for m, (tid, x, shown) in tables.items():
        pos = index.get_indexer(tid)
        if (pos < 0).any():
            raise DataError(
                f"the item '{tid[int(np.argmax(pos < 0))]}' in {shown} is not listed in {order_where}; "
                "add it there or remove that row."
            )
        if len(pos) == n and (pos == np.arange(n)).all():
            feats[m] = x
        elif isinstance(x, Staged):
            feats[m] = reorder(x, pos, n, stage)  # type: ignore[arg-type]
        else:
            full = np.full((n, x.shape[1]), np.nan, dtype=np.float32)
            full[pos] = x
            feats[m] = full
        where[m] = shown
    tables.clear()
    if items is not None and sf.items is not None:
        items = _align_items(sf, items, index, order_where)
        if _has_labels(items):
            labels_c.append(_Column(as_strings(items["label"], f"the label column of {sf.items.shown}", "labels"), sf.items.shown))
    if labels_c and order_where is None:
        raise DataError(
            f"{labels_c[0].where} has no item ids to line up with, because the {sf.split} features are item_id tables; "
            f"put the labels in the label column of {sf.split}/items.csv instead."
        )
    for c in labels_c:
        if len(c.values) != n:
            raise DataError(f"{c.where} has {len(c.values)} rows but {order_where} lists {n} items; give one label per item.")
    ids = _Column(np.asarray(order, dtype=object), order_where or sf.describe())
    labels = _pick(labels_c, "labels")
    return _finish(sf, feats, where, ids, labels, _meta(items), n)


def _align_items(sf: SplitFiles, items: pd.DataFrame, index: pd.Index, order_where: str | None) -> pd.DataFrame:
    """Reorder an items table to the split's order by item_id (or by position when it has no ids)."""
    shown = sf.items.shown  # type: ignore[union-attr]
    n = len(index)
    if "item_id" not in items.columns:
        if order_where is None:
            raise DataError(f"{shown} has no item_id column to match the {sf.split} item_id tables; add an item_id column.")
        if len(items) != n:
            raise DataError(f"{shown} has {len(items)} rows but {order_where} lists {n} items; give one items row per item.")
        return items
    ids = unique_ids(as_strings(items["item_id"], f"the item_id column of {shown}", "item ids"), shown)
    if len(ids) != n:
        raise DataError(f"{shown} has {len(ids)} rows but the {sf.split} features cover {n} items; give one items row per item.")
    pos = pd.Index(ids).get_indexer(index)
    if (pos < 0).any():
        raise DataError(f"item '{index[int(np.argmax(pos < 0))]}' is missing from {shown}; add a row for it.")
    return items.iloc[pos].reset_index(drop=True)


def _finish(
    sf: SplitFiles,
    feats: dict[str, np.ndarray],
    where: dict[str, str],
    ids: _Column | None,
    labels: _Column | None,
    meta: pd.DataFrame | None,
    n: int,
) -> Loaded:
    none = np.ones(n, dtype=bool)
    for m, x in feats.items():
        none &= ~scan_rows(x, where[m])
    if ids is None:
        item_ids = np.array([f"{sf.split}-{i:06d}" for i in range(n)], dtype=object)
        ids_where = f"the made-up ids of {sf.split}"
    else:
        item_ids, ids_where = ids.values, ids.where
    if none.any():
        i = int(np.argmax(none))
        raise DataError(
            f"item '{item_ids[i]}' (row {i}) has no modality at all in {', '.join(where.values())}; "
            "drop it or supply at least one of its feature rows."
        )
    split = Split(item_ids=item_ids, features=feats, labels=None if labels is None else labels.values, meta=meta)
    return Loaded(split, where, ids_where)
