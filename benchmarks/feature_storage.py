"""Which on-disk form the store keeps features in: ``.npy`` files, one Parquet file, or a DuckDB table.

The store must write an archive's features once (import), read them front to back (encoding every
split) and gather random batches of rows (training). Each form is written and read by the library
that owns it, each operation in its own process so its peak RSS (``ru_maxrss``, the kernel's count,
which includes touched pages of memory-mapped files) is its own:

* ``npy``: one file per modality, appended in chunks (``data.lazy.NpyAppender``), read through
  short-lived memory maps (``data.lazy.NpyWindows``), a batch by fancy indexing the sorted rows;
* ``parquet``: one file, a ``FixedSizeList<float32>`` column per modality, row groups of
  ``GROUP_ROWS``, written with ``pyarrow.parquet.ParquetWriter``, read by ``iter_batches``; a batch
  reads the row groups its rows fall in;
* ``duckdb``: one table ``(row_idx, <modality> FLOAT[d] ...)`` inserted from Arrow in chunks, read in
  ``row_idx`` order through ``to_arrow_reader``; a batch is a join with the wanted row numbers.

Usage: ``.venv/bin/python benchmarks/feature_storage.py --items 100000 --work /tmp/fstore``
(LUMA's dimensions 50 + 1,024 + 768 by default; a markdown table on stdout, the work folder removed
unless ``--keep``).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHUNK = 20_000  # rows generated and written at a time
GROUP_ROWS = 16_384  # Parquet row group
FORMS = ("npy", "parquet", "duckdb")
OPS = ("write", "scan", "batches")


def _chunk(s: int, n: int, dims: dict[str, int]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(s)  # deterministic per chunk: every form stores the same numbers
    return {m: rng.standard_normal((n, d), dtype=np.float32) for m, d in dims.items()}


def _chunks(items: int, dims: dict[str, int]):
    for s in range(0, items, CHUNK):
        yield s, _chunk(s, min(CHUNK, items - s), dims)


def _arrow(s: int, chunk: dict[str, np.ndarray]):
    import pyarrow as pa

    n = len(next(iter(chunk.values())))
    cols = {"row_idx": pa.array(np.arange(s, s + n, dtype=np.int64))}
    for m, x in chunk.items():
        cols[m] = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])
    return pa.table(cols)


def write(form: str, work: Path, items: int, dims: dict[str, int]) -> None:
    if form == "npy":
        from mmae_core.data.lazy import NpyAppender

        outs = {m: NpyAppender(work / f"{m}.npy", items, d) for m, d in dims.items()}
        for _, chunk in _chunks(items, dims):
            for m, x in chunk.items():
                outs[m].append(x)
        for w in outs.values():
            w.close()
    elif form == "parquet":
        import pyarrow.parquet as pq

        writer = None
        for s, chunk in _chunks(items, dims):
            t = _arrow(s, chunk)
            writer = writer or pq.ParquetWriter(work / "features.parquet", t.schema, compression="none")
            writer.write_table(t, row_group_size=GROUP_ROWS)
        writer.close()
    else:
        import duckdb

        con = duckdb.connect(str(work / "features.duckdb"))
        cols = ", ".join(f"{m} FLOAT[{d}]" for m, d in dims.items())
        con.execute(f"CREATE TABLE f (row_idx BIGINT, {cols})")
        for s, chunk in _chunks(items, dims):
            block = _arrow(s, chunk)  # noqa: F841  (read by name in the statement below)
            con.execute("INSERT INTO f SELECT * FROM block")
        con.close()


def scan(form: str, work: Path, items: int, dims: dict[str, int]) -> float:
    """Every row, front to back, in chunks; returns a checksum so nothing is optimised away."""
    total = 0.0
    if form == "npy":
        from mmae_core.data.lazy import NpyWindows

        for m in dims:
            for _, w in NpyWindows(work / f"{m}.npy").windows():
                total += float(w[:, 0].sum())
    elif form == "parquet":
        import pyarrow.parquet as pq

        for b in pq.ParquetFile(work / "features.parquet").iter_batches(batch_size=CHUNK, columns=list(dims)):
            for m, d in dims.items():
                x = b.column(m).values.to_numpy(zero_copy_only=False).reshape(-1, d)
                total += float(x[:, 0].sum())
    else:
        import duckdb

        con = duckdb.connect(str(work / "features.duckdb"), read_only=True)
        reader = con.execute(f"SELECT {', '.join(dims)} FROM f ORDER BY row_idx").to_arrow_reader(CHUNK)
        for b in reader:
            for m, d in dims.items():
                x = b.column(m).values.to_numpy(zero_copy_only=False).reshape(-1, d)
                total += float(x[:, 0].sum())
        con.close()
    return total


def batches(form: str, work: Path, items: int, dims: dict[str, int], n_batches: int, batch: int) -> float:
    """``n_batches`` random batches of ``batch`` rows (the sampler training uses: seeded, sorted)."""
    rng = np.random.default_rng(0)
    total = 0.0
    picks = [np.sort(rng.choice(items, batch, replace=False)) for _ in range(n_batches)]
    if form == "npy":
        from mmae_core.data.lazy import NpyWindows

        files = {m: NpyWindows(work / f"{m}.npy") for m in dims}
        for idx in picks:
            for m in dims:
                total += float(files[m][idx][:, 0].sum())
    elif form == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(work / "features.parquet")
        starts = np.cumsum([0] + [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)])
        for idx in picks:
            groups = np.searchsorted(starts, idx, side="right") - 1
            for g in np.unique(groups):
                t = pf.read_row_group(int(g), columns=list(dims))
                local = idx[groups == g] - starts[g]
                for m, d in dims.items():
                    x = t.column(m).combine_chunks().values.to_numpy(zero_copy_only=False).reshape(-1, d)[local]
                    total += float(x[:, 0].sum())
    else:
        import duckdb
        import pyarrow as pa

        con = duckdb.connect(str(work / "features.duckdb"), read_only=True)
        for idx in picks:
            want = pa.table({"row_idx": pa.array(idx.astype(np.int64))})  # noqa: F841
            t = con.execute(f"SELECT {', '.join(dims)} FROM f JOIN want USING (row_idx) ORDER BY row_idx").to_arrow_table()
            for m, d in dims.items():
                x = t.column(m).combine_chunks().values.to_numpy(zero_copy_only=False).reshape(-1, d)
                total += float(x[:, 0].sum())
        con.close()
    return total


def _child(args: argparse.Namespace) -> None:
    dims = json.loads(args.dims_json)
    work = Path(args.work)
    t0 = time.perf_counter()
    if args.op == "write":
        write(args.form, work, args.items, dims)
    elif args.op == "scan":
        scan(args.form, work, args.items, dims)
    else:
        batches(args.form, work, args.items, dims, args.n_batches, args.batch)
    secs = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(json.dumps({"seconds": secs, "peak_rss_gib": rss}))


def _size(work: Path) -> int:
    return sum(p.stat().st_size for p in work.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--dims", default="image:50,audio:1024,text:768")
    ap.add_argument("--work", type=Path, default=Path("/tmp/mmae-feature-storage"))
    ap.add_argument("--batches", dest="n_batches", type=int, default=50)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--forms", default=",".join(FORMS))
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--child", nargs=2, metavar=("FORM", "OP"), help=argparse.SUPPRESS)
    ap.add_argument("--dims-json", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        args.form, args.op = args.child
        _child(args)
        return 0
    dims = {m: int(d) for m, d in (p.split(":") for p in args.dims.split(","))}
    rows = []
    for form in args.forms.split(","):
        work = args.work / form
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        row = {"form": form}
        for op in OPS:
            out = subprocess.run(
                [sys.executable, __file__, "--child", form, op, "--dims-json", json.dumps(dims), "--work", str(work),
                 "--items", str(args.items), "--batches", str(args.n_batches), "--batch", str(args.batch)],
                check=True, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)),
            )
            m = json.loads(out.stdout.strip().splitlines()[-1])
            row[op] = m
            if op == "write":
                row["bytes"] = _size(work)
            print(json.dumps({"form": form, "op": op, **m}), file=sys.stderr, flush=True)
        rows.append(row)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    gb = sum(dims.values()) * 4 * args.items / 1e9
    print(f"{args.items:,} items, {sum(dims.values()):,} float32 columns ({gb:.2f} GB); batches: {args.n_batches} x {args.batch} random rows\n")
    print("| form | on disk (GB) | write s | write peak RSS (GiB) | full scan s | scan peak RSS | ms per batch | batch peak RSS |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['form']} | {r['bytes'] / 1e9:.2f} | {r['write']['seconds']:.1f} | {r['write']['peak_rss_gib']:.2f} | "
              f"{r['scan']['seconds']:.1f} | {r['scan']['peak_rss_gib']:.2f} | "
              f"{1000 * r['batches']['seconds'] / args.n_batches:.0f} | {r['batches']['peak_rss_gib']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
