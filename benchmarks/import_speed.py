"""How fast and how lean a LUMA-sized feature set loads, per upload layout.

Generates 29,059 items (train 21,000 / test 4,200 / ood 3,859; image 50, audio 1024, text 768 dims,
about 214 MB of float32) in a temp folder, in the npz layout, the npy-folder layout, a zip of the
npy folder and the Parquet layout, then times ``load_path`` on each (median of 3). Each load runs in
a fresh child process so that its peak RSS (the kernel's VmHWM, reset after the imports; else
``resource.getrusage``) is the load's own and not left over from generating the data.

Run: ``.venv/bin/python benchmarks/import_speed.py`` (add ``--quick`` for a 10x smaller set).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SPLITS = {"train": 21_000, "test": 4_200, "ood": 3_859}
DIMS = {"image": 50, "audio": 1024, "text": 768}
REPEATS = 3


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> None:
    """Start the peak-RSS count afresh (Linux), so the figure is the load's and not the imports'."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_mb() -> float:
    """Peak RSS of this process. ``getrusage`` keeps the parent's peak across fork+exec on Linux,
    so the kernel's VmHWM is preferred where it exists."""
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(root: Path, scale: float) -> dict[str, Path]:
    """Write the same random set in every layout; returns layout name -> path to load."""
    rng = np.random.default_rng(0)
    classes = np.array([f"class-{i:02d}" for i in range(50)])
    npz_dir, npy_dir, pq_dir = root / "npz", root / "npy", root / "parquet"
    for d in (npz_dir, npy_dir, pq_dir):
        d.mkdir()
    import pyarrow as pa
    import pyarrow.parquet as pq

    for split, n in SPLITS.items():
        n = max(10, int(n * scale))
        arrays = {m: rng.standard_normal((n, d), dtype=np.float32) for m, d in DIMS.items()}
        labels = classes[rng.integers(0, len(classes), n)]
        ids = np.array([f"{split}-{i:06d}" for i in range(n)])
        np.savez(npz_dir / f"{split}.npz", labels=labels, ids=ids, **arrays)
        (npy_dir / split).mkdir()
        for m, x in arrays.items():
            np.save(npy_dir / split / f"{m}.npy", x)
            cols = {"item_id": pa.array(ids)}
            cols.update({f"f{j}": pa.array(x[:, j]) for j in range(x.shape[1])})
            pq.write_table(pa.table(cols), pq_dir / f"{split}_{m}.parquet")
        np.save(npy_dir / split / "labels.npy", labels)
        np.save(npy_dir / split / "ids.npy", ids)
        pq.write_table(pa.table({"item_id": ids, "label": labels}), pq_dir / f"{split}_items.parquet")
    zpath = root / "npy.zip"
    with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for f in sorted(npy_dir.rglob("*.npy")):
            zf.write(f, f.relative_to(npy_dir).as_posix())
    return {"npz": npz_dir, "npy folder": npy_dir, "zip (deflate)": zpath, "parquet": pq_dir}


def measure(path: str) -> dict[str, object]:
    """One timed load; peak RSS is counted from just before ``load_path``."""
    sys.path.insert(0, str(ROOT))
    from mmae_core.data.features import load_path

    _reset_peak()
    base = _status_mb("VmRSS") or _peak_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    fs = load_path(path, "bench")
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    items = sum(s.n for s in fs.splits.values())
    data_mb = sum(x.nbytes for s in fs.splits.values() for x in s.features.values()) / 2**20
    return {"seconds": seconds, "cpu": cpu, "peak_mb": _peak_mb(), "base_mb": base, "items": items,
            "dims": "/".join(str(d) for d in fs.modalities.values()), "data_mb": data_mb}


def run_layout(path: Path, repeats: int, in_process: bool) -> dict[str, object]:
    runs = []
    for _ in range(repeats):
        if in_process:
            runs.append(measure(str(path)))
            continue
        out = subprocess.run([sys.executable, __file__, "--child", str(path)], check=True, capture_output=True, text=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    row = dict(runs[0])
    for key in ("seconds", "cpu", "peak_mb", "base_mb"):
        row[key] = statistics.median(float(x[key]) for x in runs)  # type: ignore[arg-type]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a 10x smaller set, for a smoke run")
    ap.add_argument("--scale", type=float, default=None, help="fraction of the LUMA item counts (default 1)")
    ap.add_argument("--repeats", type=int, default=REPEATS, help="timed loads per layout (the median is shown)")
    ap.add_argument("--in-process", action="store_true", help="time in this process (faster; peak RSS is then not per load)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON lines instead of a table")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child)))
        return
    with tempfile.TemporaryDirectory(prefix="mmae-bench-") as tmp:
        t0 = time.perf_counter()
        scale = args.scale if args.scale is not None else (0.1 if args.quick else 1.0)
        paths = generate(Path(tmp), scale)
        rows = {layout: run_layout(path, args.repeats, args.in_process) for layout, path in paths.items()}
        if args.json:
            for layout, r in rows.items():
                print(json.dumps({"layout": layout, **r}))
            return
        print(f"generated the set in every layout and timed the loads in {time.perf_counter() - t0:.1f} s\n")
        header = f"{'layout':<14} {'items':>7} {'dims':>12} {'data MB':>8} {'seconds':>8} {'CPU s':>6} {'peak RSS MB':>12} {'before load MB':>15}"
        print(header)
        print("-" * len(header))
        for layout, r in rows.items():
            print(f"{layout:<14} {r['items']:>7} {r['dims']:>12} {r['data_mb']:>8.0f} {r['seconds']:>8.2f} {r['cpu']:>6.2f} "
                  f"{r['peak_mb']:>12.0f} {r['base_mb']:>15.0f}")
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        where = "in this process" if args.in_process else "each in a fresh process"
        print(f"\nmedian of {args.repeats} runs, {where}; 'before load' is the RSS after imports, 'peak RSS' the highest RSS\n"
              "during load_path (VmHWM reset after imports), so peak - before = the load's own memory;\n"
              f"seconds is wall time, CPU s the process CPU time (robust to other load: 1-min load average was {load:.1f}).")


if __name__ == "__main__":
    main()
