"""The whole pipeline on a LUMA-shaped archive of N items, each phase its own process under ``/usr/bin/time -v``.

Phases: make the archive (``make_archive.py``), ``import`` it, ``train`` on a sample budget
(``--samples``, default 2,000,000 items drawn; training includes encoding every split and
registering the latents), ``load-model`` (the encode phase on its own: encode every split of the
trained checkpoint in chunks and register it), ``propose --k 100`` on the train split (every item but
the test ones), ``propose --k auto`` (Leiden on a sample, every item placed by its neighbours), ``evaluate --k 100`` on the test split (a stated stratified sample when large), and
``export`` of the catalog as Parquet. For each: wall time, peak RSS as the kernel counts it (``Maximum
resident set size``, which includes the touched pages of memory-mapped files) and items/s.

Usage: ``.venv/bin/python benchmarks/scale.py --items 100000 300000 --work /tmp/scale``
(a table per size on stdout, one JSON line per phase with ``--json``; the work folder is deleted
afterwards unless ``--keep``). Needs Debian's ``time`` package (``apt-get install time``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
TIME = "/usr/bin/time"
TARGETS_1M = {"import": 300, "train": 600, "encode": 180, "propose": 180, "evaluate": 120, "export": 120}
RSS_TARGET_GIB = 3.0


def _measure(cmd: list[str], log: Path) -> dict:
    """Run ``cmd`` under ``/usr/bin/time -v``; wall seconds and peak RSS (GiB) from its report."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open(log, "w") as fh:
        proc = subprocess.run([TIME, "-v", *cmd], stdout=subprocess.PIPE, stderr=fh, text=True, env=env, cwd=ROOT)
    text = log.read_text()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed (exit {proc.returncode}); see {log}:\n" + "\n".join(text.splitlines()[-15:]))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text).group(1)
    secs = 0.0
    for part in wall.split(":"):
        secs = secs * 60 + float(part)
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    return {"seconds": round(secs, 1), "peak_rss_gib": round(rss_kb / 2**20, 2), "stdout": proc.stdout}


def _n_test(arch: Path) -> int | None:
    """The test split's size of an archive made earlier (for ``--only`` on a kept work folder)."""
    import numpy as np

    files = sorted((arch / "test").glob("*.npy")) if (arch / "test").is_dir() else []
    return int(np.load(files[0], mmap_mode="r").shape[0]) if files else None


def run_size(items: int, work: Path, samples: int, k: int, only: list[str] | None = None,
             preset: str | None = None) -> list[dict]:
    work.mkdir(parents=True, exist_ok=True)
    arch, db, ckpt = work / "archive", work / "s.duckdb", work / "m.pt"
    cli = [PY, "-m", "mmae_core"]
    n_test = None
    phases = [
        ("make archive", [PY, str(ROOT / "benchmarks" / "make_archive.py"), "--items", str(items), "--out", str(arch)], items),
        ("import", [*cli, "import", str(arch), "--name", "arch", "--db", str(db)], items),
        ("train", [*cli, "train", "--dataset", "arch", "--samples", str(samples), "--model-name", "m", "--out", str(ckpt),
                   "--db", str(db), "--format", "json", *(["--preset", preset] if preset else [])], samples),
        ("encode", [*cli, "load-model", str(ckpt), "--dataset", "arch", "--model-name", "m2", "--db", str(db)], items),
        ("propose", [*cli, "propose", "--dataset", "arch", "--model", "m", "--k", str(k), "--split", "train", "--db", str(db)], None),
        ("propose auto", [*cli, "propose", "--dataset", "arch", "--model", "m", "--k", "auto", "--split", "train",
                          "--db", str(db)], None),
        ("evaluate", [*cli, "evaluate", "--dataset", "arch", "--model", "m", "--k", str(k), "--split", "test",
                      "--db", str(db), "--format", "json"], None),
        ("export", [*cli, "export", "--dataset", "arch", "--format", "parquet", "--out", str(work / "catalog.parquet"),
                    "--db", str(db)], items),
    ]
    rows = []
    if only:
        unknown = set(only) - {name for name, _, _ in phases}
        if unknown:
            raise SystemExit(f"unknown phase {sorted(unknown)[0]!r}; phases: {', '.join(name for name, _, _ in phases)}")
        phases = [p for p in phases if p[0] in only]
        n_test = _n_test(arch)
    for name, cmd, n in phases:
        m = _measure(cmd, work / f"{name.replace(' ', '_')}.log")
        if name == "make archive":
            n_test = json.loads(m["stdout"].strip().splitlines()[-1]).get("splits", {}).get("test")
        if n is None:
            n = (items - n_test) if name.startswith("propose") and n_test else (n_test or items)
        row = {"items": items, "phase": name, "seconds": m["seconds"], "peak_rss_gib": m["peak_rss_gib"],
               "items_per_s": round(n / max(m["seconds"], 1e-9)), "counted": n}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    out = ["| items | phase | wall | peak RSS | items/s (of) |", "|---:|---|---:|---:|---:|"]
    for r in rows:
        mins, secs = divmod(r["seconds"], 60)
        wall = f"{int(mins)} min {secs:.0f} s" if mins else f"{secs:.1f} s"
        out.append(f"| {r['items']:,} | {r['phase']} | {wall} | {r['peak_rss_gib']:.2f} GiB | {r['items_per_s']:,} ({r['counted']:,}) |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, nargs="+", default=[100_000, 300_000])
    ap.add_argument("--work", type=Path, default=Path("/tmp/mmae-scale"))
    ap.add_argument("--samples", type=int, default=2_000_000, help="training budget: items drawn")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--preset", default=None, help="the preset `train` trains (default: train's default)")
    ap.add_argument("--keep", action="store_true", help="keep the archives and stores")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--only", nargs="+", metavar="PHASE",
                    help="run only these phases on a work folder kept by an earlier run (--keep), e.g. --only 'propose auto'")
    args = ap.parse_args(argv)
    if not Path(TIME).exists():
        raise SystemExit(f"{TIME} is missing; install Debian's time package (apt-get install time).")
    rows: list[dict] = []
    for n in args.items:
        work = args.work / f"n{n}"
        try:
            rows += run_size(n, work, args.samples, args.k, args.only, args.preset)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    print("\n".join(json.dumps(r) for r in rows) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
