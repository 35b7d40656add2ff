"""Catalog exports: CSV injection made inert (text only), Parquet/JSON round trips, atomic files."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pandas as pd
import pytest

from store import StoreError, export_catalog, to_bytes

from testkit.data import store_with_proposals

DANGEROUS = ["=1+2", "+SUM(A1)", "-2+3", "@cmd", "\tTAB", "\rCR", "=HYPERLINK(\"http://x\",\"y\")"]


def frame() -> pd.DataFrame:
    return pd.DataFrame({
        "item_id": ["a", "b", "c", "d", "e", "f", "g"],
        "title": DANGEROUS,
        "note": ["fine", None, "a, b", "quote \" inside", "x;y", "ünïcode", "-"],
        "score": [-1.5, 2.0, -3.25, 0.0, np.nan, 1e-3, -7.0],
        "count": np.array([-1, 2, -3, 4, 5, 6, -7], dtype=np.int64),
    })


def test_csv_neutralises_formula_text_but_not_numbers(tmp_path):
    out = export_catalog(frame(), "csv", tmp_path / "cat.csv")
    rows = list(csv.DictReader(io.StringIO(out.read_bytes().decode("utf-8"), newline="")))
    assert [r["title"] for r in rows] == ["'" + v for v in DANGEROUS]
    assert rows[6]["note"] == "'-"
    assert [r["score"] for r in rows][:3] == ["-1.5", "2.0", "-3.25"]
    assert [r["count"] for r in rows] == ["-1", "2", "-3", "4", "5", "6", "-7"]
    assert not any(r[col].startswith(("=", "+", "-", "@", "\t", "\r"))
                   for r in rows for col in ("title", "note", "item_id"))
    back = pd.read_csv(out)
    assert back["count"].tolist() == frame()["count"].tolist()
    np.testing.assert_allclose(back["score"], frame()["score"], equal_nan=True)
    assert back["note"].iloc[3] == 'quote " inside' and back["note"].iloc[2] == "a, b" and back["note"].iloc[5] == "ünïcode"
    assert back["title"].str.slice(1).tolist() == DANGEROUS  # the text itself is intact behind the quote


def test_parquet_and_json_round_trip_unchanged(tmp_path):
    df = frame()
    pq_path = export_catalog(df, "parquet", tmp_path / "cat.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(pq_path), df, check_dtype=False)
    js_path = export_catalog(df, "json", tmp_path / "cat.json")
    records = json.loads(js_path.read_text(encoding="utf-8"))
    assert [r["title"] for r in records] == DANGEROUS  # programs read JSON: left as is
    assert records[4]["score"] is None and records[0]["count"] == -1


def test_bytes_match_the_written_file(tmp_path):
    df = frame()
    for fmt in ("csv", "parquet", "json"):
        path = export_catalog(df, fmt, tmp_path / f"cat.{fmt}")
        assert path.read_bytes() == to_bytes(df, fmt)


def test_atomic_write_replaces_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "out" / "catalog.csv"
    export_catalog(frame(), "csv", target)
    export_catalog(frame().iloc[:2], "csv", target)
    assert len(pd.read_csv(target)) == 2
    assert sorted(p.name for p in target.parent.iterdir()) == ["catalog.csv"]


def test_bad_format_or_folder_is_a_sentence(tmp_path):
    with pytest.raises(StoreError) as err:
        export_catalog(frame(), "xlsx", tmp_path / "c.xlsx")
    assert "csv, parquet or json" in str(err.value)
    with pytest.raises(StoreError) as err:
        export_catalog(frame(), "csv", tmp_path)
    assert "is a folder" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_real_catalog_exports_in_every_format(tmp_path):
    store, _ = store_with_proposals(tmp_path / "s.duckdb")
    store.accept("toy", "m1", 0, "ann", name="=cmd|' /C calc'!A0")
    cat = store.catalog("toy")
    text = to_bytes(cat, "csv").decode("utf-8")
    assert "'=cmd" in text and "\n=cmd" not in text and ",=cmd" not in text
    back = pd.read_parquet(io.BytesIO(to_bytes(cat, "parquet")))
    assert back["tag"].fillna("").tolist() == cat["tag"].fillna("").tolist()
    records = json.loads(to_bytes(cat, "json"))
    assert len(records) == len(cat) and records[0]["tag"] == "=cmd|' /C calc'!A0"
