"""Turn a ``make_archive.py`` folder into the Parquet layout, chunk by chunk, to measure a streamed
Parquet import (``/usr/bin/time -v python -m mmae_core import OUT ...``).

Each ``<split>/<modality>.npy`` becomes ``<split>/<modality>.parquet`` (item_id + one float32 column
per dimension, one row group per ``--chunk`` rows, the item ids of ``items.parquet``); the items table
is copied. Memory stays near one chunk: the ``.npy`` is read in windows, each row group written at once.

Usage: ``.venv/bin/python benchmarks/make_archive.py --items 100000 --out /tmp/a100k`` then
``.venv/bin/python benchmarks/parquet_archive.py --src /tmp/a100k --out /tmp/a100k-pq``.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from mmae_core.data.lazy import NpyWindows  # noqa: E402


def convert(src: Path, out: Path, chunk: int) -> None:
    for split_dir in sorted(p for p in src.iterdir() if p.is_dir()):
        dest = out / split_dir.name
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(split_dir / "items.parquet", dest / "items.parquet")
        ids = pq.read_table(split_dir / "items.parquet", columns=["item_id"]).column("item_id")
        for npy in sorted(split_dir.glob("*.npy")):
            x = NpyWindows(npy)
            schema = pa.schema([("item_id", pa.string())] + [(f"f{j}", pa.float32()) for j in range(x.shape[1])])
            with pq.ParquetWriter(dest / f"{npy.stem}.parquet", schema) as w:
                for s, rows in x.windows(chunk):
                    cols = [ids.slice(s, len(rows))] + [pa.array(rows[:, j]) for j in range(rows.shape[1])]
                    w.write_table(pa.Table.from_arrays(cols, schema=schema), row_group_size=chunk)
            print(f"wrote {dest / npy.stem}.parquet", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--chunk", type=int, default=10_000)
    a = ap.parse_args()
    convert(a.src, a.out, a.chunk)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
