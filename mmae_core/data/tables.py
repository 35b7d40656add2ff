"""Reading Parquet/CSV feature tables (one modality, keyed by ``item_id``) and items tables.

Feature tables go through Arrow for both formats: it parses CSV an order of magnitude faster than
the pandas C parser on wide numeric files, and it lets each column be cast straight into one
preallocated float32 matrix instead of building a DataFrame first. Items tables are small and hold
free text (titles, captions), so they go through pandas.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mmae_core.errors import DataError
from mmae_core.data.layout import FileRef
from mmae_core.data.npy import empty_error

TABLE_ERRORS: tuple[type[BaseException], ...] = (pa.ArrowException, OSError, ValueError, EOFError)


def _detail(exc: BaseException) -> str:
    """The parser's reason, without the row it quotes (Arrow's "Expected 3 columns, got 2: <row>"):
    a message should name the problem, not echo the file's contents."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"(got \d+): .*", r"\1", text)
    return text.rstrip(".")[:160]


def _is_csv(ref: FileRef) -> bool:
    return ref.path.suffix.lower() == ".csv"


def _read_arrow(ref: FileRef) -> pa.Table:
    if ref.path.stat().st_size == 0:
        raise empty_error(ref.shown)
    try:
        if _is_csv(ref):
            return pacsv.read_csv(
                ref.path,
                convert_options=pacsv.ConvertOptions(column_types={"item_id": pa.string()}, strings_can_be_null=False),
            )
        return pq.read_table(ref.path)
    except TABLE_ERRORS as exc:
        if _is_csv(ref):
            raise DataError(f"{ref.shown} could not be read as CSV ({_detail(exc)}); fix the file and load it again.") from exc
        raise DataError(f"{ref.shown} could not be read as Parquet (it looks truncated or corrupt); export it again.") from exc


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t) or pa.types.is_null(t)


def feature_columns(names: list[str], type_of, num_rows: int, ref: FileRef) -> list[str]:
    """The feature columns of a table, after the checks that need only its schema and row count
    (so a Parquet file read by row groups is refused with the same sentences as one read whole)."""
    cols = [c for c in names if not c.startswith("__index_level_")]
    if "item_id" not in cols:
        raise DataError(f"{ref.shown} has no item_id column; add one so rows can be matched across modality files.")
    if num_rows == 0:
        raise DataError(f"{ref.shown} has no rows; export it again with data or remove it.")
    if cols.count("item_id") > 1:
        raise DataError(f"{ref.shown} has more than one item_id column; keep one.")
    feats = [c for c in cols if c != "item_id"]
    if "label" in feats:
        raise DataError(f"{ref.shown} has a label column, which is not a feature; move it to the split's items table (items.csv).")
    if not feats:
        raise DataError(f"{ref.shown} has no feature columns besides item_id; add the numeric feature columns.")
    for c in feats:
        if not _numeric(type_of(c)):
            raise DataError(
                f"column '{c}' in {ref.shown} is not numeric ({type_of(c)}); "
                "feature columns must hold numbers only, so move text to the items table or fix the values."
            )
    return feats


def as_matrix(part: "pa.Table | pa.RecordBatch", feats: list[str]) -> np.ndarray:
    """The feature columns of a table or of one batch of it as (rows, d) float32; nulls become NaN."""
    out = np.empty((part.num_rows, len(feats)), dtype=np.float32)
    for j, c in enumerate(feats):
        col = part.column(c)
        if pa.types.is_null(col.type):
            out[:, j] = np.nan
            continue
        out[:, j] = col.cast(pa.float32(), safe=False).to_numpy(zero_copy_only=False)
    return out


def read_feature_table(ref: FileRef) -> tuple[np.ndarray, np.ndarray]:
    """A modality's table as (raw item_id values, (n, d) float32 C-contiguous); nulls become NaN."""
    table = _read_arrow(ref)
    feats = feature_columns(table.column_names, lambda c: table.schema.field(c).type, table.num_rows, ref)
    ids = table.column("item_id").to_numpy(zero_copy_only=False)
    return ids, as_matrix(table, feats)


class ParquetRows:
    """A Parquet feature table read by row groups (``pyarrow.parquet.ParquetFile``), never whole.

    The schema checks run on open from the footer alone; ``ids`` reads only the item_id column and
    ``batches`` the feature columns, ``rows`` at a time, so memory stays near one row group (the
    unit Parquet decodes) plus one batch, whatever the file's size.
    """

    def __init__(self, ref: FileRef):
        self.ref = ref
        if ref.path.stat().st_size == 0:
            raise empty_error(ref.shown)
        try:
            # No pre-buffering, and a buffered reader: measured on a 100k-row, 1,025-column file, peak
            # RSS of reading it in batches fell from 1,121 MB to 623 MB (benchmarks/parquet_archive.py).
            self._pf = pq.ParquetFile(ref.path, pre_buffer=False, buffer_size=8 * 2**20)
            schema = self._pf.schema_arrow
        except TABLE_ERRORS as exc:
            raise self._corrupt() from exc
        self.n = int(self._pf.metadata.num_rows)
        self.feats = feature_columns(schema.names, lambda c: schema.field(c).type, self.n, ref)

    def _corrupt(self) -> DataError:
        return DataError(f"{self.ref.shown} could not be read as Parquet (it looks truncated or corrupt); export it again.")

    @property
    def dim(self) -> int:
        return len(self.feats)

    def ids(self) -> np.ndarray:
        try:
            return self._pf.read(columns=["item_id"]).column("item_id").to_numpy(zero_copy_only=False)
        except TABLE_ERRORS as exc:
            raise self._corrupt() from exc

    def batches(self, rows: int):
        """(start, float32 rows) over the file in order."""
        start = 0
        try:
            for batch in self._pf.iter_batches(batch_size=rows, columns=self.feats, use_threads=False):
                x = as_matrix(batch, self.feats)
                yield start, x
                start += len(x)
        except TABLE_ERRORS as exc:
            raise self._corrupt() from exc

    def close(self) -> None:
        self._pf.close()


def read_items_table(ref: FileRef) -> pd.DataFrame:
    """An items table (item_id, label, metadata); ``item_id`` and ``label`` are read as text."""
    if ref.path.stat().st_size == 0:
        raise empty_error(ref.shown)
    try:
        if _is_csv(ref):
            df = pd.read_csv(
                ref.path, dtype={"item_id": str, "label": str}, keep_default_na=False, na_values=[""]
            )
        else:
            df = pq.read_table(ref.path).to_pandas()
    except pd.errors.EmptyDataError as exc:
        raise empty_error(ref.shown) from exc
    except TABLE_ERRORS as exc:
        kind = "CSV" if _is_csv(ref) else "Parquet"
        raise DataError(f"{ref.shown} could not be read as {kind} ({_detail(exc)}); fix the file and load it again.") from exc
    if len(df) == 0:
        raise DataError(f"{ref.shown} has no rows; give one row per item or remove it.")
    return df.reset_index(drop=True)
