"""Cross-modal search from the command line at archive size (a query on 1M stored latents).

Each ``python -m mmae_core search`` is a new process, so without help it would rebuild the index of
the target latents on every call (19-44 s at 1M on this machine). The first call builds it and saves
it beside the store (``STORE.indexes/``, ``mmae_core/search_index.IndexFiles``); every later call
memory-maps it. This script builds a store with ``n`` items whose 128-d image and text latents are
drawn from 50 Gaussian classes (no training: the latents are the point), then times ``--calls``
consecutive CLI searches (text -> image, top 10, JSON) as a user would run them, wall clock from
process start to exit, Python and library imports included.

Both search spaces are timed (``--spaces shared,latent``): the shared space (the default) also fits,
or loads, the model's shared space and projects the latents into it.

Run: ``.venv/bin/python benchmarks/search_cli.py [--sizes 100000,1000000] [--calls 3] [--spaces shared,latent]``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmae_core.data.dataset import FeatureSet, Split  # noqa: E402
from store import Store  # noqa: E402

DIM = 128
CLASSES = 50


def build(db: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CLASSES, DIM)).astype(np.float32) * 2
    splits, latents = {}, {}
    for split, size in (("train", 1_000), ("test", n)):  # a dataset needs a train split; the search runs on test
        ids = np.asarray([f"{split[:2]}{i:07d}" for i in range(size)], dtype=object)
        labels = rng.integers(0, CLASSES, size)
        feats = {m: rng.normal(size=(size, 4)).astype(np.float32) for m in ("image", "text")}
        splits[split] = Split(item_ids=ids, features=feats, labels=labels.astype(str).astype(object))
        lat = {k: centres[labels] + rng.normal(size=(size, DIM)).astype(np.float32) for k in ("image", "text")}
        lat["fused"] = (lat["image"] + lat["text"]) / 2
        latents[split] = lat
    fs = FeatureSet(name="archive", modalities={"image": 4, "text": 4}, splits=splits, synthetic=True,
                    source="benchmarks/search_cli.py", attrs={"seed": seed})
    store = Store(db)
    store.add_dataset(fs)
    store.add_model("archive", "m", b"latents only", {"latent": DIM}, {}, latents)


def cli_search(db: Path, item: str, space: str) -> tuple[float, list[dict]]:
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "mmae_core", "search", "--dataset", "archive", "--model", "m", "--item", item,
         "--from", "text", "--to", "image", "--top", "10", "--space", space, "--format", "json", "--db", str(db)],
        cwd=ROOT, check=True, capture_output=True, text=True)
    return time.perf_counter() - t, json.loads(out.stdout)


def folder_mb(p: Path) -> float:
    return sum(f.stat().st_size for f in p.glob("*")) / 2**20 if p.exists() else 0.0


def saved(files: Path) -> tuple[bool, bool]:
    """(an index file, the shared space's arrays) on disk beside the store."""
    return any(files.glob("*.faiss")), any(files.glob("*.arrays.npz"))


def describe(before: tuple[bool, bool], after: tuple[bool, bool]) -> str:
    """What the call did with the saved files: the index is saved only when large (IVF), the shared
    space's arrays (a few kB) at any size."""
    index = ("index loaded" if before[0] else "index built and saved") if after[0] else "exact index built (small: not saved)"
    if not after[1]:
        return index
    return index + (", space loaded" if before[1] else ", space fitted and saved")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--spaces", default="shared,latent", help="search spaces to time (shared is the default of search)")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"Python {platform.python_version()}", flush=True)
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory(prefix="search-cli-") as t:
            db = Path(t) / "archive.duckdb"
            t0 = time.perf_counter()
            build(db, n)
            print(f"  {n:,} items and {2 * n:,} latents stored in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            files = db.with_name(db.name + ".indexes")
            for space in args.spaces.split(","):
                shutil.rmtree(files, ignore_errors=True)  # each space starts from no saved files
                for call in range(1, args.calls + 1):
                    had = saved(files)
                    secs, found = cli_search(db, f"te{(call * 7919) % n:07d}", space)
                    how = describe(had, saved(files))
                    rows.append((n, space, call, how, secs, len(found), folder_mb(files)))
                    print(f"  {n:,} {space} call {call}: {secs:.2f} s", file=sys.stderr, flush=True)
    print("\n| stored latents | space | call | index | wall s (process start to exit) | results | index files MB |")
    print("|---|---|---|---|---|---|---|")
    for n, space, call, how, secs, k, mb in rows:
        print(f"| {n:,} | {space} | {call} | {how} | {secs:.2f} | {k} | {mb:.0f} |")
    for n, space in dict.fromkeys((r[0], r[1]) for r in rows):
        later = [r[4] for r in rows if r[0] == n and r[1] == space and r[2] > 1]
        if later:
            print(f"{n:,} {space}: later calls median {statistics.median(later):.2f} s")


if __name__ == "__main__":
    main()
