"""First paint of the Catalog, Tags and Search pages and a tag decision on a 10,000-item cluster, at
archive size, through ``streamlit.testing`` (AppTest: the page's script run, without a browser).

The store is synthetic (``testkit.data.synthetic_archive``), built through the store's own write path (``add_dataset``, ``add_model``,
``save_proposals``): N items in a train and a test split (10% test) with tiny features (the pages
never read features), 128-d latents (fused and image), and k = 100 proposals on train whose cluster 0
holds exactly 10,000 items. Targets: first paint <= 2 s, decision <= 1 s.

- first paint: a new AppTest session runs app.py, then the page; the page's run is timed (median of
  ``--visits``; the first visit of the process also pays imports and caches, so the max is shown too).
- decision: ``Store.accept`` of cluster 0 (10,000 items) timed in the store, and the Tags page's rerun
  after a click on Accept; undone afterwards.
- peak RSS of this process (``ru_maxrss``) at the end, building included.

Run: ``.venv/bin/python benchmarks/page_latency.py --items 100000`` (and ``--items 1000000``).
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mmae_core  # noqa: E402,F401  - sets OpenMP's wait policy first

from store import Store  # noqa: E402
from testkit.data import ARCHIVE, ARCHIVE_MODEL, synthetic_archive  # noqa: E402

DATASET, MODEL, K, BIG = ARCHIVE, ARCHIVE_MODEL, 100, 10_000
CURATOR = "page-latency-benchmark"


def build(db: Path, n: int) -> None:
    t = time.perf_counter()
    synthetic_archive(db, n, big=BIG, k=K)
    print(f"built {n:,} items in {time.perf_counter() - t:.0f} s", flush=True)


def visit(page: str, **state) -> tuple[float, object]:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    at.switch_page(f"pages/{page}.py")
    t = time.perf_counter()
    at.run()
    dt = time.perf_counter() - t
    if at.exception:
        raise SystemExit(f"{page}: {at.exception[0].message}")
    return dt, at


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--visits", type=int, default=3)
    ap.add_argument("--db", type=Path, help="reuse a store this script built before")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="page-latency-") as tmp:
        db = args.db or Path(tmp) / "studio.duckdb"
        if not db.exists():
            build(db, args.items)
        os.environ["MMAE_STUDIO_DB"] = str(db)
        os.environ["MMAE_STUDIO_DATA_ROOT"] = tmp
        print(f"\nFirst paint (s) at {args.items:,} items, {args.visits} visits; target <= 2 s")
        for page in ("catalog", "tags", "search"):
            ts = [visit(page, dataset=DATASET, model=MODEL)[0] for _ in range(args.visits)]
            print(f"  {page:<8} median {statistics.median(ts):6.2f}  max {max(ts):6.2f}  ({', '.join(f'{t:.2f}' for t in ts)})",
                  flush=True)
        store = Store(db)
        t = time.perf_counter()
        out = store.accept(DATASET, MODEL, 0, CURATOR)
        t_store = time.perf_counter() - t
        assert out["items"] == BIG, out
        store.undo(DATASET, CURATOR)
        _, at = visit("tags", dataset=DATASET, model=MODEL, curator=CURATOR)
        t = time.perf_counter()
        at.button(key="tags_accept").click().run()
        t_page = time.perf_counter() - t
        assert store.proposal_table(DATASET, MODEL).set_index("cluster").loc[0, "status"] == "accepted"
        store.undo(DATASET, CURATOR)
        print(f"\nTag decision on a {BIG:,}-item cluster; target <= 1 s\n  accept in the store {t_store:.3f} s; "
              f"click -> the Tags page rerun done {t_page:.3f} s")
    print(f"\npeak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2:.2f} GiB")


if __name__ == "__main__":
    main()
